"""Secure aggregation with dropout recovery (Bonawitz et al., CCS 2017; as in Flower SecAgg+).

Why on top of encryption: every robot holds the symmetric fleet key, so the cloud plus
any one robot can decrypt any single upload. Masks make one upload worthless on its
own: robot u uploads, under the fleet key,

    y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_vu)   (mod t)

where b_u is a fresh self-mask seed and s_uv = X25519(mask key of u, mask key of v).
Robot u Shamir-shares (threshold ``t``) both b_u and its mask private key among the
cohort; each share travels through the cloud encrypted to its recipient (X25519 +
AES-256-GCM). After the upload phase the cloud announces the survivors (robots whose
upload it holds); every survivor reveals, for each cohort member v, *either* its share
of b_v (v survived) *or* its share of v's mask key (v dropped) -- never both, so no
robot's input is ever exposed: a survivor's pairwise masks stay hidden, a dropped
robot's self mask was never used. With >= t responses the cloud rebuilds the self
masks of the survivors and the pairwise masks between survivors and dropped robots and
subtracts them from the *encrypted* sum by plaintext addition (mod t). Up to n - t
robots may drop at any point after sharing and the sum of the survivors' deltas is
still exact. A coalition of the cloud and fewer than t robots learns nothing beyond
that sum (see docs/encryption.md, "Threat model").

Pure protocol logic: no I/O. The robot side is :class:`SecAggClient`, the cloud's
arithmetic is :func:`unmask_vector`; scfl_cloud/secagg.py runs the message relay.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..crypto.signing import RobotSigningKey, verify_signature

#: Shamir field: the Mersenne prime 2^521 - 1 holds any 64-byte secret.
PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)
MASK_SCHEME = "secagg"


class SecAggError(ValueError):
    """A protocol step was refused: too few robots, a bad share, or a request that would leak."""


# ----------------------------------------------------------------------------- Shamir
def shamir_split(secret: int, threshold: int, xs: Sequence[int], prime: int = PRIME, randbelow=None) -> dict[int, int]:
    """Shares f(x) of a random polynomial of degree ``threshold - 1`` with f(0) = ``secret``."""
    randbelow = randbelow or secrets.randbelow
    if not 0 <= secret < prime:
        raise SecAggError("secret must lie in the field")
    if not 1 <= threshold <= len(xs):
        raise SecAggError(f"threshold {threshold} needs 1 <= threshold <= {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise SecAggError("share points must be distinct and non-zero")
    coeffs = [secret] + [randbelow(prime) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % prime
        out[x] = y
    return out


def lagrange_at_zero(xs: Sequence[int], prime: int = PRIME) -> dict[int, int]:
    """The Lagrange coefficients l_i(0) for the points ``xs``: f(0) = sum y_i l_i(0).

    Why separate: the cloud combines every survivor's seed and every dropped robot's key
    from the SAME responders, so it computes these t inverses once, not once per secret."""
    if not xs:
        raise SecAggError("no shares to combine")
    coeffs = {}
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % prime
                den = den * (xi - xj) % prime
        coeffs[xi] = num * pow(den, -1, prime) % prime
    return coeffs


def shamir_combine(shares: Mapping[int, int], prime: int = PRIME, coeffs: Mapping[int, int] | None = None) -> int:
    """f(0) by Lagrange interpolation; exact for any >= threshold shares of one polynomial.
    ``coeffs``: :func:`lagrange_at_zero` of exactly these share points, if already known."""
    if not shares:
        raise SecAggError("no shares to combine")
    if coeffs is None or set(coeffs) != set(shares):
        coeffs = lagrange_at_zero(list(shares), prime)
    return sum(y * coeffs[x] for x, y in shares.items()) % prime


def split_bytes(secret: bytes, threshold: int, xs: Sequence[int]) -> dict[int, bytes]:
    if len(secret) > 64:
        raise SecAggError("secrets up to 64 bytes")
    shares = shamir_split(int.from_bytes(secret, "big"), threshold, xs)
    return {x: y.to_bytes(SHARE_BYTES, "big") for x, y in shares.items()}


def combine_bytes(shares: Mapping[int, bytes], length: int, coeffs: Mapping[int, int] | None = None) -> bytes:
    value = shamir_combine({x: int.from_bytes(y, "big") for x, y in shares.items()}, coeffs=coeffs)
    if value >= 1 << (8 * length):
        raise SecAggError("shares do not combine to a secret of the expected length (inconsistent shares)")
    return value.to_bytes(length, "big")


# ----------------------------------------------------------------------------- helpers
def default_threshold(n: int) -> int:
    """Majority threshold: a coalition must hold more than half the cohort to unmask anyone."""
    return max(2, n // 2 + 1)


def round_context(fleet_id: str, skill_id: str, base_version: int, round_id: int) -> str:
    """Binds every key, share and mask to one round of one skill of one fleet."""
    return f"{fleet_id}|{skill_id}|{int(base_version)}|{int(round_id)}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except Exception:
        raise SecAggError("not base64") from None


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _kdf(secret: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode()).derive(secret)


def prg_mod_t(seed_key: bytes, num_values: int, plain_modulus: int) -> np.ndarray:
    """AES-256-CTR stream as values mod t: uint32 words for t = 2^32 (exact, and uint32
    arithmetic then wraps mod t for free); 8 bytes mod t as uint64 otherwise (bias <= t/2^64)."""
    t = int(plain_modulus)
    if t > 1 << 32:
        raise SecAggError("masks support plaintext moduli up to 2^32")
    width = 4 if t == 1 << 32 else 8
    stream = Cipher(algorithms.AES(seed_key), modes.CTR(b"\x00" * 16)).encryptor().update(bytes(width * num_values))
    if width == 4:  # a read-only view of the stream: callers only add or subtract it
        return np.frombuffer(stream, dtype="<u4")
    return np.frombuffer(stream, dtype="<u8") % np.uint64(t)


class _ModT:
    """Running sum mod t of mask streams (native uint32 wrap-around for t = 2^32)."""

    def __init__(self, num_values: int, plain_modulus: int):
        self.t = int(plain_modulus)
        self.wrap = self.t == 1 << 32
        self.total = np.zeros(num_values, dtype=np.uint32 if self.wrap else np.uint64)

    def add(self, stream: np.ndarray) -> None:
        self.total += stream
        if not self.wrap:
            self.total %= np.uint64(self.t)

    def sub(self, stream: np.ndarray) -> None:
        if self.wrap:
            self.total -= stream
        else:
            self.total += np.uint64(self.t) - stream
            self.total %= np.uint64(self.t)

    def result(self) -> np.ndarray:
        return self.total.astype(np.uint64)


def _self_mask(seed: bytes, context: str, robot_id: str, num_values: int, t: int) -> np.ndarray:
    return prg_mod_t(_kdf(seed, f"scfl-secagg-self|{context}|{robot_id}"), num_values, t)


def _pair_mask(shared: bytes, context: str, low: str, high: str, num_values: int, t: int) -> np.ndarray:
    return prg_mod_t(_kdf(shared, f"scfl-secagg-pair|{context}|{low}|{high}"), num_values, t)


def _advert_message(context: str, robot_id: str, share_public: bytes, mask_public: bytes) -> bytes:
    return b"scfl-secagg-keys|" + f"{context}|{robot_id}|".encode() + share_public + mask_public


def share_points(roster: Iterable[str]) -> dict[str, int]:
    """Shamir x-coordinate of each robot: its 1-based position in the sorted roster."""
    return {r: i + 1 for i, r in enumerate(sorted(roster))}


# ----------------------------------------------------------------------------- robot side
class SecAggClient:
    """One robot's side of one secure-aggregation round.

    Steps (each returns what to send to the cloud, as JSON-able dicts of base64 strings):
    :meth:`advertise` -> :meth:`share_keys` (roster) -> :meth:`receive_shares` ->
    :meth:`mask` / :meth:`round_mask` (add to the quantized delta before encrypting) ->
    :meth:`unmask_shares` (survivor list).
    """

    def __init__(self, robot_id: str, context: str, signing_key: RobotSigningKey | None = None, threshold: int | None = None):
        self.robot_id = robot_id
        self.context = context
        self.signing_key = signing_key
        self.threshold = threshold
        self._share_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._self_seed = os.urandom(32)
        self._roster: dict[str, dict[str, bytes]] = {}
        self._points: dict[str, int] = {}
        self._held: dict[str, tuple[bytes, bytes]] = {}  # sender -> (share of its mask key, share of its self seed)
        self._cohort: list[str] | None = None
        self._revealed: tuple[str, ...] | None = None

    @classmethod
    def for_round(cls, robot_id: str, *, fleet_id: str, skill_id: str, base_version: int, round_id: int,
                  signing_key: RobotSigningKey | None = None, threshold: int | None = None) -> SecAggClient:
        return cls(robot_id, round_context(fleet_id, skill_id, base_version, round_id), signing_key, threshold)

    # -- 1. advertise -------------------------------------------------------------
    def advertise(self) -> dict:
        share_pk, mask_pk = _raw_public(self._share_key), _raw_public(self._mask_key)
        signature = self.signing_key.sign(_advert_message(self.context, self.robot_id, share_pk, mask_pk)) if self.signing_key else b""
        return {"robot_id": self.robot_id, "share_public": _b64(share_pk), "mask_public": _b64(mask_pk),
                "signature": _b64(signature)}

    # -- 2. share ------------------------------------------------------------------
    def share_keys(self, roster: Sequence[Mapping[str, str]], robot_public_keys: Mapping[str, bytes] | None = None) -> dict[str, str]:
        """Check the roster (signatures when ``robot_public_keys`` is given) and return
        {peer: encrypted share} for every other roster member."""
        parsed = {}
        for advert in roster:
            rid = advert["robot_id"]
            share_pk, mask_pk = _unb64(advert["share_public"]), _unb64(advert["mask_public"])
            if len(share_pk) != 32 or len(mask_pk) != 32:
                raise SecAggError(f"robot {rid!r}: mask keys must be 32-byte X25519 public keys")
            if robot_public_keys is not None:
                if rid not in robot_public_keys:
                    raise SecAggError(f"robot {rid!r} is not a known fleet robot")
                verify_signature(robot_public_keys[rid], _advert_message(self.context, rid, share_pk, mask_pk),
                                 _unb64(advert["signature"]))
            if rid in parsed:
                raise SecAggError(f"robot {rid!r} appears twice in the roster")
            parsed[rid] = {"share": share_pk, "mask": mask_pk}
        if self.robot_id not in parsed or parsed[self.robot_id]["mask"] != _raw_public(self._mask_key):
            raise SecAggError("the roster does not hold this robot's own keys")
        threshold = self.threshold or default_threshold(len(parsed))
        if 2 * threshold <= len(parsed):
            raise SecAggError(f"threshold {threshold} is not a majority of the {len(parsed)}-robot roster: a cloud "
                              "that shows two halves different survivor lists could unmask a robot")
        if len(parsed) < max(threshold, 3):
            raise SecAggError(f"roster of {len(parsed)} robots is below the threshold {threshold} (or 3)")
        self.threshold = threshold
        self._roster = parsed
        self._points = share_points(parsed)
        xs = list(self._points.values())
        key_shares = split_bytes(_raw_private(self._mask_key), threshold, xs)
        seed_shares = split_bytes(self._self_seed, threshold, xs)
        out = {}
        for peer, x in self._points.items():
            plain = key_shares[x] + seed_shares[x]
            if peer == self.robot_id:
                self._held[peer] = (key_shares[x], seed_shares[x])
                continue
            out[peer] = _b64(self._seal(peer, plain))
        return out

    def _channel(self, peer: str, sender: str, recipient: str) -> AESGCM:
        shared = self._share_key.exchange(X25519PublicKey.from_public_bytes(self._roster[peer]["share"]))
        return AESGCM(_kdf(shared, f"scfl-secagg-share|{self.context}|{sender}|{recipient}"))

    def _seal(self, peer: str, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        aad = f"{self.context}|{self.robot_id}|{peer}".encode()
        return nonce + self._channel(peer, self.robot_id, peer).encrypt(nonce, plain, aad)

    # -- 3. receive ----------------------------------------------------------------
    def receive_shares(self, encrypted: Mapping[str, str]) -> list[str]:
        """Decrypt the shares addressed to this robot; the senders (and this robot) are the
        mask cohort. Returns the cohort."""
        if not self._roster:
            raise SecAggError("share_keys() first")
        for sender, blob in encrypted.items():
            if sender not in self._roster or sender == self.robot_id:
                raise SecAggError(f"share from {sender!r}, who is not a peer in the roster")
            raw = _unb64(blob)
            aad = f"{self.context}|{sender}|{self.robot_id}".encode()
            try:
                plain = self._channel(sender, sender, self.robot_id).decrypt(raw[:12], raw[12:], aad)
            except InvalidTag:
                raise SecAggError(f"share from {sender!r} fails authentication") from None
            if len(plain) != 2 * SHARE_BYTES:
                raise SecAggError(f"share from {sender!r} has the wrong length")
            self._held[sender] = (plain[:SHARE_BYTES], plain[SHARE_BYTES:])
        cohort = sorted(self._held)
        if len(cohort) < self.threshold:
            raise SecAggError(f"only {len(cohort)} robots shared keys; the threshold is {self.threshold}")
        self._cohort = cohort
        return list(cohort)

    @property
    def cohort(self) -> list[str]:
        if self._cohort is None:
            raise SecAggError("receive_shares() first")
        return list(self._cohort)

    # -- 4. mask -------------------------------------------------------------------
    def mask(self, num_values: int, plain_modulus: int) -> np.ndarray:
        """Self mask plus pairwise masks with every other cohort member (uint64 mod t)."""
        acc = _ModT(num_values, plain_modulus)
        acc.add(_self_mask(self._self_seed, self.context, self.robot_id, num_values, plain_modulus))
        for peer in self.cohort:
            if peer == self.robot_id:
                continue
            shared = self._mask_key.exchange(X25519PublicKey.from_public_bytes(self._roster[peer]["mask"]))
            low, high = sorted((self.robot_id, peer))
            stream = _pair_mask(shared, self.context, low, high, num_values, plain_modulus)
            acc.add(stream) if self.robot_id == low else acc.sub(stream)
        return acc.result()

    def round_mask(self, plan, num_values: int, plain_modulus: int) -> tuple[np.ndarray, list[str], str]:
        """Strategy hook: (mask, cohort, scheme) for ``plan``'s round."""
        if not self.context.endswith(f"|{plan.skill_id}|{int(plan.base_version)}|{int(plan.round_id)}"):
            raise SecAggError(f"this secure-aggregation state is for {self.context!r}, not round {plan.round_id}")
        return self.mask(num_values, plain_modulus), self.cohort, MASK_SCHEME

    # -- 5. unmask -----------------------------------------------------------------
    def unmask_shares(self, survivors: Iterable[str]) -> dict:
        """Reveal, per cohort member, the self-seed share (survivor) or the mask-key share
        (dropped). Refuses a second, different survivor list: answering two lists could
        reveal both shares of one robot and so its input."""
        survivors = tuple(sorted(set(survivors)))
        cohort = self.cohort
        if self._revealed is not None and self._revealed != survivors:
            raise SecAggError("a different survivor list was already answered; refusing (it could unmask a robot)")
        if self.robot_id not in survivors:
            raise SecAggError("this robot is not listed as a survivor")
        if not set(survivors) <= set(cohort):
            raise SecAggError("survivor list names robots outside the cohort")
        if len(survivors) < self.threshold:
            raise SecAggError(f"{len(survivors)} survivors are below the threshold {self.threshold}")
        self._revealed = survivors
        x = self._points[self.robot_id]
        seeds = {v: _b64(self._held[v][1]) for v in survivors}
        keys = {v: _b64(self._held[v][0]) for v in cohort if v not in survivors}
        return {"robot_id": self.robot_id, "x": x, "self_seed_shares": seeds, "mask_key_shares": keys}


# ----------------------------------------------------------------------------- cloud side
def unmask_vector(
    *,
    context: str,
    roster: Sequence[Mapping[str, str]],
    cohort: Sequence[str],
    survivors: Sequence[str],
    responses: Sequence[Mapping],
    threshold: int,
    num_values: int,
    plain_modulus: int,
) -> np.ndarray:
    """The plaintext vector (uint64 mod t) to ADD to the encrypted sum of the survivors'
    uploads so that it becomes the sum of their unmasked deltas.

    Needs >= ``threshold`` responses from survivors. Reconstructs each survivor's self
    seed and each dropped robot's mask key (checked against its advertised public key).
    """
    adverts = {a["robot_id"]: a for a in roster}
    points = share_points(adverts)
    survivors = sorted(set(survivors))
    dropped = sorted(set(cohort) - set(survivors))
    if not set(survivors) <= set(cohort):
        raise SecAggError("survivors must be cohort members")
    usable = [r for r in responses if r["robot_id"] in survivors and points.get(r["robot_id"]) == r["x"]]
    if len({r["robot_id"] for r in usable}) < threshold:
        raise SecAggError(f"{len(usable)} unmask responses are below the threshold {threshold}")
    usable = usable[:threshold]
    coeffs = lagrange_at_zero(sorted({r["x"] for r in usable}))  # the same points for every secret
    acc = _ModT(num_values, plain_modulus)
    for v in survivors:
        seed = combine_bytes({r["x"]: _unb64(r["self_seed_shares"][v]) for r in usable}, 32, coeffs)
        acc.sub(_self_mask(seed, context, v, num_values, plain_modulus))
    for d in dropped:
        raw = combine_bytes({r["x"]: _unb64(r["mask_key_shares"][d]) for r in usable}, 32, coeffs)
        key = X25519PrivateKey.from_private_bytes(raw)
        if _raw_public(key) != _unb64(adverts[d]["mask_public"]):
            raise SecAggError(f"shares of robot {d!r}'s mask key do not match its advertised key")
        for u in survivors:
            shared = key.exchange(X25519PublicKey.from_public_bytes(_unb64(adverts[u]["mask_public"])))
            low, high = sorted((u, d))
            stream = _pair_mask(shared, context, low, high, num_values, plain_modulus)
            # u added +stream if u < d else -stream; d never uploaded its opposite term
            acc.sub(stream) if u == low else acc.add(stream)
    return acc.result()


__all__ = [
    "MASK_SCHEME",
    "PRIME",
    "SecAggClient",
    "SecAggError",
    "combine_bytes",
    "default_threshold",
    "round_context",
    "shamir_combine",
    "shamir_split",
    "share_points",
    "split_bytes",
    "unmask_vector",
]
