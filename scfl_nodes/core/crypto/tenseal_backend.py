"""TenSEAL (Microsoft SEAL) BFV backend behind the same interface as the RLWE backend.

BFV with batching: N=4096 slots per ciphertext, plaintext modulus t prime = 1 mod 2N.
Robots hold the full context (with secret key); the cloud holds the context serialized
with ``save_secret_key=False`` and can only add. Public-key encryption, so unlike the
RLWE backend each ciphertext carries both polynomials (~49 KB per 4096 values).
"""

from __future__ import annotations

import struct

import numpy as np

from .errors import KeyMismatchError, TamperedError, TruncatedError
from .params import ParamSet


def _ts():
    import tenseal as ts  # heavy; imported on first use

    return ts


def new_context(params: ParamSet):
    ts = _ts()
    return ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=params.n,
        plain_modulus=params.plain_modulus,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )


def serialize_context(ctx, with_secret: bool) -> bytes:
    return ctx.serialize(save_public_key=True, save_secret_key=with_secret, save_galois_keys=False, save_relin_keys=False)


def load_context(raw: bytes):
    return _ts().context_from(raw)


def public_key_digest(ctx) -> bytes:
    """Serialization of the public part only; its hash is the key id."""
    return ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)


def _centered_mod(values: np.ndarray, t: int) -> np.ndarray:
    v = np.mod(values, t)
    v[v > t // 2] -= t
    return v


def encrypt(ctx, plain_mod_t: np.ndarray, params: ParamSet) -> list[bytes]:
    """Encrypt values mod t in chunks of N slots; one serialized BFV vector per chunk."""
    ts = _ts()
    values = _centered_mod(plain_mod_t.astype(np.int64), params.plain_modulus)
    out = []
    for start in range(0, max(values.size, 1), params.slots):
        chunk = values[start : start + params.slots]
        out.append(ts.bfv_vector(ctx, chunk.tolist()).serialize())
    return out


def pack_chunks(chunks: list[bytes]) -> bytes:
    parts = [struct.pack("<I", len(chunks))]
    for c in chunks:
        parts.append(struct.pack("<I", len(c)))
        parts.append(c)
    return b"".join(parts)


def unpack_chunks(raw: bytes) -> list[bytes]:
    try:
        (count,) = struct.unpack_from("<I", raw, 0)
        pos = 4
        chunks = []
        for _ in range(count):
            (length,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if pos + length > len(raw):
                raise TruncatedError("TenSEAL payload ends inside a ciphertext")
            chunks.append(bytes(raw[pos : pos + length]))  # SEAL takes bytes, not a memoryview
            pos += length
    except struct.error:
        raise TruncatedError("TenSEAL payload ends inside a length field") from None
    if pos != len(raw):
        raise TamperedError("TenSEAL payload has trailing bytes")
    return chunks


def load_vectors(ctx, chunks: list[bytes]):
    ts = _ts()
    try:
        return [ts.bfv_vector_from(ctx, c) for c in chunks]
    except Exception as exc:  # SEAL raises ValueError/RuntimeError for foreign or corrupt data
        raise KeyMismatchError(f"ciphertext does not load under this context ({exc})") from None


def add(acc: list | None, vectors: list) -> list:
    if acc is None:
        return vectors
    if len(acc) != len(vectors):
        raise TamperedError("ciphertext chunk counts differ")
    return [x + y for x, y in zip(acc, vectors)]


def add_plain(vectors: list, values_mod_t: np.ndarray, params: ParamSet) -> list:
    """Add public plaintext values (mod t) to encrypted vectors, chunk by chunk."""
    values = _centered_mod(values_mod_t.astype(np.int64), params.plain_modulus)
    out = []
    for i, v in enumerate(vectors):
        chunk = values[i * params.slots : (i + 1) * params.slots]  # the chunking of encrypt()
        out.append(v + chunk.tolist())
    return out


def decrypt(secret_ctx, vectors: list, num_values: int) -> np.ndarray:
    out = []
    for v in vectors:
        v.link_context(secret_ctx)
        out.append(np.asarray(v.decrypt(), dtype=np.int64))
    return np.concatenate(out)[:num_values]
