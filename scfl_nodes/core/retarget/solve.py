"""One entry point for IK: ``solve_ik`` picks the DLS or the QP solver by name."""

from __future__ import annotations

import numpy as np

from .ik_dls import solve_dls
from .ik_qp import solve_qp
from .ik_types import IKResult, IKSettings
from .robot import RobotModel

SOLVERS = {"dls": solve_dls, "qp": solve_qp}


def solve_ik(
    robot: RobotModel,
    target,
    *,
    solver: str = "dls",
    q_init: np.ndarray | None = None,
    q_prior: np.ndarray | None = None,
    settings: IKSettings = IKSettings(),
    rng: np.random.Generator | None = None,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> IKResult:
    """Solve ||FK(q) − target||² + λ||q − q_prior||² for one 4x4 target within the joint limits.

    Check ``result.success``: an unreachable target returns the closest attempt with
    ``success=False`` and its residual errors, never a silently wrong pose.
    For whole trajectories use :func:`scfl_nodes.core.retarget.trajectory.solve_trajectory`.
    """
    try:
        fn = SOLVERS[solver]
    except KeyError:
        raise ValueError(f"unknown IK solver {solver!r}; use one of {', '.join(SOLVERS)}") from None
    return fn(robot, target, q_init, q_prior=q_prior, settings=settings, rng=rng, lower=lower, upper=upper)
