"""The only place the cloud touches ``scfl_nodes.core.crypto`` (ISSUE 3).

The cloud parses headers, verifies Ed25519 signatures and adds ciphertexts with a
:class:`CloudContext` that holds no secret key. Keeping every call here means the rest
of the service sees plain values and one exception type (:class:`DeltaRejected`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any


class DeltaRejected(ValueError):
    """An upload or context failed a crypto check; ``code`` becomes the JSON error code."""

    def __init__(self, code: str, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


@dataclasses.dataclass(frozen=True)
class DeltaHeader:
    backend: str
    params_id: str
    key_id: str
    skill_id: str
    base_version: int
    round_id: int
    robot_id: str


@functools.lru_cache(maxsize=1)
def _crypto():
    from scfl_nodes.core import crypto

    return crypto


def _code_for(exc: Exception) -> str:
    name = type(exc).__name__
    return {
        "SignatureError": "bad_signature",
        "TamperedError": "tampered",
        "TruncatedError": "truncated",
        "WrongBackendError": "wrong_backend",
        "WrongParametersError": "wrong_parameters",
        "KeyMismatchError": "wrong_key_id",
        "ReplayError": "replay",
        "NonceReuseError": "nonce_reused",
        "TensorOrderError": "noncanonical_tensor_order",
        "MaskCohortError": "mask_cohort_mismatch",
        "RoundMismatchError": "wrong_round",
        "OverflowRiskError": "overflow_risk",
        "InsecureParametersError": "insecure_parameters",
        "InvalidDeltaError": "invalid_ciphertext",
        "KeyFileError": "invalid_context",
    }.get(name, "invalid_ciphertext")


def parse_delta(blob: bytes, prefix_sha256: bytes | None = None) -> Any:
    """Decode an ``EncryptedDelta``; malformed bytes become a 422 with a specific code.
    ``prefix_sha256``: its digested prefix's SHA-256, hashed as the upload streamed in
    (:func:`upload_hasher`), so the container's digest check does not hash 3 MB again.
    The payload stays a view into ``blob`` (bytes, immutable): never copied."""
    crypto = _crypto()
    try:
        return crypto.EncryptedDelta.from_bytes(blob, prefix_sha256, payload_view=True)
    except crypto.CryptoError as exc:
        raise DeltaRejected(_code_for(exc), f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # garbage that is not even a header
        raise DeltaRejected("invalid_ciphertext", f"not an scfl encrypted delta ({type(exc).__name__}: {exc})") from None


def parse_stored_delta(blob) -> Any:
    """Decode a delta read back from the blob store whose whole-blob SHA-256 the caller checks
    against its content address (the blob's name, recorded when the upload passed its digest and
    signature checks): identical bytes imply both checks still hold, so the container's own
    digest is taken as stated here instead of being recomputed (one hash pass per fold, not two)."""
    from scfl_nodes.core.crypto import wire

    return parse_delta(blob, wire.stated_digest(blob, wire.SIGNATURE_LEN))


def upload_hasher() -> Any:
    """One-pass hasher for an uploaded delta: ``digests()`` gives (SHA-256 of the body = its
    blob-store name, SHA-256 of the prefix the delta's own digest covers)."""
    from scfl_nodes.core.crypto import wire

    return wire.PrefixHasher(wire.DIGEST_LEN + wire.SIGNATURE_LEN)


def header_of(delta: Any) -> DeltaHeader:
    h = delta.header
    get = (lambda k: h[k]) if isinstance(h, dict) else (lambda k: getattr(h, k))
    return DeltaHeader(
        backend=str(get("backend")),
        params_id=str(get("params_id")),
        key_id=str(get("key_id")),
        skill_id=str(get("skill_id")),
        base_version=int(get("base_version")),
        round_id=int(get("round_id")),
        robot_id=str(get("robot_id")),
    )


def verify_signature(delta: Any, public_key: bytes) -> None:
    crypto = _crypto()
    try:
        ok = delta.verify(public_key)
    except crypto.CryptoError as exc:
        raise DeltaRejected(_code_for(exc), f"signature check failed: {exc}", status=401 if _code_for(exc) == "bad_signature" else 422) from None
    if ok is False:
        raise DeltaRejected("bad_signature", "signature does not match the robot's registered Ed25519 key", status=401)


def load_context(blob: bytes) -> Any:
    """Load a fleet's public context; refuse anything that carries secret key material."""
    crypto = _crypto()
    from scfl_nodes.core.crypto.wire import MAGIC_FLEET_KEY

    if blob.startswith(MAGIC_FLEET_KEY):  # a FleetSecretKey container: never accept, never store
        raise DeltaRejected("secret_key_refused",
                            "this is a fleet SECRET key; upload only its cloud_context() (no secret)", 400)
    try:
        ctx = crypto.CloudContext.from_bytes(blob)  # refuses a TenSEAL context holding a secret key
    except crypto.CryptoError as exc:
        code = _code_for(exc)
        if "secret" in str(exc).lower():
            raise DeltaRejected("secret_key_refused", str(exc), 400) from None
        raise DeltaRejected(code if code != "invalid_ciphertext" else "invalid_context",
                            f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise DeltaRejected("invalid_context", f"not an scfl cloud context ({type(exc).__name__}: {exc})") from None
    return ctx


def _rejected(exc: Exception) -> DeltaRejected:
    code = _code_for(exc)
    return DeltaRejected(code, f"{type(exc).__name__}: {exc}", status=409 if code in ("replay", "nonce_reused") else 422)


def check_delta(ctx: Any, delta: Any) -> int:
    """The aggregator's own per-delta checks (``CloudContext.check_delta``), run at upload;
    returns the delta's quantized bound (kept with the delta for :func:`check_joinable`)."""
    crypto = _crypto()
    try:
        return int(ctx.check_delta(delta))
    except crypto.CryptoError as exc:
        raise _rejected(exc) from None


def check_joinable(ctx: Any, summary: dict, delta: Any, bound: int) -> None:
    """The aggregator's own cross-delta checks (``CloudContext.check_joinable``) against the
    round as recorded in the database, run at upload under the write lock."""
    crypto = _crypto()
    try:
        ctx.check_joinable(summary, delta, bound)
    except crypto.CryptoError as exc:
        raise _rejected(exc) from None


def check_round_capacity(ctx: Any, delta: Any, quorum: int) -> None:
    """Refuse a delta whose clip would let ``quorum`` uploads overflow the plaintext modulus."""
    crypto = _crypto()
    try:
        ctx.check_round(int(quorum), float(delta.header["clip"]))
    except crypto.CryptoError as exc:
        raise DeltaRejected(_code_for(exc), f"{type(exc).__name__}: {exc}") from None


def context_identity(ctx: Any) -> tuple[str, str, str]:
    return str(ctx.key_id), str(ctx.backend), str(ctx.params_id)


def add(ctx: Any, aggregate: Any, delta: Any) -> Any:
    """Homomorphic running sum (never decrypts)."""
    return ctx.add(aggregate, delta)


def sign_aggregate(blob: bytes, signing_key: Any) -> bytes:
    """The cloud's Ed25519 signature over a published aggregate (robots verify it)."""
    return _crypto().sign_aggregate(blob, signing_key)


def aggregate_to_bytes(agg: Any) -> bytes:
    return agg.to_bytes()


def aggregate_from_bytes(ctx: Any, blob: bytes) -> Any:
    crypto = _crypto()
    return crypto.EncryptedAggregate.from_bytes(blob)
