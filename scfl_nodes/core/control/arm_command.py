"""One control cycle of a real arm: measured joints + action -> joint targets, twist, gripper.

The end effector is asked to move by the action's displacement (``ActionMapping``) while
keeping its current orientation (Meta-World fixes the gripper orientation too). Pinocchio
DLS IK (``core.retarget.solve_ik``) starts at the measured posture and is confined to the box
``q ± v_max · scale · period`` intersected with the URDF position limits, so the joint target
can be reached within one period without exceeding either limit. A displacement the box does
not allow is *saturated*: the target is the solver's best pose inside the box (never outside
it), and the command says so.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pinocchio as pin

from scfl_nodes.core.retarget import IKSettings, RobotModel, solve_ik

from .action_map import ActionMapping
from .gripper import GripperJoint


class JointStateError(ValueError):
    """The measured joint state cannot be used (missing joints, NaN, far outside the limits)."""


def joint_positions_by_name(names, positions, wanted) -> np.ndarray:
    """Positions of ``wanted`` joints from a JointState's (``names``, ``positions``), any order."""
    if len(positions) < len(names):
        raise JointStateError(f"joint state has {len(names)} names but {len(positions)} positions")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise JointStateError(f"joint state lacks joint(s) {', '.join(missing)}")
    q = np.array([positions[index[n]] for n in wanted], dtype=float)
    if not np.isfinite(q).all():
        raise JointStateError("joint state contains NaN or inf positions")
    return q


@dataclasses.dataclass
class ArmCommand:
    q_current: np.ndarray  # measured joints (arm), as received
    q_target: np.ndarray  # commanded joints after one period
    ee_delta: np.ndarray  # requested end-effector displacement (m, base frame)
    linear_velocity: np.ndarray  # ee_delta / period (m/s, base frame): the twist command
    achieved_delta: np.ndarray  # FK(q_target) - FK(q_current) (m)
    saturated: bool  # the limits did not allow the full displacement
    gripper_positions: list[float]  # one per commanded gripper joint (empty: no gripper)
    gripper_duration_s: float  # time that respects the gripper joints' velocity limits


@dataclasses.dataclass(frozen=True)
class ArmCommanderSettings:
    velocity_scale: float = 0.5  # fraction of the URDF joint velocity limits commands may use
    limit_margin: float = 1e-3  # rad (or m) that targets keep from the URDF position limits
    state_limit_tolerance: float = 0.02  # measured joints further outside the limits are refused
    position_tolerance: float = 1e-4  # m: IK tolerance of one cycle's target
    orientation_tolerance: float = 1e-3  # rad

    def __post_init__(self) -> None:
        if not 0 < self.velocity_scale <= 1:
            raise ValueError(f"velocity_scale must be in (0, 1], got {self.velocity_scale!r}")
        if self.limit_margin < 0 or self.state_limit_tolerance < 0:
            raise ValueError("limit_margin and state_limit_tolerance must be >= 0")


class ArmCommander:
    """Turns (measured joints, action) into an :class:`ArmCommand` for one control period."""

    def __init__(self, robot: RobotModel, mapping: ActionMapping = ActionMapping(),
                 gripper: list[GripperJoint] | tuple = (), settings: ArmCommanderSettings = ArmCommanderSettings()):
        self.robot = robot
        self.mapping = mapping
        self.gripper = list(gripper)
        self.settings = settings
        span = robot.upper - robot.lower
        margin = np.minimum(settings.limit_margin, 0.25 * span)
        self.lower = robot.lower + margin
        self.upper = robot.upper - margin
        self.ik = IKSettings(restarts=0, max_iterations=30, posture_weight=0.0, damping=1e-6,
                             position_tolerance=settings.position_tolerance,
                             orientation_tolerance=settings.orientation_tolerance, max_step=0.2)

    @property
    def joint_names(self) -> list[str]:
        return list(self.robot.joint_names)

    @property
    def gripper_names(self) -> list[str]:
        return [g.name for g in self.gripper]

    def max_joint_step(self, period_s: float) -> np.ndarray:
        return self.robot.velocity_limit * self.settings.velocity_scale * period_s

    def measured(self, q) -> np.ndarray:
        """Check a measured arm posture: finite, and not far outside the URDF limits."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.robot.nq,) or not np.isfinite(q).all():
            raise JointStateError(f"need {self.robot.nq} finite joint positions, got {q!r}")
        tol = self.settings.state_limit_tolerance
        outside = (q < self.robot.lower - tol) | (q > self.robot.upper + tol)
        if outside.any():
            names = ", ".join(n for n, o in zip(self.robot.joint_names, outside) if o)
            raise JointStateError(f"measured joint(s) {names} outside the URDF limits (wrong URDF or robot?)")
        return q

    def joint_box(self, q: np.ndarray, period_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Joint targets reachable from ``q`` in ``period_s``: ``q ± step`` within the limits.

        A joint measured beyond a limit by more than one step (only possible within
        ``state_limit_tolerance``) may only go back to that limit.
        """
        step = self.max_joint_step(period_s)
        lower = np.maximum(self.lower, q - step)
        upper = np.minimum(self.upper, q + step)
        empty = lower > upper
        lower[empty] = upper[empty] = np.where(q[empty] > self.upper[empty], self.upper[empty], self.lower[empty])
        return lower, upper

    def command(self, q_measured, action, period_s: float, gripper_measured=None) -> ArmCommand:
        """The command that moves the end effector by the action's displacement in ``period_s``.

        Raises :class:`InvalidActionError` for a NaN/short action and :class:`JointStateError`
        for an unusable joint state: then nothing may be sent to the robot.
        """
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s!r}")
        delta = self.mapping.ee_delta(action, period_s)
        closure = self.mapping.gripper_closure(action)
        q0 = self.measured(q_measured)
        start = self.robot.fk(q0)
        target = pin.SE3(start.rotation, start.translation + delta)
        lower, upper = self.joint_box(q0, period_s)
        q_init = np.minimum(np.maximum(q0, lower), upper)
        if float(np.linalg.norm(delta)) < 1e-12 and np.array_equal(q_init, q0):
            q_target, ok = q0.copy(), True
        else:
            result = solve_ik(self.robot, target, q_init=q_init, settings=self.ik, lower=lower, upper=upper)
            q_target, ok = np.minimum(np.maximum(result.q, lower), upper), result.success
        achieved = self.robot.fk(q_target).translation - start.translation
        grip, grip_time = [], 0.0
        if closure is not None and self.gripper:
            grip = [g.position(closure) for g in self.gripper]
            if gripper_measured is None:  # unknown: allow for a full stroke
                travel = [g.upper - g.lower for g in self.gripper]
            else:
                travel = [abs(p - m) for p, m in zip(grip, gripper_measured)]
            grip_time = max([period_s] + [t / (g.velocity * self.settings.velocity_scale)
                                          for t, g in zip(travel, self.gripper)])
        return ArmCommand(q0, q_target, delta, delta / period_s, achieved, not ok, grip, grip_time)
