"""The one interface every frozen base model implements (like LeRobot's ``PreTrainedPolicy``).

Callers never probe a model with ``hasattr``: they read its :class:`ObservationSpec` (which
inputs it needs -- an RGB image, a low-dimensional state, an instruction) and call
:meth:`BasePolicy.predict` with an :class:`Observation`. The simulator, the ROS node and the
fleet all build observations the same way (:func:`BasePolicy.observation_from`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ObservationSpec:
    """What a base model reads. ``image``: needs an RGB frame; ``state_dim``: length of the
    low-dimensional state it reads (0 = none); ``state_required``: False when the state is
    optional proprioception (the model runs on the image alone); ``image_size``: the square
    resolution it was trained on (simulators render at it; 0 = any); ``camera``: the simulated
    camera whose view it was trained on ("" = none in particular)."""

    image: bool = False
    state_dim: int = 0
    state_required: bool = False
    instruction: bool = True
    image_size: int = 0
    camera: str = ""

    @property
    def needs_state(self) -> bool:
        return self.state_dim > 0 and self.state_required

    @property
    def uses_state(self) -> bool:
        return self.state_dim > 0


@dataclass
class Observation:
    """A batch of observations: ``image`` (B, H, W, 3) uint8 RGB, ``state`` (B, D), one
    instruction per row. Fields a model does not use may be None."""

    instruction: list[str]
    image: np.ndarray | None = None
    state: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.instruction)


class ObservingPolicy(ABC):
    """Anything that acts from an :class:`Observation` its spec describes: frozen base models,
    and compositions on top of them (base + residual skills in the fleet simulation)."""

    name: str = "policy"

    @property
    @abstractmethod
    def observation_spec(self) -> ObservationSpec: ...

    @abstractmethod
    def predict(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]: ...

    def observation_from(self, instruction: str | Sequence[str], image=None, state=None) -> Observation:
        """Batch the inputs this model reads; a clear error when one it needs is missing."""
        spec = self.observation_spec
        if spec.image and image is None:
            raise ValueError(f"{self.name} needs an RGB image")
        if spec.needs_state and state is None:
            raise ValueError(f"{self.name} needs a {spec.state_dim}-d state")
        image = None if not spec.image else np.asarray(image)
        state = None if (not spec.uses_state or state is None) else np.asarray(state, dtype=np.float32)
        n = len(image) if image is not None else (len(state) if state is not None else 1)
        texts = [instruction] * n if isinstance(instruction, str) else list(instruction)
        if len(texts) != n:
            raise ValueError(f"{len(texts)} instructions for {n} observations")
        return Observation(texts, image, state)


class BasePolicy(ObservingPolicy):
    """A frozen base model: ``predict(observation) -> (action (B, A), embedding (B, obs_dim))``.

    ``obs_dim`` is the embedding size residual skills see; ``action_dim`` the action size.
    """

    name: str
    obs_dim: int
    action_dim: int
    backend: str

    @property
    def embedding_dim(self) -> int:
        return self.obs_dim

    @abstractmethod
    def num_parameters(self) -> int: ...

    @abstractmethod
    def parameter_hash(self) -> str: ...

    @abstractmethod
    def verify_unchanged(self) -> None: ...

    @abstractmethod
    def export_onnx(self, out: Path) -> Path:
        """Write the model's ONNX graph under ``out`` and return its path."""

    @abstractmethod
    def onnx_parity(self, onnx_path: Path, seed: int = 0) -> float:
        """Max |torch - onnxruntime| over both outputs on random inputs."""

    def act(self, obs, instruction: str | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Single-input shorthand: ``obs`` is the image (image models) or the state; one
        sample (no batch axis) gives unbatched outputs."""
        spec = self.observation_spec
        obs = np.asarray(obs)
        single = obs.ndim == (3 if spec.image else 1)
        batch = obs[None] if single else obs
        o = self.observation_from(instruction, image=batch) if spec.image else self.observation_from(instruction, state=batch)
        action, embedding = self.predict(o)
        return (action[0], embedding[0]) if single else (action, embedding)

    def __call__(self, obs, instruction):
        return self.act(obs, instruction)
