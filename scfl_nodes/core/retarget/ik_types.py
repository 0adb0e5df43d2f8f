"""Settings and results shared by the IK solvers (DLS and QP)."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import pinocchio as pin


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


# attempt(target, q0, lower, upper, q_prior, attempt_index) -> (q, position_error, orientation_error, iterations)
AttemptFn = Callable[..., "tuple[np.ndarray, float, float, int]"]


def solve_with_restarts(robot, target, q_init, *, q_prior, settings: IKSettings, rng, lower, upper,
                        attempt: AttemptFn) -> IKResult:
    """The restart policy shared by both solvers, around one solver-specific ``attempt``.

    The first attempt starts at ``q_init`` (else ``q_prior``, else the robot's home posture);
    further attempts (``settings.restarts``) start from uniform random postures within the
    limits, stopping at the first that meets the tolerances. ``lower``/``upper`` tighten the
    joint limits (trajectory velocity limits). The best attempt is returned either way, with
    ``success`` telling whether it may be used.
    """
    target = target if isinstance(target, pin.SE3) else pin.SE3(np.asarray(target, dtype=float))
    lower = robot.lower if lower is None else np.maximum(lower, robot.lower)
    upper = robot.upper if upper is None else np.minimum(upper, robot.upper)
    rng = rng if rng is not None else np.random.default_rng(0)
    if q_prior is not None:
        q_prior = robot.clamp(np.asarray(q_prior, dtype=float))
    first = q_init if q_init is not None else (q_prior if q_prior is not None else robot.home)
    tol_pos, tol_rot = settings.position_tolerance, settings.orientation_tolerance
    best, total_iters = None, 0
    for index in range(settings.restarts + 1):
        q0 = np.asarray(first, dtype=float) if index == 0 else rng.uniform(lower, upper)
        q, pos_err, rot_err, iters = attempt(target, q0, lower, upper, q_prior, index)
        total_iters += iters
        ok = pos_err <= tol_pos and rot_err <= tol_rot
        if best is None or ok or pos_err + 0.1 * rot_err < best[1] + 0.1 * best[2]:
            best = (q, pos_err, rot_err)
        if ok:
            break
    q, pos_err, rot_err = best
    return IKResult(q, pos_err <= tol_pos and rot_err <= tol_rot, pos_err, rot_err, total_iters, index + 1)
