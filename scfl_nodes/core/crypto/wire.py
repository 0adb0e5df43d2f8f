"""The one binary container used for deltas, aggregates and key files.

Layout (little-endian)::

    magic (8 bytes) | format version u16 | header length u32 | header (canonical JSON)
    | payload length u64 | payload | SHA-256 of everything before (32 bytes) | [signature 64]

The digest makes accidental corruption (a flipped bit, a cut-off download) a
:class:`TamperedError` / :class:`TruncatedError` even without a key; the Ed25519
signature over that digest (deltas only) proves which robot produced the bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct

from .errors import TamperedError, TruncatedError, WrongParametersError

DIGEST_LEN = 32
SIGNATURE_LEN = 64

MAGIC_DELTA = b"SCFLDLT1"
MAGIC_AGGREGATE = b"SCFLAGG1"
MAGIC_FLEET_KEY = b"SCFLFSK1"
MAGIC_CLOUD_CONTEXT = b"SCFLCTX1"
KIND_BY_MAGIC = {
    MAGIC_DELTA: "encrypted delta",
    MAGIC_AGGREGATE: "encrypted aggregate",
    MAGIC_FLEET_KEY: "fleet secret key",
    MAGIC_CLOUD_CONTEXT: "cloud context",
}
#: Container format version written per kind (the u16 after the magic; deltas and
#: aggregates repeat it in their header). Deltas are at 2: the rlwe public polynomial ``a``
#: is expanded from the nonce with AES-128-CTR instead of format 1's SHAKE-128
#: (``rlwe.A_EXPANSIONS``). Aggregates, keys and contexts are unchanged at 1 (an aggregate
#: stores its sum of ``a`` in full, so it does not depend on the expansion).
FORMAT_VERSIONS = {MAGIC_DELTA: 2, MAGIC_AGGREGATE: 1, MAGIC_FLEET_KEY: 1, MAGIC_CLOUD_CONTEXT: 1}
#: Versions read per kind: format-1 deltas (stored skill versions, uploads of robots not
#: yet updated) stay readable and summable with format-2 ones.
READABLE_VERSIONS = {MAGIC_DELTA: (1, 2), MAGIC_AGGREGATE: (1,), MAGIC_FLEET_KEY: (1,), MAGIC_CLOUD_CONTEXT: (1,)}
_PRE = struct.Struct("<8sHI")
_PAYLOAD_LEN = struct.Struct("<Q")


#: Domain separation: an aggregate signature can never be mistaken for a delta signature.
AGGREGATE_SIGNATURE_DOMAIN = b"scfl aggregate signature v1\x00"
AGGREGATE_SIGNED_FIELDS = ("backend", "params_id", "key_id", "skill_id", "base_version", "round_id", "count")


def aggregate_statement(blob: bytes, header: dict) -> bytes:
    """The bytes the cloud signs (Ed25519) when it publishes an aggregate: the SHA-256 of
    the container plus, explicitly, the header fields a robot acts on (key id, skill, round,
    contributor count). Relabelling any of them, or any byte, breaks the signature."""
    fields = {k: header[k] for k in AGGREGATE_SIGNED_FIELDS}
    fields["sha256"] = hashlib.sha256(blob).hexdigest()
    return AGGREGATE_SIGNATURE_DOMAIN + canonical_json(fields)


def canonical_json(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def pack_prefix(magic: bytes, header: dict, payload: bytes, version: int | None = None) -> bytes:
    """Everything the digest covers: magic, version (default: the one this build writes),
    header and payload."""
    head = canonical_json(header)
    version = FORMAT_VERSIONS[magic] if version is None else version
    return b"".join([_PRE.pack(magic, version, len(head)), head, _PAYLOAD_LEN.pack(len(payload)), payload])


def pack(magic: bytes, header: dict, payload: bytes, version: int | None = None) -> tuple[bytes, bytes]:
    """Return (prefix, digest); callers append the digest (and a signature) themselves."""
    prefix = pack_prefix(magic, header, payload, version)
    return prefix, hashlib.sha256(prefix).digest()


class PrefixHasher:
    """SHA-256 of a whole container and of its digested prefix (all but the last
    ``trailer_len`` bytes: digest + signature) in ONE pass over chunks as they arrive,
    without knowing the total length in advance: the last ``trailer_len`` bytes seen are
    held back from the prefix hash until the end. The cloud names blobs by the first
    and checks the container's digest with the second (:func:`unpack` ``prefix_sha256``)."""

    def __init__(self, trailer_len: int) -> None:
        self.trailer_len = trailer_len
        self._prefix = hashlib.sha256()
        self._tail = b""

    def update(self, chunk: bytes) -> None:
        n = self.trailer_len
        if len(chunk) >= n:
            self._prefix.update(self._tail)
            view = memoryview(chunk)
            self._prefix.update(view[: len(chunk) - n])
            self._tail = bytes(view[len(chunk) - n :])
        else:
            data = self._tail + chunk
            self._prefix.update(data[: max(0, len(data) - n)])
            self._tail = data[max(0, len(data) - n) :]

    def digests(self) -> tuple[bytes, bytes]:
        """(SHA-256 of everything, SHA-256 of everything but the last ``trailer_len`` bytes);
        with fewer bytes than that the second is of nothing (:func:`unpack` refuses such a
        short container before it compares digests)."""
        whole = self._prefix.copy()
        whole.update(self._tail)
        return whole.digest(), self._prefix.digest()


def stated_digest(blob, trailer_len: int = 0) -> bytes:
    """The digest a container states for itself (the DIGEST_LEN bytes before its trailer), not
    checked: for a caller that verifies the whole container by other means (the cloud's fold
    compares a stored blob's SHA-256 with its content address) and hands this to
    :func:`unpack` as ``prefix_sha256`` instead of hashing again. Empty if ``blob`` is too short."""
    end = len(blob) - trailer_len
    return bytes(blob[end - DIGEST_LEN : end]) if end >= DIGEST_LEN else b""


def container_version(blob: bytes) -> int:
    """The format version u16 of a container (call after :func:`unpack` accepted it)."""
    return _PRE.unpack_from(blob, 0)[1]


def unpack(blob: bytes, magic: bytes, trailer_len: int = 0,
           prefix_sha256: bytes | None = None, payload_view: bool = False) -> tuple[dict, bytes, bytes, bytes]:
    """Parse and integrity-check a container; returns (header, payload, digest, trailer).

    ``payload_view``: the payload is a read-only ``memoryview`` into ``blob`` instead of a
    copy (the cloud: a 3 MB copy into fresh memory cost ~1-2 ms of CPU per upload).

    ``prefix_sha256``: the SHA-256 of ``blob[:len(blob) - DIGEST_LEN - trailer_len]`` that
    the caller already computed while the bytes streamed in (:class:`PrefixHasher`); it
    is compared with the stored digest instead of hashing the bytes a second time."""
    # a memoryview (the cloud's reused read buffer) is parsed in place; anything else becomes bytes
    blob = blob if isinstance(blob, (bytes, memoryview)) else bytes(blob)
    what = KIND_BY_MAGIC[magic]
    if len(blob) < _PRE.size:
        raise TruncatedError(f"{what}: only {len(blob)} bytes, shorter than the fixed header")
    got_magic, version, head_len = _PRE.unpack_from(blob, 0)
    if got_magic != magic:
        other = KIND_BY_MAGIC.get(got_magic)
        raise TamperedError(f"not a valid {what}" + (f" (got: {other})" if other else " (bad magic bytes)"))
    if version not in READABLE_VERSIONS[magic]:
        readable = ", ".join(map(str, READABLE_VERSIONS[magic]))
        raise WrongParametersError(f"{what}: unsupported format version {version} (this build reads {readable}); "
                                   "is it from a newer scfl?")
    pos = _PRE.size
    if len(blob) < pos + head_len + _PAYLOAD_LEN.size:
        raise TruncatedError(f"{what}: bytes end inside the header ({len(blob)} bytes)")
    head = bytes(blob[pos : pos + head_len])
    pos += head_len
    (payload_len,) = _PAYLOAD_LEN.unpack_from(blob, pos)
    pos += _PAYLOAD_LEN.size
    end = pos + payload_len
    expected_total = end + DIGEST_LEN + trailer_len
    if len(blob) < expected_total:
        raise TruncatedError(f"{what}: {len(blob)} bytes, header declares {expected_total}")
    if len(blob) > expected_total:
        raise TamperedError(f"{what}: {len(blob) - expected_total} unexpected trailing bytes")
    digest = bytes(blob[end : end + DIGEST_LEN])
    # end == len(blob) - DIGEST_LEN - trailer_len here (the length checks above), so a
    # caller's prefix_sha256 covers exactly the bytes the stored digest covers
    actual = prefix_sha256 if prefix_sha256 is not None else hashlib.sha256(memoryview(blob)[:end]).digest()
    if actual != digest:  # memoryview: no 3 MB slice copy
        raise TamperedError(f"{what}: SHA-256 digest mismatch (bytes were modified or corrupted)")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TamperedError(f"{what}: header is not valid JSON") from None
    if not isinstance(header, dict):
        raise TamperedError(f"{what}: header is not a JSON object")
    payload = memoryview(blob)[pos:end] if payload_view else bytes(blob[pos:end])
    return header, payload, digest, bytes(blob[end + DIGEST_LEN :])
