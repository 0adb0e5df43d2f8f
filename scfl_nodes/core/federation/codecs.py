"""What a robot's upload looks like on the wire: encrypted + signed, or plaintext (the reference).

Both turn a :class:`~scfl_nodes.core.federation.strategy.Contribution` into bytes for one
cloud round and a round's aggregate bytes back into a
:class:`~scfl_nodes.core.federation.strategy.RoundSum`; the federation client does not
know which one it holds. :class:`PlainCodec` blobs are what
:class:`~scfl_nodes.core.federation.inprocess.InProcessCloud` sums, so the plaintext
reference runs the same client, strategy and round protocol as the encrypted fleet.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence

import numpy as np

from .strategy import Contribution, RoundSum

PLAIN_MAGIC = b"SCFLPLN1"


class Codec:
    """Interface: ``encode`` one contribution, ``decode`` one round aggregate."""

    encrypted = False
    backend = "plain"
    key_id = ""
    masker = None  # PairwiseMasker when uploads carry pairwise masks

    def encode(self, c: Contribution, *, robot_id: str, round_id: int, base_version: int, clip: float,
               cohort: Sequence[str] | None = None) -> bytes:
        raise NotImplementedError

    def decode(self, blob: bytes) -> RoundSum:
        raise NotImplementedError

    def upload_bytes(self, blob: bytes) -> int:
        """What one upload costs on the wire (accounting)."""
        return len(blob)


class EncryptedCodec(Codec):
    """Fleet-key encryption + Ed25519 signature (core.crypto), pairwise masks when given a masker.

    ``num_clients`` is the largest cohort a round may have: :func:`encrypt_delta` refuses
    (before encrypting) a clip at which that many uploads could overflow ``t/2``.
    """

    encrypted = True

    def __init__(self, fleet_key, signing_key, *, num_clients: int, masker=None):
        self.fleet_key = fleet_key
        self.signing_key = signing_key
        self.num_clients = int(num_clients)
        self.masker = masker
        self.backend = fleet_key.backend
        self.key_id = fleet_key.key_id

    def encode(self, c, *, robot_id, round_id, base_version, clip, cohort=None):
        from scfl_nodes.core.crypto import encrypt_delta

        tensors = {k: np.asarray(v, dtype=np.float32) for k, v in c.tensors.items()}
        mask = None
        if self.masker is not None:
            if not cohort:
                raise ValueError("a masked upload needs the round's cohort")
            cohort = sorted(set(cohort))
            mask = self.masker.mask(cohort, num_values=sum(int(v.size) for v in tensors.values()),
                                    plain_modulus=self.fleet_key.params.plain_modulus, skill_id=c.round_skill_id,
                                    base_version=base_version, round_id=round_id)
        return encrypt_delta(
            self.fleet_key, tensors, skill_id=c.round_skill_id, base_version=base_version, round_id=round_id,
            robot_id=robot_id, signing_key=self.signing_key, clip=clip, num_clients=self.num_clients,
            weight=float(c.weight), mask=mask, mask_cohort=cohort if mask is not None else None,
        ).to_bytes()

    def decode(self, blob):
        from scfl_nodes.core.crypto import EncryptedAggregate

        agg = EncryptedAggregate.from_bytes(blob)
        return RoundSum(self.fleet_key.decrypt_aggregate(agg), int(agg.count), float(agg.total_weight))


def pack_plain(header: dict, tensors: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{f"t{i}": np.asarray(v) for i, v in enumerate(tensors.values())})
    head = json.dumps({**header, "names": list(tensors)}).encode()
    return PLAIN_MAGIC + len(head).to_bytes(4, "big") + head + buf.getvalue()


def unpack_plain(blob: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    if blob[:8] != PLAIN_MAGIC:
        raise ValueError("not a plaintext federation blob")
    n = int.from_bytes(blob[8:12], "big")
    header = json.loads(blob[12:12 + n])
    with np.load(io.BytesIO(blob[12 + n:])) as z:
        tensors = {name: z[f"t{i}"] for i, name in enumerate(header["names"])}
    return header, tensors


class PlainCodec(Codec):
    """Plaintext float32 uploads (the reference path): ``weight x tensors``, no clip beyond the strategy's."""

    def encode(self, c, *, robot_id, round_id, base_version, clip, cohort=None):
        w = float(c.weight)
        tensors = {k: (np.asarray(v, dtype=np.float64) * w).astype(np.float32) for k, v in c.tensors.items()}
        header = {"skill_id": c.round_skill_id, "round_id": int(round_id), "base_version": int(base_version),
                  "robot_id": robot_id, "weight": w, "created": time.time()}
        return pack_plain(header, tensors)

    def decode(self, blob):
        header, tensors = unpack_plain(blob)
        return RoundSum(tensors, int(header["count"]), float(header["total_weight"]))

    def upload_bytes(self, blob: bytes) -> int:
        """What the upload costs as raw float32 (the accounting unit of plaintext methods)."""
        _, tensors = unpack_plain(blob)
        return int(sum(np.asarray(v, dtype=np.float32).nbytes for v in tensors.values()))
