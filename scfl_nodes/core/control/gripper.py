"""The gripper joints of a URDF, read from the file itself (names, limits, mimic relations).

The arm model for IK locks the gripper joints (``core/retarget/robot``), so their limits are
read here. A mimic joint (Panda's ``panda_finger_joint2`` follows ``panda_finger_joint1``) is
not a command interface in ros2_control, so only the joints it follows are commanded.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

from scfl_nodes.core.retarget.robot import RobotModelError


@dataclasses.dataclass(frozen=True)
class GripperJoint:
    name: str
    lower: float  # open/closed ends of travel (URDF <limit>)
    upper: float
    velocity: float  # URDF velocity limit (m/s or rad/s)
    closed_at_lower: bool = True  # Panda fingers: 0.0 = closed, 0.04 = open

    def position(self, closure: float) -> float:
        """Joint position for a closure in [0, 1] (0 open, 1 closed)."""
        closure = min(max(float(closure), 0.0), 1.0)
        closed, opened = (self.lower, self.upper) if self.closed_at_lower else (self.upper, self.lower)
        return opened + closure * (closed - opened)


def gripper_joints_from_urdf(urdf: str | Path, names) -> list[GripperJoint]:
    """The commandable (non-mimic) joints among ``names``, with their URDF limits."""
    try:
        root = ET.parse(str(urdf)).getroot()
    except (ET.ParseError, OSError) as exc:
        raise RobotModelError(f"cannot read URDF {urdf}: {exc}") from None
    joints = {j.get("name"): j for j in root.iter("joint")}
    out = []
    for name in names:
        joint = joints.get(name)
        if joint is None:
            raise RobotModelError(f"gripper joint {name!r} not in {Path(urdf).name}")
        if joint.find("mimic") is not None:
            continue
        limit = joint.find("limit")
        if joint.get("type") not in ("prismatic", "revolute") or limit is None:
            raise RobotModelError(f"gripper joint {name!r} must be prismatic or revolute with a <limit>")
        out.append(GripperJoint(name, float(limit.get("lower", 0.0)), float(limit.get("upper", 0.0)),
                                float(limit.get("velocity", 0.0))))
    bad = [j.name for j in out if not (j.upper > j.lower and j.velocity > 0)]
    if bad:
        raise RobotModelError(f"gripper joint(s) {', '.join(bad)} need lower < upper and a velocity limit > 0")
    return out
