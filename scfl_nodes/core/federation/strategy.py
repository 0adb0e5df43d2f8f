"""A small Flower-like strategy interface for encrypted skill federation.

One round, three places:

* cloud/coordinator: :meth:`Strategy.configure` turns the cohort (and, for EDA, the
  robots' expert-activation statistics) into a :class:`RoundPlan` (weights, clip,
  cohort size, masking on/off);
* robot: :meth:`Strategy.encrypt_update` scales the local delta by the robot's weight,
  adds its pairwise mask if the plan asks for one, encrypts and signs it;
* cloud: :meth:`Strategy.aggregate_encrypted` only adds ciphertexts (never decrypts);
* robot: after ``FleetSecretKey.decrypt_aggregate``, :meth:`Strategy.finalize` turns the
  decrypted weighted SUM into the update to apply (divide by the contributors' total
  weight: the count for FedAvg).

What robots run in production (:class:`~scfl_nodes.core.federation.client.FederationClient`)
is the robot half without a coordinator: :meth:`Strategy.contributions` turns one local
delta into the uploads it needs (clipped, pre-scaled, one per cloud round) and
:meth:`Strategy.combine` turns the decrypted round sums back into the update to apply.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterable, Mapping

import numpy as np

from ..crypto import CloudContext, EncryptedAggregate, EncryptedDelta, FleetSecretKey, encrypt_delta
from ..crypto.signing import RobotSigningKey


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """Everything a robot needs to produce its upload for one round."""

    round_id: int
    skill_id: str
    base_version: int
    robot_ids: tuple[str, ...]
    weights: Mapping[str, float]
    clip: float
    secure_masks: bool = False

    @property
    def num_clients(self) -> int:
        return len(self.robot_ids)

    def weight(self, robot_id: str) -> float:
        try:
            return float(self.weights[robot_id])
        except KeyError:
            raise KeyError(f"robot {robot_id!r} is not in round {self.round_id}'s cohort") from None


#: Tensor that carries a robot's weight (x clip) inside the encrypted sum (sample-weighted FedAvg).
WEIGHT_KEY = "__weight__"


@dataclasses.dataclass(frozen=True)
class Contribution:
    """One upload of a robot: what goes into the cloud round of skill ``round_skill_id``.

    ``tensors`` are clipped and strategy-scaled already; ``weight`` (<= 1) is the plaintext
    header weight the encoder multiplies in and the aggregate sums (EDA slot weights).
    """

    round_skill_id: str
    tensors: Mapping[str, np.ndarray]
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class RoundSum:
    """A decrypted (or plaintext) round aggregate: the SUM, how many uploads, their header weights."""

    total: Mapping[str, np.ndarray]
    count: int
    total_weight: float


def clip_delta(delta: Mapping[str, np.ndarray], clip: float) -> dict[str, np.ndarray]:
    """Per-value clip to ``[-clip, clip]`` (bounds every upload, hence the encrypted sum)."""
    return {k: np.clip(np.asarray(v, dtype=np.float32), -clip, clip) for k, v in delta.items()}


class Strategy:
    """Base class: uniform weights (FedAvg). Subclasses override :meth:`client_weights`."""

    name = "base"

    def __init__(self, clip: float = 1.0, secure_masks: bool = False):
        if not (clip > 0 and math.isfinite(clip)):
            raise ValueError(f"clip must be a positive number, got {clip!r}")
        self.clip = float(clip)
        self.secure_masks = bool(secure_masks)

    def describe(self) -> str:
        """One line for logs: the strategy and its options."""
        return self.name + (" + pairwise masks" if self.secure_masks else "")

    # -- coordinator -------------------------------------------------------------
    def client_weights(self, robot_ids: list[str], activation_stats: Mapping[str, np.ndarray] | None) -> dict[str, float]:
        return {r: 1.0 for r in robot_ids}

    def configure(
        self,
        round_id: int,
        skill_id: str,
        base_version: int,
        robot_ids: Iterable[str],
        activation_stats: Mapping[str, np.ndarray] | None = None,
    ) -> RoundPlan:
        ids = sorted(set(robot_ids))
        if not ids:
            raise ValueError("a round needs at least one robot")
        weights = self.client_weights(ids, activation_stats)
        return RoundPlan(round_id, skill_id, base_version, tuple(ids), weights, self.clip, self.secure_masks)

    # -- robot ---------------------------------------------------------------------
    def encrypt_update(
        self,
        plan: RoundPlan,
        fleet_key: FleetSecretKey,
        robot_id: str,
        delta: Mapping[str, np.ndarray],
        signing_key: RobotSigningKey,
        masker=None,
        rng_seed_for_testing: bytes | None = None,
    ) -> EncryptedDelta:
        """Weight, (mask,) encrypt and sign this robot's delta according to ``plan``."""
        mask = cohort = None
        if plan.secure_masks:
            if masker is None:
                raise ValueError("this round uses pairwise masks: pass the robot's PairwiseMasker")
            num_values = sum(int(np.size(v)) for v in delta.values())
            mask = masker.mask(
                plan.robot_ids,
                num_values=num_values,
                plain_modulus=fleet_key.params.plain_modulus,
                skill_id=plan.skill_id,
                base_version=plan.base_version,
                round_id=plan.round_id,
            )
            cohort = list(plan.robot_ids)
        return encrypt_delta(
            fleet_key,
            dict(delta),
            skill_id=plan.skill_id,
            base_version=plan.base_version,
            round_id=plan.round_id,
            robot_id=robot_id,
            signing_key=signing_key,
            clip=plan.clip,
            num_clients=plan.num_clients,
            weight=plan.weight(robot_id),
            mask=mask,
            mask_cohort=cohort,
            rng_seed_for_testing=rng_seed_for_testing,
        )

    # -- cloud ---------------------------------------------------------------------
    def aggregate_encrypted(
        self, context: CloudContext, deltas: Iterable[EncryptedDelta], aggregate: EncryptedAggregate | None = None
    ) -> EncryptedAggregate:
        """Homomorphic sum; identical for every strategy since weights were applied robot-side."""
        for delta in deltas:
            aggregate = context.add(aggregate, delta)
        if aggregate is None:
            raise ValueError("no deltas to aggregate")
        return aggregate

    # -- robot, after decryption ---------------------------------------------------------
    def finalize(
        self, decrypted_sum: Mapping[str, np.ndarray], count: int, total_weight: float | None = None
    ) -> dict[str, np.ndarray]:
        """Weighted mean: the decrypted sum divided by the contributors' total weight."""
        denominator = float(count if total_weight is None else total_weight)
        if count < 1 or denominator <= 0:
            raise ValueError("cannot finalize an empty aggregate")
        return {k: np.asarray(v, dtype=np.float64) / denominator for k, v in decrypted_sum.items()}

    def finalize_aggregate(self, fleet_key: FleetSecretKey, aggregate: EncryptedAggregate) -> dict[str, np.ndarray]:
        """Decrypt and finalize in one call (uses the aggregate's count and total weight)."""
        return self.finalize(fleet_key.decrypt_aggregate(aggregate), aggregate.count, aggregate.total_weight)

    # -- robot, no coordinator (what FederationClient runs) --------------------------------
    def round_skill_ids(self, skill_id: str, activation: np.ndarray | None = None) -> list[str]:
        """The cloud rounds (by skill id) one update of ``skill_id`` goes to: what a coordinator opens."""
        return [skill_id]

    def contributions(
        self,
        skill_id: str,
        delta: Mapping[str, np.ndarray],
        *,
        num_samples: int | None = None,
        activation: np.ndarray | None = None,
        slot_tensors: Mapping[str, Collection[str]] | None = None,
    ) -> list[Contribution]:
        """The uploads one local delta turns into: here one clipped upload to the skill's round."""
        return [Contribution(skill_id, clip_delta(delta, self.clip))]

    def combine(
        self, skill_id: str, sums: Mapping[str, RoundSum], *, activation: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The update to add to the parent weights, from the decrypted sums of this robot's rounds."""
        s = sums[skill_id]
        return self.finalize(s.total, s.count, s.total_weight)


class FedAvg(Strategy):
    """Paper 4.3 / Algorithm 1: sum under encryption, divide after decryption.

    ``sample_weighted`` (McMahan et al. 2017): ``sum_k n_k delta_k / sum_k n_k``. The robot
    multiplies its clipped delta by ``w_k = min(n_k, sample_cap) / sample_cap`` (<= 1, so
    every value stays within the clip bound and the overflow guard ``N x clip x scale <=
    t/2`` is unchanged) and adds ``w_k x clip`` as one more encrypted value
    (:data:`WEIGHT_KEY`); the decrypted sum divided by the decrypted ``sum_k w_k`` is the
    weighted mean. The sample counts never appear in plaintext. Otherwise: ``sum / N``.
    """

    name = "fedavg"

    def __init__(self, clip: float = 1.0, secure_masks: bool = False, sample_weighted: bool = False,
                 sample_cap: int = 10_000):
        super().__init__(clip=clip, secure_masks=secure_masks)
        if int(sample_cap) < 1:
            raise ValueError(f"sample_cap must be >= 1, got {sample_cap!r}")
        self.sample_weighted = bool(sample_weighted)
        self.sample_cap = int(sample_cap)

    def describe(self) -> str:
        return super().describe().replace("fedavg", "fedavg (sample-weighted)" if self.sample_weighted else "fedavg (uniform)", 1)

    def sample_weight(self, num_samples: int | None) -> float:
        """``w_k`` of a robot with ``num_samples`` training samples (saturates at ``sample_cap``)."""
        if num_samples is None:
            raise ValueError("the update records no training sample count (manifest training.samples); "
                             "sample-weighted FedAvg needs it (or set federation.weighting: uniform)")
        if num_samples < 1:
            raise ValueError(f"a sample-weighted update needs >= 1 training sample, got {num_samples}")
        return min(int(num_samples), self.sample_cap) / self.sample_cap

    def contributions(self, skill_id, delta, *, num_samples=None, activation=None, slot_tensors=None):
        clipped = clip_delta(delta, self.clip)
        if not self.sample_weighted:
            return [Contribution(skill_id, clipped)]
        if WEIGHT_KEY in clipped:
            raise ValueError(f"{WEIGHT_KEY!r} is reserved for the sample weight")
        w = self.sample_weight(num_samples)
        tensors = {k: (w * v.astype(np.float64)).astype(np.float32) for k, v in clipped.items()}
        tensors[WEIGHT_KEY] = np.array([w * self.clip], dtype=np.float32)
        return [Contribution(skill_id, tensors)]

    def combine(self, skill_id, sums, *, activation=None):
        s = sums[skill_id]
        if not self.sample_weighted:
            return self.finalize(s.total, s.count)
        if WEIGHT_KEY not in s.total:
            raise ValueError(f"round of {skill_id!r} carries no sample weights: robots disagree on federation.weighting")
        denominator = float(np.asarray(s.total[WEIGHT_KEY], dtype=np.float64).reshape(-1)[0]) / self.clip
        if s.count < 1 or denominator <= 0:
            raise ValueError("cannot finalize an empty aggregate")
        return {k: np.asarray(v, dtype=np.float64) / denominator for k, v in s.total.items() if k != WEIGHT_KEY}


def make_strategy(name: str, clip: float = 1.0, secure_masks: bool = False, **kwargs) -> Strategy:
    """Strategy by config name (``federation.strategy``)."""
    from .eda import ExpertDrivenAggregation

    table = {"fedavg": FedAvg, "eda": ExpertDrivenAggregation}
    if name not in table:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(table)}")
    return table[name](clip=clip, secure_masks=secure_masks, **kwargs)


def strategy_from_config(config) -> Strategy:
    """The strategy a :class:`~scfl_nodes.core.config.ScflConfig` asks for (federation + crypto sections)."""
    fed, crypto_cfg = config.federation, config.crypto
    if fed.strategy == "eda":
        extra = {"floor": fed.eda_floor}
    else:
        extra = {"sample_weighted": fed.weighting == "samples", "sample_cap": fed.sample_cap}
    return make_strategy(fed.strategy, clip=crypto_cfg.clip, secure_masks=fed.secure_masks, **extra)
