"""Fleet keys (robot side), cloud contexts (cloud side) and the encrypt/add/decrypt path.

The fleet secret key is shared by the robots of one fleet and never leaves them; the
cloud gets a :class:`CloudContext` that names the backend, parameter set and key id and,
for TenSEAL, holds the public context serialized without the secret key. Every
operation checks the key id, so ciphertexts of two fleets can never be mixed.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import rlwe, tenseal_backend
from .delta import MAX_WEIGHT, EncryptedAggregate, EncryptedDelta, check_canonical_shapes, check_expected
from .errors import (
    CryptoError,
    MaskCohortError,
    NonceReuseError,
    InvalidDeltaError,
    KeyFileError,
    KeyMismatchError,
    OverflowRiskError,
    ReplayError,
    RoundMismatchError,
    TamperedError,
    TruncatedError,
    WrongBackendError,
)
from .params import ParamSet, check_overflow, check_security, get_params, quantized_bound
from .rng import RandomSource
from .signing import RobotSigningKey, read_secret_file, write_secret_file
from .wire import FORMAT_VERSIONS, MAGIC_AGGREGATE, MAGIC_CLOUD_CONTEXT, MAGIC_DELTA, MAGIC_FLEET_KEY, SIGNATURE_LEN, pack, unpack


class IncompleteMaskError(CryptoError):
    """A masked round is missing cohort members, so their pairwise masks do not cancel."""


#: "secagg": self + pairwise masks with dropout recovery; the cloud must unmask the sum
#: (CloudContext.add_plaintext) before robots can decrypt it.
MASK_SCHEMES = ("secagg",)


def quantize(tensors: dict[str, np.ndarray], clip: float, scale: int) -> np.ndarray:
    """Flatten in canonical order (sorted tensor names), clip to [-clip, clip] and round to
    integers of ``scale`` (int64)."""
    if not tensors:
        raise InvalidDeltaError("delta has no tensors")
    flat = np.concatenate([np.ravel(np.asarray(tensors[k])) for k in sorted(tensors)]).astype(np.float64)
    if not np.isfinite(flat).all():
        bad = [k for k, v in tensors.items() if not np.all(np.isfinite(np.asarray(v, dtype=np.float64)))]
        raise InvalidDeltaError(f"tensor(s) {', '.join(map(repr, bad))} contain NaN or inf")
    np.clip(flat, -clip, clip, out=flat)
    flat *= scale
    np.rint(flat, out=flat)
    return flat.astype(np.int64)


def dequantize(values: np.ndarray, shapes: list, scale: int) -> dict[str, np.ndarray]:
    out, pos = {}, 0
    for name, shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = (values[pos : pos + size].astype(np.float64) / scale).reshape(shape)
        pos += size
    return out


def _key_container(magic: bytes, header: dict, payload: bytes) -> bytes:
    prefix, digest = pack(magic, header, payload)
    return prefix + digest


def _open_key_container(blob: bytes, magic: bytes) -> tuple[dict, bytes]:
    try:
        header, payload, _, _ = unpack(blob, magic, 0)
    except (TamperedError, TruncatedError) as exc:
        raise KeyFileError(str(exc)) from None
    return header, payload


class CloudContext:
    """What the cloud holds: parameters and key id, plus the TenSEAL public context. No secret."""

    def __init__(self, params: ParamSet, key_id: str, public_blob: bytes = b"", insecure_for_testing: bool = False):
        check_security(params, insecure_for_testing)
        self.params = params
        self.key_id = key_id
        self.insecure_for_testing = insecure_for_testing
        self._public_blob = public_blob
        self._ts_ctx = None
        if params.backend == "tenseal":
            self._tenseal_context()  # refuse, at load time, a context that holds a secret key

    backend = property(lambda self: self.params.backend)
    params_id = property(lambda self: self.params.params_id)

    def _tenseal_context(self):
        if self._ts_ctx is None:
            try:
                ctx = tenseal_backend.load_context(self._public_blob)
            except Exception as exc:  # SEAL's own parse errors
                raise KeyFileError(f"cloud context: not a TenSEAL context ({exc})") from None
            if ctx.has_secret_key():
                raise KeyFileError("cloud context holds a secret key; the cloud must only get cloud_context()")
            self._ts_ctx = ctx
        return self._ts_ctx

    # -- (de)serialization -------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = {
            "kind": "cloud-context",
            "backend": self.backend,
            "params_id": self.params_id,
            "key_id": self.key_id,
            "insecure_for_testing": self.insecure_for_testing,
        }
        return _key_container(MAGIC_CLOUD_CONTEXT, header, self._public_blob)

    @classmethod
    def from_bytes(cls, blob: bytes, insecure_for_testing: bool = False) -> CloudContext:
        header, payload = _open_key_container(blob, MAGIC_CLOUD_CONTEXT)
        params = get_params(header["params_id"], header["backend"])
        flagged = bool(header.get("insecure_for_testing")) and insecure_for_testing
        return cls(params, header["key_id"], payload, insecure_for_testing=flagged)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        return write_secret_file(path, self.to_bytes(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, insecure_for_testing: bool = False) -> CloudContext:
        return cls.from_bytes(read_secret_file(path), insecure_for_testing)

    # -- the cloud's only operation ------------------------------------------------
    def check_round(self, num_clients: int, clip: float) -> int:
        """Refuse to open a round whose worst-case sum could overflow; returns the bound."""
        return check_overflow(self.params, clip, num_clients)

    def check_delta(self, delta: EncryptedDelta) -> int:
        """Every check :meth:`add` makes on one delta by itself; returns its quantized bound.

        The cloud runs this (and :meth:`check_joinable`) at upload, before it answers 201,
        so a delta it accepted cannot fail in the aggregator on anything checkable.
        """
        return self._checked(delta)[0]

    def _checked(self, delta: EncryptedDelta) -> tuple[int, Any]:
        """(bound, backend state ready to add): rlwe (seed, polys, expansion); tenseal the loaded vectors."""
        check_expected(delta, context=self)
        h = delta.header
        check_canonical_shapes(h["shapes"])
        cohort = h["mask_cohort"]
        if cohort is not None and (h["robot_id"] not in cohort or len(cohort) < 2):
            raise MaskCohortError("mask_cohort must list at least two robots including the uploader")
        params = self.params
        bound = quantized_bound(float(h["clip"]), params.scale)
        if bound > params.max_abs_sum:
            raise OverflowRiskError(f"a single upload with clip {h['clip']} already exceeds t/2 = {params.max_abs_sum}")
        if params.backend == "rlwe":
            return bound, self._rlwe_check(delta)
        try:
            vectors = tenseal_backend.load_vectors(self._tenseal_context(), self._tenseal_chunks(delta))
        except CryptoError:
            raise
        except Exception as exc:  # SEAL refuses bytes that are not its ciphertexts
            raise TamperedError(f"encrypted delta: payload is not a BFV ciphertext ({type(exc).__name__})") from None
        return bound, vectors

    def check_joinable(self, summary: dict, delta: EncryptedDelta, bound: int) -> None:
        """Every check :meth:`add` makes of ``delta`` against a round's running sum.

        ``summary`` is an aggregate header (or the cloud's record of a round in the same
        shape): skill_id, base_version, round_id, shapes, robot_ids, nonces, mask_cohort,
        count, bound_sum. ``bound`` comes from :meth:`check_delta`.
        """
        h = delta.header
        params = self.params
        check_expected(delta, skill_id=summary["skill_id"], base_version=summary["base_version"],
                       round_id=summary["round_id"], shapes=summary["shapes"])
        if h["robot_id"] in summary["robot_ids"]:
            raise ReplayError(f"robot {h['robot_id']!r} already contributed to round {summary['round_id']}")
        if h["nonce"] in summary["nonces"]:
            raise NonceReuseError(f"ciphertext nonce {h['nonce']} was already added: replay")
        if (h["mask_cohort"] is None) != (summary["mask_cohort"] is None) or (
            h["mask_cohort"] is not None and sorted(h["mask_cohort"]) != sorted(summary["mask_cohort"])
        ):
            raise MaskCohortError("masked and unmasked (or differently masked) uploads cannot be mixed")
        if summary.get("mask_scheme", h.get("mask_scheme")) != h.get("mask_scheme"):  # cloud records omit it
            raise MaskCohortError("uploads of different mask schemes cannot be mixed")
        if summary.get("unmasked"):
            raise RoundMismatchError("the aggregate was already unmasked; no more uploads can join it")
        if summary["count"] + 1 > params.max_noise_clients:
            raise OverflowRiskError(f"round already holds {summary['count']} uploads, the noise budget of {params.params_id!r}")
        if summary["bound_sum"] + bound > params.max_abs_sum:
            raise OverflowRiskError(
                f"adding robot {h['robot_id']!r} would make the worst-case sum {summary['bound_sum'] + bound} exceed "
                f"t/2 = {params.max_abs_sum}; the round holds at most {summary['count']} uploads at this clip"
            )

    def add(self, aggregate: EncryptedAggregate | None, delta: EncryptedDelta) -> EncryptedAggregate:
        """Homomorphically add ``delta`` to ``aggregate`` (None starts a new sum).

        Updates ``aggregate`` in place and returns it. Never decrypts. Checks are exactly
        :meth:`check_delta` + :meth:`check_joinable` (key id, backend, parameters, canonical
        tensor order, round/skill/shape consistency, replays, the overflow bound).
        Signature verification is the caller's job (``delta.verify(public_key)``) or use
        :meth:`verify_and_add`.
        """
        bound, state_in = self._checked(delta)
        h = delta.header
        params = self.params
        if aggregate is None:
            if params.backend == "rlwe":
                seed, k, expansion = state_in
                state = rlwe.RlweSum(params, k)
                state.add_ciphertext(seed, delta.payload, expansion)
            else:
                state = state_in
            header = {
                "version": FORMAT_VERSIONS[MAGIC_AGGREGATE],
                "backend": params.backend,
                "params_id": params.params_id,
                "key_id": self.key_id,
                "skill_id": h["skill_id"],
                "base_version": h["base_version"],
                "round_id": h["round_id"],
                "shapes": h["shapes"],
                "num_values": h["num_values"],
                "count": 0,
                "robot_ids": [],
                "nonces": [],
                "weights": [],
                "total_weight": 0.0,
                "bound_sum": 0,
                "mask_cohort": h["mask_cohort"],
            }
            if h.get("mask_scheme") is not None:
                header["mask_scheme"] = h["mask_scheme"]
                header["unmasked"] = False
            aggregate = EncryptedAggregate(header, state)
        else:
            check_expected(
                aggregate, context=self
            )  # the aggregate must be ours too (a tampered/foreign aggregate is refused)
            self.check_joinable(aggregate.header, delta, bound)
            if params.backend == "rlwe":
                seed, k, expansion = state_in
                if aggregate._state.shape[0] != k:
                    raise TamperedError("encrypted aggregate and delta hold different numbers of polynomials")
                aggregate._state.add_ciphertext(seed, delta.payload, expansion)
            else:
                ctx = self._tenseal_context()
                current = aggregate._state
                if current and isinstance(current[0], bytes):
                    current = tenseal_backend.load_vectors(ctx, current)
                aggregate._state = tenseal_backend.add(current, state_in)
        ah = aggregate.header
        ah["count"] += 1
        ah["robot_ids"].append(h["robot_id"])
        ah["nonces"].append(h["nonce"])
        ah["weights"].append(float(h["weight"]))
        ah["total_weight"] = float(math.fsum(ah["weights"]))
        ah["bound_sum"] += bound
        return aggregate

    def verify_and_add(
        self,
        aggregate: EncryptedAggregate | None,
        delta: EncryptedDelta,
        public_key_bytes: bytes,
        *,
        round_id: int | None = None,
        skill_id: str | None = None,
        base_version: int | None = None,
    ) -> EncryptedAggregate:
        """Signature + header checks, then :meth:`add`: the cloud's whole per-upload step."""
        check_expected(delta, context=self, round_id=round_id, skill_id=skill_id, base_version=base_version)
        delta.verify(public_key_bytes)
        return self.add(aggregate, delta)

    def add_plaintext(self, aggregate: EncryptedAggregate, values_mod_t: np.ndarray) -> EncryptedAggregate:
        """Add a public plaintext vector (uint64 mod t, one per value) to the encrypted sum.

        Why: secure aggregation's final step (federation/secagg.py) removes the survivors'
        self masks and the dropped robots' pairwise masks from the *encrypted* sum; the
        cloud knows those mask vectors but never the sum itself. Adds no noise. Marks a
        "secagg" aggregate as unmasked, once.
        """
        check_expected(aggregate, context=self)
        h = aggregate.header
        if h.get("mask_scheme") != "secagg" or h.get("unmasked"):
            raise RoundMismatchError("only a not yet unmasked secure-aggregation sum takes an unmasking vector")
        params = self.params
        values = np.asarray(values_mod_t, dtype=np.uint64).reshape(-1)
        if values.size != int(h["num_values"]) or (values >= np.uint64(params.plain_modulus)).any():
            raise InvalidDeltaError(f"unmasking vector needs {h['num_values']} values in [0, t)")
        if params.backend == "rlwe":
            aggregate._state.add_plaintext(values)
        else:
            ctx = self._tenseal_context()
            state = aggregate._state
            if state and isinstance(state[0], bytes):
                state = tenseal_backend.load_vectors(ctx, state)
            aggregate._state = tenseal_backend.add_plain(state, values, params)
        h["unmasked"] = True
        return aggregate

    def _tenseal_chunks(self, delta: EncryptedDelta) -> list[bytes]:
        chunks = tenseal_backend.unpack_chunks(delta.payload)
        expected = max(1, -(-int(delta.header["num_values"]) // self.params.slots))
        if len(chunks) != expected:
            raise TamperedError(f"encrypted delta: {len(chunks)} ciphertexts for {delta.header['num_values']} values")
        return chunks

    def _rlwe_check(self, delta: EncryptedDelta) -> tuple[bytes, int, rlwe.AExpansion]:
        """The seed of ``a``, the polynomial count and the delta format's expansion of ``a``,
        after size checks."""
        params = self.params
        k = rlwe.num_polys(int(delta.header["num_values"]), params)
        try:
            seed = bytes.fromhex(delta.header["nonce"])
        except ValueError:
            raise TamperedError("encrypted delta: nonce is not hex") from None
        if len(seed) != 16:
            raise TamperedError("encrypted delta: nonce must be 16 bytes")
        if len(delta.payload) != k * params.n * 6:
            raise TamperedError("encrypted delta: payload size does not match its shapes")
        return seed, k, rlwe.A_EXPANSIONS[delta.header["version"]]

    def __repr__(self) -> str:
        return f"CloudContext(backend={self.backend}, params={self.params_id}, key_id={self.key_id})"


class FleetSecretKey:
    """The fleet's secret key (robots only): encrypts deltas and decrypts round sums."""

    def __init__(
        self, params: ParamSet, secret: Any, key_id: str, public_blob: bytes = b"", insecure_for_testing: bool = False
    ):
        check_security(params, insecure_for_testing)
        self.params = params
        self._secret = secret  # rlwe.RlweSecret or a tenseal context with secret key
        self.key_id = key_id
        self._public_blob = public_blob
        self.insecure_for_testing = insecure_for_testing

    backend = property(lambda self: self.params.backend)
    params_id = property(lambda self: self.params.params_id)

    def cloud_context(self) -> CloudContext:
        return CloudContext(self.params, self.key_id, self._public_blob, self.insecure_for_testing)

    def max_clients(self, clip: float) -> int:
        return self.params.max_clients(clip)

    # -- (de)serialization -------------------------------------------------------
    def to_bytes(self) -> bytes:
        if self.backend == "rlwe":
            secret = self._secret.to_bytes()
        else:
            secret = tenseal_backend.serialize_context(self._secret, with_secret=True)
        header = {
            "kind": "fleet-secret-key",
            "backend": self.backend,
            "params_id": self.params_id,
            "key_id": self.key_id,
            "insecure_for_testing": self.insecure_for_testing,
            "public_len": len(self._public_blob),
        }
        return _key_container(MAGIC_FLEET_KEY, header, self._public_blob + secret)

    @classmethod
    def from_bytes(cls, blob: bytes, insecure_for_testing: bool = False) -> FleetSecretKey:
        header, payload = _open_key_container(blob, MAGIC_FLEET_KEY)
        params = get_params(header["params_id"], header["backend"])
        public_blob, secret_raw = payload[: header["public_len"]], payload[header["public_len"] :]
        flagged = bool(header.get("insecure_for_testing")) and insecure_for_testing
        if params.backend == "rlwe":
            secret = rlwe.RlweSecret.from_bytes(secret_raw, params)
            key_id = _rlwe_key_id(params, secret)
        else:
            secret = tenseal_backend.load_context(secret_raw)
            if not secret.has_secret_key():
                raise KeyFileError("fleet key file holds no TenSEAL secret key")
            key_id = _tenseal_key_id(public_blob)
        if key_id != header["key_id"]:
            raise KeyMismatchError("fleet key file: key id does not match the key material")
        return cls(params, secret, key_id, public_blob, insecure_for_testing=flagged)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        return write_secret_file(path, self.to_bytes(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, insecure_for_testing: bool = False) -> FleetSecretKey:
        return cls.from_bytes(read_secret_file(path), insecure_for_testing)

    # -- robot-side operations -----------------------------------------------------
    def encrypt_quantized(self, plain: np.ndarray, rng: RandomSource, seed: bytes) -> bytes:
        """Low-level: encrypt integers (already reduced mod t, uint64) to a payload. No guard."""
        p = self.params
        if self.backend == "rlwe":
            return rlwe.pack_coeffs(self._secret.encrypt(plain.astype(np.uint64), seed, rng))
        return tenseal_backend.pack_chunks(tenseal_backend.encrypt(self._secret, plain, p))

    def decrypt_aggregate_quantized(self, aggregate: EncryptedAggregate) -> np.ndarray:
        """The exact integer sum (centered mod t) of all quantized contributions."""
        check_expected(aggregate, context=self)
        h = aggregate.header
        if h.get("mask_scheme") == "secagg":
            if not h.get("unmasked"):
                raise IncompleteMaskError("secure-aggregation sum is still masked: the cloud has not unmasked it yet")
        elif h["mask_cohort"] is not None and sorted(h["robot_ids"]) != sorted(h["mask_cohort"]):
            missing = sorted(set(h["mask_cohort"]) - set(h["robot_ids"]))
            raise IncompleteMaskError(f"masked round is missing robot(s) {', '.join(missing)}: masks do not cancel")
        n_values = int(h["num_values"])
        if self.backend == "rlwe":
            return self._secret.decrypt(aggregate._state.a_sum(), aggregate._state.b_sum(), n_values)
        state = aggregate._state
        if state and isinstance(state[0], bytes):
            state = tenseal_backend.load_vectors(self._secret, state)
        return tenseal_backend.decrypt(self._secret, state, n_values)

    def decrypt_aggregate(self, aggregate: EncryptedAggregate) -> dict[str, np.ndarray]:
        """The exact dequantized SUM per tensor (float64); FedAvg divides by count itself."""
        return dequantize(self.decrypt_aggregate_quantized(aggregate), aggregate.header["shapes"], self.params.scale)

    def __repr__(self) -> str:
        return f"FleetSecretKey(backend={self.backend}, params={self.params_id}, key_id={self.key_id})"


def _rlwe_key_id(params: ParamSet, secret: rlwe.RlweSecret) -> str:
    return hashlib.sha256(b"scfl-rlwe-key-id|" + params.params_id.encode() + b"|" + secret.to_bytes()).hexdigest()[:16]


def _tenseal_key_id(public_blob: bytes) -> str:
    return hashlib.sha256(b"scfl-tenseal-key-id|" + public_blob).hexdigest()[:16]


def generate_fleet_keys(
    backend: str = "rlwe",
    insecure_for_testing: bool = False,
    *,
    params_id: str | None = None,
    rng_seed_for_testing: bytes | None = None,
) -> FleetSecretKey:
    """New fleet secret key; refuses parameter sets below 128-bit unless flagged for testing.

    ``rng_seed_for_testing`` makes the rlwe secret deterministic (known-answer tests only).
    """
    params = get_params(params_id, backend)
    check_security(params, insecure_for_testing)
    if params.backend == "rlwe":
        rng = RandomSource(rng_seed_for_testing, os_direct=True)  # secret straight from os.urandom
        secret = rlwe.RlweSecret.generate(params, rng)
        return FleetSecretKey(params, secret, _rlwe_key_id(params, secret), b"", insecure_for_testing)
    if rng_seed_for_testing is not None:
        raise CryptoError("the TenSEAL backend cannot be seeded (SEAL draws its own randomness)")
    ctx = tenseal_backend.new_context(params)
    public_blob = tenseal_backend.public_key_digest(ctx)
    return FleetSecretKey(params, ctx, _tenseal_key_id(public_blob), public_blob, insecure_for_testing)


def load_fleet_key(path: str | os.PathLike, insecure_for_testing: bool = False) -> FleetSecretKey:
    return FleetSecretKey.from_bytes(read_secret_file(path), insecure_for_testing)


def load_cloud_context(path: str | os.PathLike, insecure_for_testing: bool = False) -> CloudContext:
    return CloudContext.load(path, insecure_for_testing)


def encrypt_delta(
    fleet_key: FleetSecretKey,
    tensors: dict[str, np.ndarray],
    *,
    skill_id: str,
    base_version: int,
    round_id: int,
    robot_id: str,
    signing_key: RobotSigningKey,
    clip: float,
    num_clients: int,
    weight: float = 1.0,
    mask: np.ndarray | None = None,
    mask_cohort: list[str] | None = None,
    mask_scheme: str | None = None,
    rng_seed_for_testing: bytes | None = None,
) -> EncryptedDelta:
    """Clip, (weight,) quantize, (mask,) encrypt and sign one robot's delta.

    ``weight`` is applied before clipping (robot-side scaling, see federation.EDA).
    ``mask`` (uint64 mod t, one per value) is added to the quantized values; pass the
    ``mask_cohort`` whose masks it contains and, for secure aggregation with dropout
    recovery (self masks the cloud removes), ``mask_scheme="secagg"``. Raises OverflowRiskError before encrypting
    when ``num_clients x clip x scale`` could exceed t/2.
    """
    params = fleet_key.params
    check_overflow(params, clip, num_clients)
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and 0 <= weight <= MAX_WEIGHT):
        raise InvalidDeltaError(f"weight must be a finite number in [0, {MAX_WEIGHT:g}], got {weight!r}")
    if not isinstance(robot_id, str) or not robot_id or not isinstance(skill_id, str) or not skill_id:
        raise InvalidDeltaError("robot_id and skill_id must be non-empty strings")
    tensors = {name: tensors[name] for name in sorted(tensors)}  # canonical order: key order never matters
    if weight != 1.0:
        tensors = {k: np.asarray(v, dtype=np.float64) * weight for k, v in tensors.items()}
    quantized = quantize(tensors, clip, params.scale)
    t = params.plain_modulus
    if t & (t - 1) == 0:  # power of two: two's complement bits are already the residue mod t
        plain = quantized.view(np.uint64) & np.uint64(t - 1)
    else:
        plain = np.mod(quantized, t).astype(np.uint64)
    if mask is not None:
        mask = np.asarray(mask, dtype=np.uint64).reshape(-1)
        if mask.size != plain.size:
            raise InvalidDeltaError(f"mask has {mask.size} values, delta has {plain.size}")
        if mask_cohort is None or robot_id not in mask_cohort:
            raise InvalidDeltaError("a masked delta needs the mask_cohort list containing this robot")
        plain = ((plain + mask % np.uint64(t)) % np.uint64(t)).astype(np.uint64)
    rng = RandomSource(rng_seed_for_testing)
    seed = rng.bytes(16)
    payload = fleet_key.encrypt_quantized(plain, rng, seed)
    header = {
        "version": FORMAT_VERSIONS[MAGIC_DELTA],
        "backend": params.backend,
        "params_id": params.params_id,
        "key_id": fleet_key.key_id,
        "skill_id": skill_id,
        "base_version": int(base_version),
        "round_id": int(round_id),
        "robot_id": robot_id,
        "shapes": [[name, [int(d) for d in np.shape(v)]] for name, v in tensors.items()],
        "num_values": int(quantized.size),
        "nonce": seed.hex(),
        "clip": float(clip),
        "num_clients": int(num_clients),
        "weight": float(weight),
        "mask_cohort": sorted(mask_cohort) if mask is not None else None,
        "created": 0.0 if rng.deterministic else round(time.time(), 3),
    }
    if mask is not None and mask_scheme is not None:
        if mask_scheme not in MASK_SCHEMES:
            raise InvalidDeltaError(f"unknown mask scheme {mask_scheme!r}; known: {', '.join(MASK_SCHEMES)}")
        header["mask_scheme"] = mask_scheme  # absent: plain pairwise masks (older format, no field)
    _prefix, digest = pack(MAGIC_DELTA, header, payload)
    signature = signing_key.sign(digest)
    assert len(signature) == SIGNATURE_LEN
    return EncryptedDelta(header, payload, digest, signature)


__all__ = [
    "CloudContext",
    "FleetSecretKey",
    "IncompleteMaskError",
    "encrypt_delta",
    "generate_fleet_keys",
    "load_cloud_context",
    "load_fleet_key",
    "quantize",
    "dequantize",
    "WrongBackendError",
]
