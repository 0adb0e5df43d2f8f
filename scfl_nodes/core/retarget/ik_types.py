"""Settings and results shared by the IK solvers (DLS and QP)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class IKSettings:
    """Knobs of one IK solve; built from the ``retarget`` config section by ``settings_from_config``."""

    damping: float = 1e-4  # Levenberg-Marquardt damping of the pose task (DLS) / Tikhonov (QP)
    max_iterations: int = 50  # per attempt (failing descents are abandoned early)
    restarts: int = 15  # extra attempts from random configurations after the first one fails
    posture_weight: float = 0.1  # λ of ||q - q_GMR||² (DLS: fading regularisation weight; QP: PostureTask cost)
    position_tolerance: float = 1e-3  # m
    orientation_tolerance: float = math.radians(1.0)  # rad
    max_step: float = 1.0  # rad, largest joint change per iteration (keeps Gauss-Newton steps local)
    posture_iterations: int = 0  # optional nullspace iterations toward q_GMR after the pose is reached (DLS)

    def __post_init__(self) -> None:
        if self.damping < 0 or self.max_iterations < 1 or self.restarts < 0:
            raise ValueError("damping >= 0, max_iterations >= 1 and restarts >= 0 are required")
        if self.position_tolerance <= 0 or self.orientation_tolerance <= 0:
            raise ValueError("tolerances must be > 0")


@dataclasses.dataclass
class IKResult:
    """Outcome of one IK solve. ``success`` is False when the tolerance was not met: the
    returned ``q`` is then the best attempt and must not be used as if it reached the target."""

    q: np.ndarray
    success: bool
    position_error: float  # m
    orientation_error: float  # rad
    iterations: int
    attempts: int

    @property
    def reachable(self) -> bool:
        return self.success
