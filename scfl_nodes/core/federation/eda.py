"""Expert-Driven Aggregation (FedVLA, ICCV 2025) on encrypted skill deltas.

Each robot reports an expert-activation matrix V_i (L layers x K experts; for SCFL's
router L=1 and K = number of skills: how often each skill was selected). FedVLA
(Eq. 8-9) computes per-layer cosine similarities s_ij^(l) = cos(V_i^l, V_j^l) and
normalizes them into aggregation weights, so robots doing similar tasks learn more
from each other. Here the similarity is averaged over layers.

How the weights are applied (the choice the issue asks for): **robot-side scaling
before encryption.** Robot j multiplies its delta by w_j, then clips, quantizes and
encrypts; the cloud keeps doing plain additions and the robot divides the decrypted
sum by sum_j w_j of the robots that actually contributed (recorded in the aggregate).
Why not quantized plaintext-scalar multiplication on the ciphertexts:

* it multiplies the plaintext magnitude by the weight's quantization scale W (e.g.
  2^8), so the overflow guard ``N x clip x Delta x W <= t/2`` loses log2(W) bits of
  headroom (256x fewer robots at t=2^32) and the RLWE noise grows by W too;
* it makes the cloud's step depend on the weights (a scalar multiply of every
  coefficient per robot), while additions are all the cloud ever needs here;
* the weights derive from activation statistics the cloud sees anyway to plan the
  round, so hiding them from the cloud buys nothing; scaling by w_j <= 1 before
  clipping keeps every robot within the same clip bound, so the guard is unchanged.

The cost: a weight is fixed when the robot encrypts, so one aggregate realizes one
weight vector. The shared skill version uses consensus weights (each robot's mean
similarity to the cohort, or similarity to a ``reference`` profile such as the
receiving robot's or the skill's intended activation pattern).

FedVLA's fully personalized per-receiver mixing still works with additions only,
through *expert slots* (the same decomposition ISSUE 8's fleet simulation uses): with
unit-normalized activation rows u_i^l, s_ij = (1/L) sum_l sum_e u_ile u_jle, so robot j
uploads u_jle * delta_j into one aggregate per (layer, expert) slot it activates
(:func:`slot_weights`; every weight <= 1, so the clip bound is unchanged), and each
receiver i combines the decrypted slot sums with its own u_i (:func:`combine_slots`):
sum_le u_ile S_le / sum_le u_ile W_le = sum_j s_ij delta_j / sum_j s_ij, where W_le is
the slot aggregate's recorded total weight. One upload per activated slot instead of
one per receiver.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .strategy import Contribution, Strategy, clip_delta


def slot_round_skill_id(skill_id: str, slot: str) -> str:
    """Cloud skill id of one expert slot's rounds (``<skill>:<slot>``, e.g. ``door:l0.e3``)."""
    return f"{skill_id}:{slot}"


def _as_layers(v: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"activation statistics of {name!r} must be a (K,) or (L, K) array")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"activation statistics of {name!r} must be finite counts >= 0")
    return arr


def _cosine_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-layer cosine similarity of two (L, K) matrices; an all-zero layer gives 0."""
    num = np.sum(x * y, axis=1)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def similarity_matrix(stats: Mapping[str, np.ndarray], robot_ids: list[str] | None = None) -> np.ndarray:
    """Layer-averaged cosine similarity (FedVLA Eq. 8) between every pair of robots."""
    ids = list(robot_ids) if robot_ids is not None else sorted(stats)
    mats = [_as_layers(stats[r], r) for r in ids]
    shapes = {m.shape for m in mats}
    if len(shapes) != 1:
        raise ValueError(f"activation statistics have different shapes: {sorted(shapes)}")
    n = len(ids)
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            sim[i, j] = sim[j, i] = float(np.mean(_cosine_rows(mats[i], mats[j])))
    return sim


def personalized_weights(stats: Mapping[str, np.ndarray], receiver: str) -> dict[str, float]:
    """FedVLA Eq. 9 for one receiving robot: w_j = s_rj / sum_k s_rk (self included)."""
    ids = sorted(stats)
    sim = similarity_matrix(stats, ids)[ids.index(receiver)]
    total = sim.sum()
    return {r: float(s / total) for r, s in zip(ids, sim)} if total > 0 else {r: 1.0 / len(ids) for r in ids}


def eda_weights(
    stats: Mapping[str, np.ndarray],
    robot_ids: list[str] | None = None,
    reference: np.ndarray | None = None,
    floor: float = 0.05,
) -> dict[str, float]:
    """Consensus EDA weights, scaled so the largest is 1 (used robot-side, before clipping).

    Without ``reference`` a robot's score is its mean similarity to the other robots
    (column mean of the similarity matrix, FedVLA's per-receiver weights averaged over
    receivers); with one, its similarity to that profile. ``floor`` (relative to the
    largest) keeps every robot contributing a little, as FedVLA's normalization does.
    """
    ids = list(robot_ids) if robot_ids is not None else sorted(stats)
    missing = [r for r in ids if r not in stats]
    if missing:
        raise ValueError(f"no expert-activation statistics for robot(s) {', '.join(missing)}")
    for r in ids:
        _as_layers(stats[r], r)  # validate every robot's counts, even in a one-robot round
    if reference is not None:
        ref = _as_layers(reference, "reference")
        scores = np.array([np.mean(_cosine_rows(_as_layers(stats[r], r), ref)) for r in ids])
    elif len(ids) == 1:
        scores = np.ones(1)
    else:
        sim = similarity_matrix(stats, ids)
        scores = (sim.sum(axis=0) - 1.0) / (len(ids) - 1)
    top = scores.max()
    if top <= 0:
        return {r: 1.0 for r in ids}
    weights = np.maximum(scores / top, floor)
    return {r: float(w) for r, w in zip(ids, weights)}


def slot_weights(stats: np.ndarray, name: str = "robot") -> dict[str, float]:
    """Robot-side expert-slot weights u_le (unit-normalized per layer), non-zero slots only."""
    mats = _as_layers(stats, name)
    norms = np.linalg.norm(mats, axis=1, keepdims=True)
    unit = np.divide(mats, norms, out=np.zeros_like(mats), where=norms > 0)
    return {f"l{layer}.e{expert}": float(unit[layer, expert]) for layer, expert in zip(*np.nonzero(unit))}


def combine_slots(
    own_stats: np.ndarray, slot_sums: dict[str, tuple[dict[str, np.ndarray], float]], name: str = "robot"
) -> dict[str, np.ndarray]:
    """Personalized EDA update of one receiver from decrypted slot sums.

    ``slot_sums`` maps slot id -> (decrypted weighted sum, the aggregate's total weight).
    Returns sum_j s_ij delta_j / sum_j s_ij (FedVLA Eq. 9, the receiver itself included).
    """
    own = slot_weights(own_stats, name)
    numerator: dict[str, np.ndarray] = {}
    denominator = 0.0
    for slot, u in own.items():
        if slot not in slot_sums:
            continue
        total, weight = slot_sums[slot]
        denominator += u * float(weight)
        for k, v in total.items():
            numerator[k] = numerator.get(k, 0.0) + u * np.asarray(v, dtype=np.float64)
    if denominator <= 0:
        raise ValueError(f"no slot aggregate overlaps the activations of {name!r}")
    return {k: v / denominator for k, v in numerator.items()}


class ExpertDrivenAggregation(Strategy):
    """EDA strategy: weights from expert-activation similarity, applied robot-side."""

    name = "eda"

    def __init__(self, clip: float = 1.0, secure_masks: bool = False, floor: float = 0.05, reference=None):
        super().__init__(clip=clip, secure_masks=secure_masks)
        if not 0 <= floor <= 1:
            raise ValueError("floor must be in [0, 1]")
        self.floor = floor
        self.reference = reference

    # -- robot, no coordinator: FedVLA's personalized weights through expert slots --------
    def round_skill_ids(self, skill_id, activation=None):
        if activation is None:
            raise ValueError("EDA needs this robot's expert-activation statistics")
        return [slot_round_skill_id(skill_id, slot) for slot in slot_weights(activation)]

    def contributions(self, skill_id, delta, *, num_samples=None, activation=None, slot_tensors=None):
        """One upload per activated slot: ``u_le x clip(delta)`` into round ``<skill>:<slot>``.

        ``slot_tensors`` (optional) names the tensors a slot's round carries (the parameters
        its cohort trains); absent tensors count as zero in that slot.
        """
        if activation is None:
            raise ValueError("EDA needs this robot's expert-activation statistics")
        clipped = clip_delta(delta, self.clip)
        out = []
        for slot, u in slot_weights(activation).items():
            keep = clipped if slot_tensors is None else {k: v for k, v in clipped.items() if k in slot_tensors[slot]}
            if keep:
                out.append(Contribution(slot_round_skill_id(skill_id, slot), keep, u))
        if not out:
            raise ValueError("EDA: this robot activated no expert, so it has nothing to upload")
        return out

    def combine(self, skill_id, sums, *, activation=None):
        """``sum_j s_ij delta_j / sum_j s_ij`` from the slot sums this robot received."""
        if activation is None:
            raise ValueError("EDA needs this robot's expert-activation statistics")
        prefix = f"{skill_id}:"
        slot_sums = {k[len(prefix):]: (s.total, s.total_weight) for k, s in sums.items() if k.startswith(prefix)}
        return combine_slots(activation, slot_sums)

    def client_weights(self, robot_ids, activation_stats):
        if not activation_stats:
            raise ValueError("EDA needs expert-activation statistics from every robot of the round")
        return eda_weights(activation_stats, list(robot_ids), reference=self.reference, floor=self.floor)
