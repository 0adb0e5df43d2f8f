"""Federated aggregation strategies over encrypted skill deltas (FedAvg, EDA, masks)."""

from .eda import (
    ExpertDrivenAggregation,
    combine_slots,
    eda_weights,
    slot_round_skill_id,
    personalized_weights,
    similarity_matrix,
    slot_weights,
)
from .masks import MaskKey, PairwiseMasker
from .strategy import (
    WEIGHT_KEY,
    Contribution,
    FedAvg,
    RoundPlan,
    RoundSum,
    Strategy,
    clip_delta,
    make_strategy,
    strategy_from_config,
)

__all__ = [
    "WEIGHT_KEY",
    "Contribution",
    "RoundSum",
    "clip_delta",
    "slot_round_skill_id",
    "ExpertDrivenAggregation",
    "FedAvg",
    "MaskKey",
    "PairwiseMasker",
    "RoundPlan",
    "combine_slots",
    "slot_weights",
    "Strategy",
    "eda_weights",
    "make_strategy",
    "personalized_weights",
    "similarity_matrix",
    "strategy_from_config",
]
