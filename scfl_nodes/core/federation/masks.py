"""Pairwise-mask secure aggregation (Bonawitz et al. 2017, without dropout recovery).

Why on top of encryption: every robot of a fleet holds the fleet secret key, so any
fleet-key holder who obtains one robot's upload could decrypt it. With masks, robot i
adds sum_{j>i} m_ij - sum_{j<i} m_ji (mod t) to its quantized values, where m_ij is
expanded from an X25519 secret that only robots i and j can compute. A single upload
then decrypts to uniformly random values mod t; in the sum over the full cohort every
m_ij appears once with + and once with -, so the masks cancel exactly.

Mask stream: HKDF-SHA256 of the X25519 shared secret, bound to (fleet, skill, base
version, round, the robot pair), keys AES-256-CTR; 8 stream bytes per value reduced
mod t (exactly uniform for t = 2^32, bias <= t/2^64 for a prime t).

Limitation: no dropout recovery. If a cohort member does not upload, the masks do not
cancel; FleetSecretKey.decrypt_aggregate then refuses with IncompleteMaskError rather
than return garbage. Authenticate mask public keys (e.g. sign them with the robot's
Ed25519 key: :meth:`MaskKey.signed_public`), else a malicious key server could MITM.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..crypto.signing import RobotSigningKey, read_secret_file, verify_signature, write_secret_file


class MaskKey:
    """A robot's X25519 key for agreeing pairwise mask seeds."""

    def __init__(self, private_key: X25519PrivateKey):
        self._key = private_key

    @classmethod
    def generate(cls) -> MaskKey:
        return cls(X25519PrivateKey.generate())

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def signed_public(self, signing_key: RobotSigningKey) -> tuple[bytes, bytes]:
        """(public bytes, Ed25519 signature) so peers can authenticate the mask key."""
        pub = self.public_bytes()
        return pub, signing_key.sign(b"scfl-mask-key|" + pub)

    @staticmethod
    def verify_public(pub: bytes, signature: bytes, robot_public_key: bytes) -> None:
        verify_signature(robot_public_key, b"scfl-mask-key|" + pub, signature)

    def shared_secret(self, peer_public: bytes) -> bytes:
        return self._key.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        raw = self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return write_secret_file(path, raw, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MaskKey:
        return cls(X25519PrivateKey.from_private_bytes(read_secret_file(path)))


def _pair_stream(shared: bytes, info: bytes, num_values: int, plain_modulus: int) -> np.ndarray:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    stream = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor().update(bytes(8 * num_values))
    return np.frombuffer(stream, dtype="<u8") % np.uint64(plain_modulus)


class PairwiseMasker:
    """One robot's view: its mask key and its peers' public mask keys."""

    def __init__(self, robot_id: str, mask_key: MaskKey, peer_public_keys: Mapping[str, bytes], fleet_id: str = ""):
        self.robot_id = robot_id
        self.mask_key = mask_key
        self.peers = dict(peer_public_keys)
        self.fleet_id = fleet_id

    def round_mask(self, plan, num_values: int, plain_modulus: int) -> tuple[np.ndarray, list[str], None]:
        """Strategy hook: (mask, cohort, scheme) for ``plan``'s round; the cohort is the plan's."""
        mask = self.mask(plan.robot_ids, num_values=num_values, plain_modulus=plain_modulus, skill_id=plan.skill_id,
                         base_version=plan.base_version, round_id=plan.round_id)
        return mask, list(plan.robot_ids), None

    def mask(
        self,
        cohort: Iterable[str],
        *,
        num_values: int,
        plain_modulus: int,
        skill_id: str,
        base_version: int,
        round_id: int,
    ) -> np.ndarray:
        """This robot's mask (uint64 mod t) for a round whose full cohort is ``cohort``."""
        cohort = sorted(set(cohort))
        if self.robot_id not in cohort:
            raise ValueError(f"robot {self.robot_id!r} is not in the cohort")
        if plain_modulus > 1 << 32:
            raise ValueError("pairwise masks support plaintext moduli up to 2^32")
        t = np.uint64(plain_modulus)
        total = np.zeros(num_values, dtype=np.uint64)
        for peer in cohort:
            if peer == self.robot_id:
                continue
            if peer not in self.peers:
                raise ValueError(f"no mask public key for cohort member {peer!r}")
            low, high = sorted((self.robot_id, peer))
            info = "|".join(["scfl-mask", self.fleet_id, skill_id, str(base_version), str(round_id), low, high]).encode()
            stream = _pair_stream(self.mask_key.shared_secret(self.peers[peer]), info, num_values, plain_modulus)
            if self.robot_id == low:
                total += stream
            else:
                total += t - stream
            total %= t
        return total
