"""Frozen base models for scfl: registry, backends (torch / onnxruntime / TensorRT), the
project's own Meta-World base policy and the Hugging Face VLA loader (OpenVLA, pi0).

Nothing here ever computes a gradient for a base model or writes its weights: they are
vendor IP (paper 3.2) and every robot must run the same bits, so hashes are checked at load.
"""

from .async_runner import AsyncBasePolicy, TimedAction
from .interface import BasePolicy, Observation, ObservationSpec
from .backends import BACKENDS, BackendUnavailableError, tensorrt_available
from .base_policy import (
    BASE_POLICY_NAME,
    MetaWorldBasePolicy,
    ModelIntegrityError,
    default_base_policy_dir,
    load_scfl_base_policy,
    state_dict_sha256,
)
from .registry import (
    MODEL_REGISTRY,
    ModelNotFoundError,
    ModelSpec,
    base_policy_from_config,
    list_models,
    load_base_policy,
    resolve,
)

__all__ = [
    "AsyncBasePolicy",
    "BACKENDS",
    "BASE_POLICY_NAME",
    "BackendUnavailableError",
    "BasePolicy",
    "Observation",
    "ObservationSpec",
    "MODEL_REGISTRY",
    "MetaWorldBasePolicy",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "ModelSpec",
    "base_policy_from_config",
    "default_base_policy_dir",
    "list_models",
    "load_base_policy",
    "load_scfl_base_policy",
    "resolve",
    "state_dict_sha256",
    "TimedAction",
    "tensorrt_available",
]
