"""What an scfl action vector means for a real arm.

The policies are trained on Meta-World (``core/sim``): ``action = [dx, dy, dz, grip]``, each in
[-1, 1]. Meta-World clips the action, moves the end effector (its mocap) by
``action[:3] * 0.01`` m in its world frame per environment step, and drives the two fingers with
effort ``grip`` (+1 closes, -1 opens). Meta-World's world frame has x to the robot's right,
y away from the robot and z up; a REP-103 robot base frame has x forward, y left, z up, so the
default rotation of the action frame into the base frame is a yaw of -90 degrees.

:class:`ActionMapping` applies exactly that, with the scale, frame rotation and speed cap
configurable, so the same learned action means the same motion on the real arm.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: Meta-World's SawyerXYZEnv.action_scale: metres of end-effector motion per unit action per step
METAWORLD_POSITION_SCALE = 0.01
#: roll, pitch, yaw (rad) of Meta-World's world frame in a REP-103 robot base frame
METAWORLD_FRAME_RPY = (0.0, 0.0, -math.pi / 2)


class InvalidActionError(ValueError):
    """The action cannot be turned into a command (wrong length, NaN or inf)."""


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation R = Rz(yaw) Ry(pitch) Rx(roll) (URDF / REP-103 fixed-axis convention)."""
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


@dataclasses.dataclass(frozen=True)
class ActionMapping:
    """Action vector -> end-effector displacement in the robot base frame + gripper closure."""

    position_scale: float = METAWORLD_POSITION_SCALE  # m per unit action per control cycle
    frame_rpy: tuple[float, float, float] = METAWORLD_FRAME_RPY  # action frame in the base frame
    max_speed: float = 0.25  # m/s cap on the end-effector speed (after scaling)
    gripper_index: int = 3  # index of the gripper entry; -1 = the action has no gripper

    def __post_init__(self) -> None:
        if not (math.isfinite(self.position_scale) and self.position_scale > 0):
            raise ValueError(f"position_scale must be > 0, got {self.position_scale!r}")
        if len(self.frame_rpy) != 3 or not all(math.isfinite(v) for v in self.frame_rpy):
            raise ValueError(f"frame_rpy must be 3 finite angles (rad), got {self.frame_rpy!r}")
        if not (math.isfinite(self.max_speed) and self.max_speed > 0):
            raise ValueError(f"max_speed must be > 0, got {self.max_speed!r}")
        object.__setattr__(self, "_rotation", rpy_matrix(*self.frame_rpy))

    @property
    def rotation(self) -> np.ndarray:
        return self._rotation

    def check(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=float).reshape(-1)
        need = max(3, self.gripper_index + 1)
        if a.size < need:
            raise InvalidActionError(f"action has {a.size} values, need at least {need} (dx, dy, dz, gripper)")
        if not np.isfinite(a).all():
            raise InvalidActionError("action contains NaN or inf")
        return a

    def ee_delta(self, action, period_s: float) -> np.ndarray:
        """End-effector displacement (m, base frame) for one action spread over ``period_s``.

        Like Meta-World, each component is clipped to [-1, 1]; the displacement is then capped
        so that its speed stays below ``max_speed``.
        """
        a = self.check(action)
        delta = self.rotation @ (np.clip(a[:3], -1.0, 1.0) * self.position_scale)
        norm = float(np.linalg.norm(delta))
        limit = self.max_speed * period_s
        if norm > limit:
            delta *= limit / norm
        return delta

    def gripper_closure(self, action) -> float | None:
        """Gripper command in [0, 1]: 0 = fully open (action -1), 1 = fully closed (action +1)."""
        if self.gripper_index < 0:
            return None
        a = self.check(action)
        return 0.5 * (float(np.clip(a[self.gripper_index], -1.0, 1.0)) + 1.0)
