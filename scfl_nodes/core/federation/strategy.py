"""A small Flower-like strategy interface for encrypted skill federation.

One round, three places:

* cloud/coordinator: :meth:`Strategy.configure` turns the cohort (and, for EDA, the
  robots' expert-activation statistics) into a :class:`RoundPlan` (weights, clip,
  cohort size, masking on/off);
* robot: :meth:`Strategy.encrypt_update` scales the local delta by the robot's weight,
  adds its mask if the plan asks for one (a ``SecAggClient`` with dropout recovery, or
  the legacy ``PairwiseMasker``: anything with ``round_mask(plan, num_values, t)``),
  encrypts and signs it;
* cloud: :meth:`Strategy.aggregate_encrypted` only adds ciphertexts (never decrypts);
* robot: after ``FleetSecretKey.decrypt_aggregate``, :meth:`Strategy.finalize` turns the
  decrypted weighted SUM into the update to apply (divide by the contributors' total
  weight: the count for FedAvg).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np

from ..crypto import CloudContext, EncryptedAggregate, EncryptedDelta, FleetSecretKey, encrypt_delta
from ..crypto.signing import RobotSigningKey


#: Smallest cohort that gets masks: with two robots each learns the other's delta from the
#: sum anyway, so masking them would only cost time.
MIN_MASK_COHORT = 3


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


class Strategy:
    """Base class: uniform weights (FedAvg). Subclasses override :meth:`client_weights`."""

    name = "base"

    def __init__(self, clip: float = 1.0, secure_masks: bool = False):
        if not (clip > 0 and math.isfinite(clip)):
            raise ValueError(f"clip must be a positive number, got {clip!r}")
        self.clip = float(clip)
        self.secure_masks = bool(secure_masks)

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
        masked = self.secure_masks and len(ids) >= MIN_MASK_COHORT
        return RoundPlan(round_id, skill_id, base_version, tuple(ids), weights, self.clip, masked)

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
        mask = cohort = scheme = None
        if plan.secure_masks:
            if masker is None:
                raise ValueError("this round uses masks: pass the robot's SecAggClient (or PairwiseMasker)")
            num_values = sum(int(np.size(v)) for v in delta.values())
            mask, cohort, scheme = masker.round_mask(plan, num_values, fleet_key.params.plain_modulus)
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
            mask_scheme=scheme,
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


class FedAvg(Strategy):
    """Paper 4.3 / Algorithm 1: sum under encryption, divide by N after decryption."""

    name = "fedavg"


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
    extra = {"floor": fed.eda_floor} if fed.strategy == "eda" else {}
    return make_strategy(fed.strategy, clip=crypto_cfg.clip, secure_masks=fed.secure_masks, **extra)
