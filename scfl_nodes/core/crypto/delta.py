"""Encrypted deltas (one robot's signed upload) and encrypted aggregates (the cloud's sum)."""

from __future__ import annotations

import math
from typing import Any


from . import rlwe, tenseal_backend
from .errors import (
    TensorOrderError,
    KeyMismatchError,
    ReplayError,
    RoundMismatchError,
    SignatureError,
    TamperedError,
    WrongBackendError,
    WrongParametersError,
)
from .params import get_params
from .wire import (
    DIGEST_LEN,
    FORMAT_VERSIONS,
    MAGIC_AGGREGATE,
    MAGIC_DELTA,
    SIGNATURE_LEN,
    aggregate_statement,
    container_version,
    canonical_json,
    pack,
    pack_prefix,
    unpack,
)

#: Header integers are stored in 32-bit database columns by the cloud; anything larger
#: (or negative) is malformed, refused at parse time instead of overflowing later.
MAX_HEADER_INT = 2**31 - 1
#: Largest plaintext weight a robot may apply (EDA weights are <= 1): keeps every sum of
#: weights finite (a 1e308 weight made ``math.fsum`` overflow in the aggregator).
MAX_WEIGHT = 1e6
NONCE_HEX_LEN = 32  # 16-byte seed
_HEX = frozenset("0123456789abcdef")

_DELTA_FIELDS = (
    "version",
    "backend",
    "params_id",
    "key_id",
    "skill_id",
    "base_version",
    "round_id",
    "robot_id",
    "shapes",
    "num_values",
    "nonce",
    "clip",
    "num_clients",
    "weight",
    "mask_cohort",
)


_HEADER_TYPES = {
    "version": int,
    "backend": str,
    "params_id": str,
    "key_id": str,
    "skill_id": str,
    "base_version": int,
    "round_id": int,
    "robot_id": str,
    "num_values": int,
    "nonce": str,
    "clip": (int, float),
    "num_clients": int,
    "weight": (int, float),
}


def _check_header(header: dict, fields: tuple[str, ...], what: str, version: int) -> None:
    """Presence and types of header fields: a signed but malformed header (a buggy or
    malicious robot) must fail here with TamperedError, not deep inside the cloud."""
    missing = [f for f in fields if f not in header]
    if missing:
        raise TamperedError(f"{what}: header lacks field(s) {', '.join(missing)}")
    for field, kind in _HEADER_TYPES.items():
        value = header.get(field)
        if field in fields and (not isinstance(value, kind) or isinstance(value, bool)):
            raise TamperedError(f"{what}: header field {field!r} has the wrong type ({type(value).__name__})")
    for field in ("clip", "weight"):
        if field in fields and not (math.isfinite(header[field]) and header[field] >= 0):
            raise TamperedError(f"{what}: header field {field!r} must be a finite number >= 0")
    if "weight" in fields and header["weight"] > MAX_WEIGHT:
        raise TamperedError(f"{what}: header field 'weight' must be <= {MAX_WEIGHT:g}")
    if header["version"] != version:
        raise WrongParametersError(f"{what}: header version {header['version']} is not {version}")
    for field, low in (("base_version", 0), ("round_id", 0), ("num_values", 1), ("num_clients", 1)):
        if field in fields and not low <= header[field] <= MAX_HEADER_INT:
            raise TamperedError(f"{what}: header field {field!r} must be in [{low}, {MAX_HEADER_INT}]")
    if "nonce" in fields and (len(header["nonce"]) != NONCE_HEX_LEN or not set(header["nonce"]) <= _HEX):
        raise TamperedError(f"{what}: nonce must be {NONCE_HEX_LEN} lowercase hex characters (16 bytes)")
    scheme = header.get("mask_scheme")
    if scheme is not None and (scheme != "secagg" or header.get("mask_cohort") is None):
        raise TamperedError(f"{what}: mask_scheme must be 'secagg' on a masked header")
    cohort = header.get("mask_cohort")
    if cohort is not None and not (isinstance(cohort, list) and all(isinstance(r, str) for r in cohort)):
        raise TamperedError(f"{what}: mask_cohort must be null or a list of robot ids")
    if cohort is not None and len(set(cohort)) != len(cohort):
        raise TamperedError(f"{what}: mask_cohort lists a robot twice")
    if not isinstance(header.get("shapes"), list):
        raise TamperedError(f"{what}: shapes must be a list of [name, shape] pairs")
    try:
        shapes = header["shapes"]
        if not all(isinstance(n, str) and isinstance(shape, list) and len(shape) <= 8
                   and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_HEADER_INT for d in shape)
                   for n, shape in shapes):
            raise ValueError("bad shape entry")
        total = sum(math.prod(shape) for _, shape in shapes)
    except (TypeError, ValueError):
        raise TamperedError(f"{what}: malformed tensor shapes in header") from None
    if total != header["num_values"]:
        raise TamperedError(f"{what}: shapes hold {total} values, header says {header['num_values']}")


def check_canonical_shapes(shapes: list) -> None:
    """Tensor order is canonical (sorted by name, names unique), so two honest robots
    whose tensor dicts differ only in key order produce summable ciphertexts."""
    names = [name for name, _shape in shapes]
    if names != sorted(set(names)):
        raise TensorOrderError("tensor names must be unique and sorted (canonical order); "
                                 "encrypt with this build's encrypt_delta, which sorts them")


class _RoundHeaderView:
    """Read-only accessors for the round fields both ciphertext containers carry in ``header``."""

    header: dict

    backend = property(lambda self: self.header["backend"])
    params_id = property(lambda self: self.header["params_id"])
    key_id = property(lambda self: self.header["key_id"])
    skill_id = property(lambda self: self.header["skill_id"])
    base_version = property(lambda self: self.header["base_version"])
    round_id = property(lambda self: self.header["round_id"])

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(shape) for name, shape in self.header["shapes"]}


class EncryptedDelta(_RoundHeaderView):
    """One robot's encrypted, signed skill delta for one round.

    ``header`` (a dict) is public metadata: format version, backend, params_id, key_id,
    skill_id, base_version, round_id, robot_id, shapes ([name, shape] pairs in order),
    num_values, nonce (the hex seed of ``a`` for rlwe), clip, num_clients, weight (the
    plaintext weight the robot applied before encryption) and mask_cohort (robots
    whose pairwise masks are in the values, or None).
    """

    def __init__(self, header: dict, payload: bytes, digest: bytes, signature: bytes):
        self.header = header
        self.payload = payload
        self.digest = digest
        self.signature = signature
        self._digested = (canonical_json(header), payload)  # what ``digest`` was computed over

    robot_id = property(lambda self: self.header["robot_id"])
    nonce = property(lambda self: self.header["nonce"])

    def to_bytes(self) -> bytes:
        """Serialize with the digest computed at signing time: a header edited after
        signing makes the bytes fail :meth:`from_bytes` (TamperedError)."""
        version = self.header["version"]  # a format-1 delta stays format 1
        return pack_prefix(MAGIC_DELTA, self.header, self.payload, version) + self.digest + self.signature

    @classmethod
    def from_bytes(cls, blob: bytes, prefix_sha256: bytes | None = None, payload_view: bool = False) -> EncryptedDelta:
        """Parse and integrity-check (digest); call :meth:`verify` for the signature.
        ``prefix_sha256``: the SHA-256 of ``blob[:-96]`` already computed while it streamed
        in (``wire.PrefixHasher``), checked against the stored digest instead of re-hashing.
        ``payload_view``: ``payload`` is a memoryview into ``blob`` (no copy; see ``wire.unpack``)."""
        header, payload, digest, signature = unpack(blob, MAGIC_DELTA, SIGNATURE_LEN, prefix_sha256, payload_view)
        _check_header(header, _DELTA_FIELDS, "encrypted delta", container_version(blob))
        return cls(header, payload, digest, signature)

    def verify(self, public_key_bytes: bytes) -> None:
        """Raise :class:`SignatureError` unless the robot's Ed25519 key signed this digest."""
        from .signing import verify_signature

        head, payload = self._digested
        if payload is not self.payload or canonical_json(self.header) != head:
            _prefix, digest = pack(MAGIC_DELTA, self.header, self.payload, self.header["version"])
            if digest != self.digest:
                raise TamperedError("encrypted delta: header or payload changed after signing/parsing")
        verify_signature(public_key_bytes, self.digest, self.signature)

    def __len__(self) -> int:
        return len(self.payload)

    def __repr__(self) -> str:
        h = self.header
        return (
            f"EncryptedDelta(skill={h['skill_id']!r} v{h['base_version']} round={h['round_id']} "
            f"robot={h['robot_id']!r} backend={h['backend']} values={h['num_values']})"
        )


def check_expected(
    item: EncryptedDelta | EncryptedAggregate,
    *,
    context: Any = None,
    backend: str | None = None,
    params_id: str | None = None,
    key_id: str | None = None,
    skill_id: str | None = None,
    base_version: int | None = None,
    round_id: int | None = None,
    shapes: dict | list | None = None,
) -> None:
    """Check a delta/aggregate header against what the receiver expects.

    ``context`` (a CloudContext or FleetSecretKey) supplies backend/params/key id.
    Raises WrongBackendError, WrongParametersError, KeyMismatchError, ReplayError (an
    older round) or RoundMismatchError (another skill, version, future round, shapes).
    """
    h = item.header
    if context is not None:
        backend = backend or context.backend
        params_id = params_id or context.params_id
        key_id = key_id or context.key_id
    if backend is not None and h["backend"] != backend:
        raise WrongBackendError(f"ciphertext is from backend {h['backend']!r}, expected {backend!r}")
    if params_id is not None and h["params_id"] != params_id:
        raise WrongParametersError(f"ciphertext uses parameter set {h['params_id']!r}, expected {params_id!r}")
    if key_id is not None and h["key_id"] != key_id:
        raise KeyMismatchError(f"ciphertext was made under fleet key {h['key_id']}, expected key {key_id}")
    if skill_id is not None and h["skill_id"] != skill_id:
        raise RoundMismatchError(f"ciphertext is for skill {h['skill_id']!r}, expected {skill_id!r}")
    if base_version is not None and h["base_version"] != base_version:
        raise RoundMismatchError(f"ciphertext is based on version {h['base_version']}, expected {base_version}")
    if round_id is not None and h["round_id"] != round_id:
        if h["round_id"] < round_id:
            raise ReplayError(f"ciphertext belongs to old round {h['round_id']} (current round {round_id}): replay")
        raise RoundMismatchError(f"ciphertext belongs to round {h['round_id']}, expected round {round_id}")
    if shapes is not None:
        expected = [[n, list(s)] for n, s in (shapes.items() if isinstance(shapes, dict) else shapes)]
        if [[n, list(s)] for n, s in h["shapes"]] != expected:
            raise RoundMismatchError("ciphertext tensor names/shapes differ from the skill's")


class EncryptedAggregate(_RoundHeaderView):
    """The cloud's running encrypted sum of one round. ``count`` uploads so far.

    Holds backend state: for rlwe the sums of ``a`` and ``b`` (uint64 arrays mod q), for
    tenseal the summed BFV vectors (serialized until a context loads them).
    """

    def __init__(self, header: dict, state: Any):
        self.header = header
        self._state = state  # rlwe: rlwe.RlweSum; tenseal: list[bytes] or list[BFVVector]

    count = property(lambda self: self.header["count"])
    robot_ids = property(lambda self: list(self.header["robot_ids"]))
    total_weight = property(lambda self: self.header["total_weight"])

    def _payload(self) -> bytes:
        if self.header["backend"] == "rlwe":
            return self._state.to_bytes()
        chunks = [c if isinstance(c, bytes) else c.serialize() for c in self._state]
        return tenseal_backend.pack_chunks(chunks)

    def to_bytes(self) -> bytes:
        prefix, digest = pack(MAGIC_AGGREGATE, self.header, self._payload())
        return prefix + digest

    @classmethod
    def from_bytes(cls, blob: bytes) -> EncryptedAggregate:
        header, payload, _digest, _ = unpack(blob, MAGIC_AGGREGATE, 0)
        _check_header(
            header,
            ("version", "backend", "params_id", "key_id", "skill_id", "base_version", "round_id", "shapes", "num_values"),
            "encrypted aggregate",
            FORMAT_VERSIONS[MAGIC_AGGREGATE],
        )
        for field, kind in (("count", int), ("robot_ids", list), ("nonces", list), ("weights", list),
                            ("total_weight", (int, float)), ("bound_sum", int)):
            if not isinstance(header.get(field), kind) or isinstance(header.get(field), bool):
                raise TamperedError(f"encrypted aggregate: header field {field!r} missing or of the wrong type")
        if header["backend"] == "rlwe":
            params = get_params(header["params_id"], "rlwe")
            count = rlwe.num_polys(header["num_values"], params) * params.n
            if len(payload) != 2 * count * 6:
                raise TamperedError("encrypted aggregate: payload size does not match its shapes")
            a_sum = rlwe.unpack_coeffs(payload[: count * 6], count).reshape(-1, params.n)
            b_sum = rlwe.unpack_coeffs(payload[count * 6 :], count).reshape(-1, params.n)
            return cls(header, rlwe.RlweSum.from_sums(params, a_sum, b_sum))
        if header["backend"] == "tenseal":
            return cls(header, tenseal_backend.unpack_chunks(payload))
        raise WrongBackendError(f"encrypted aggregate: unknown backend {header['backend']!r}")

    def __repr__(self) -> str:
        h = self.header
        return f"EncryptedAggregate(skill={h['skill_id']!r} round={h['round_id']} count={h['count']} backend={h['backend']})"


def sign_aggregate(blob: bytes, signing_key: Any) -> bytes:
    """The cloud's Ed25519 signature over a published aggregate (see ``wire.aggregate_statement``)."""
    agg = EncryptedAggregate.from_bytes(blob)
    return signing_key.sign(aggregate_statement(blob, agg.header))


def verify_aggregate(
    blob: bytes,
    signature: bytes,
    cloud_public_key: bytes,
    *,
    key_id: str | None = None,
    skill_id: str | None = None,
    round_id: int | None = None,
    min_contributors: int | None = None,
) -> EncryptedAggregate:
    """Robot side, before decrypting: parse the aggregate, check the cloud's signature over
    its bytes and header (key id, skill, round, count), then the expected values.

    Raises SignatureError (missing/forged signature, relabelled header), KeyMismatchError
    / RoundMismatchError / ReplayError (not the aggregate asked for), or
    RoundMismatchError if it sums fewer than ``min_contributors`` uploads.
    """
    from .signing import verify_signature

    agg = EncryptedAggregate.from_bytes(blob)
    if not signature or len(signature) != SIGNATURE_LEN:
        raise SignatureError("aggregate has no valid cloud signature (expected 64 bytes of Ed25519)")
    verify_signature(cloud_public_key, aggregate_statement(blob, agg.header), signature)
    check_expected(agg, key_id=key_id, skill_id=skill_id, round_id=round_id)
    if min_contributors is not None and agg.count < min_contributors:
        raise RoundMismatchError(f"aggregate sums {agg.count} upload(s), fewer than the required {min_contributors}")
    return agg


__all__ = ["EncryptedDelta", "sign_aggregate", "verify_aggregate", "EncryptedAggregate", "check_expected", "check_canonical_shapes", "SignatureError",
           "DIGEST_LEN"]
