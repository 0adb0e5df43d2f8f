"""Task routing (paper 3.4): offline text embeddings, top-k MoE and dual-gating (DGMoE) routers."""

from .encoder import DEFAULT_TEXT_ENCODER, TextEncoder, TextEncoderError, get_text_encoder
from .library import library_router
from .router import (
    COLD_START_TEMPERATURE,
    DEFAULT_COLD_START_THRESHOLD,
    DualGatingRouter,
    MoESkillRouter,
    RouterError,
    RouterTrainingResult,
    build_router,
    load_balance_loss,
    load_router,
    normalised_entropy,
)

__all__ = [
    "COLD_START_TEMPERATURE",
    "DEFAULT_COLD_START_THRESHOLD",
    "DEFAULT_TEXT_ENCODER",
    "DualGatingRouter",
    "MoESkillRouter",
    "RouterError",
    "RouterTrainingResult",
    "TextEncoder",
    "TextEncoderError",
    "build_router",
    "get_text_encoder",
    "library_router",
    "load_balance_loss",
    "load_router",
    "normalised_entropy",
]
