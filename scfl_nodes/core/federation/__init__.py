"""Federated aggregation strategies over encrypted skill deltas (FedAvg, EDA, masks)."""

from .eda import (
    ExpertDrivenAggregation,
    combine_slots,
    eda_weights,
    personalized_weights,
    similarity_matrix,
    slot_weights,
)
from .masks import MaskKey, PairwiseMasker
from .secagg import SecAggClient, SecAggError, default_threshold, round_context, unmask_vector
from .strategy import FedAvg, RoundPlan, Strategy, make_strategy, strategy_from_config

__all__ = [
    "ExpertDrivenAggregation",
    "FedAvg",
    "MaskKey",
    "PairwiseMasker",
    "RoundPlan",
    "SecAggClient",
    "SecAggError",
    "default_threshold",
    "round_context",
    "unmask_vector",
    "combine_slots",
    "slot_weights",
    "Strategy",
    "eda_weights",
    "make_strategy",
    "personalized_weights",
    "similarity_matrix",
    "strategy_from_config",
]
