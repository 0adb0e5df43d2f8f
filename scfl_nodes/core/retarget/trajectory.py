"""Trajectory IK: warm starts, joint velocity limits, per-waypoint residuals, unreachable flags.

Each waypoint starts from the previous solution (fast, and keeps the arm on the same IK
branch) and is solved inside the box ``q_prev ± v_max·dt`` intersected with the joint limits,
so the returned joint trajectory never exceeds the velocity limit. A waypoint that cannot be
reached within tolerance under these limits is flagged in ``reachable`` with its residual error:
callers decide what to do with it (the CLI refuses to write such a demo unless told to). At an
unreachable waypoint (after the first) the arm holds its previous posture, so one bad target
neither drags the arm into a strained pose nor breaks the following waypoints.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .ik_types import IKSettings
from .posture_prior import PosturePrior
from .robot import RobotModel
from .solve import solve_ik
from .transforms import pose_errors, validate_poses


@dataclasses.dataclass
class TrajectoryResult:
    q: np.ndarray  # (T, n) joint positions
    targets: np.ndarray  # (T, 4, 4) end-effector targets
    achieved: np.ndarray  # (T, 4, 4) FK(q)
    position_error: np.ndarray  # (T,) m
    orientation_error: np.ndarray  # (T,) rad
    reachable: np.ndarray  # (T,) bool: within tolerance under joint + velocity limits
    q_prior: np.ndarray | None  # (T, n) q_GMR per waypoint, if a prior was used
    timestamps: np.ndarray  # (T,) s
    solve_time: np.ndarray  # (T,) s per waypoint

    @property
    def unreachable_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.reachable)

    @property
    def all_reachable(self) -> bool:
        return bool(self.reachable.all())

    def summary(self) -> str:
        bad = self.unreachable_indices
        text = (f"{len(self.q)} waypoints, {len(self.q) - bad.size} reachable; max residual "
                f"{1e3 * self.position_error.max():.3f} mm / {np.degrees(self.orientation_error.max()):.3f} deg")
        if bad.size:
            shown = ", ".join(map(str, bad[:10])) + (" ..." if bad.size > 10 else "")
            text += f"; unreachable waypoints: {shown}"
        return text


def solve_trajectory(
    robot: RobotModel,
    targets,
    *,
    solver: str = "dls",
    settings: IKSettings = IKSettings(),
    prior: PosturePrior | None = None,
    q_start: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
    default_dt: float = 0.1,
    max_joint_velocity: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TrajectoryResult:
    """IK for every pose of ``targets`` (T, 4, 4) in order, warm-started and velocity-limited.

    ``max_joint_velocity`` (rad/s) is capped by the URDF velocity limits; ``None`` uses the URDF
    limits alone. The first waypoint is not velocity limited (the robot moves there first).
    """
    targets = validate_poses(targets, "end-effector targets")
    n_way = targets.shape[0]
    if timestamps is None:
        timestamps = np.arange(n_way) * default_dt
    timestamps = np.asarray(timestamps, dtype=float)
    if timestamps.shape != (n_way,) or not np.isfinite(timestamps).all() or (np.diff(timestamps) <= 0).any():
        raise ValueError(f"timestamps must be {n_way} finite, strictly increasing values")
    vmax = robot.velocity_limit.copy()
    if max_joint_velocity is not None:
        vmax = np.minimum(vmax, float(max_joint_velocity))
    q_prior_all = prior.predict(targets[:, :3, 3]) if prior is not None else None
    # warm-started waypoints need only a few posture iterations each (the pull toward q_GMR
    # accumulates along the trajectory); random restarts inside the small velocity box rarely
    # help, so a warm waypoint gets at most 2 before it is flagged
    warm_settings = dataclasses.replace(settings, posture_iterations=min(settings.posture_iterations, 3),
                                        restarts=min(settings.restarts, 2))
    rng = np.random.default_rng(seed)
    q_out = np.zeros((n_way, robot.nq))
    achieved = np.zeros_like(targets)
    pos_err = np.zeros(n_way)
    rot_err = np.zeros(n_way)
    ok = np.zeros(n_way, dtype=bool)
    times = np.zeros(n_way)
    steps = range(n_way)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="retarget IK", unit="wp")
    q_prev = None
    for t in steps:
        q_prior = None if q_prior_all is None else q_prior_all[t]
        start = time.perf_counter()
        if q_prev is None:
            q_init = q_start
            lower = upper = None
        else:
            q_init = q_prev
            reach = vmax * (timestamps[t] - timestamps[t - 1])
            lower, upper = q_prev - reach, q_prev + reach
        res = solve_ik(robot, targets[t], solver=solver, q_init=q_init, q_prior=q_prior,
                       settings=settings if q_prev is None else warm_settings, rng=rng, lower=lower, upper=upper)
        times[t] = time.perf_counter() - start
        q_t = res.q
        if not res.success and q_prev is not None:
            q_t = q_prev  # hold still rather than strain toward a target that cannot be reached
        achieved[t] = robot.fk_matrix(q_t)
        pos_err[t], rot_err[t] = pose_errors(achieved[t], targets[t])
        q_out[t] = q_t
        ok[t] = res.success
        q_prev = q_t
    return TrajectoryResult(q_out, targets, achieved, pos_err, rot_err, ok, q_prior_all, timestamps, times)
