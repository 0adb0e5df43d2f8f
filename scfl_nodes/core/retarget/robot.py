"""Robot model loading for retargeting: a Pinocchio model of the arm with a named end-effector frame.

The robot is chosen by name (config ``retarget.robot``) or by a URDF path. Gripper joints are
locked (``pin.buildReducedModel``) so that IK works on the 7 arm joints only: the gripper is
commanded separately and must not soak up IK motion.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pinocchio as pin


class RobotModelError(ValueError):
    """The robot description cannot be found or does not have the requested frame/joints."""


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """Where a known robot's URDF lives and which frame/joints scfl uses."""

    urdf: str  # "project:<file>" (urdf/ of this package) or "erd:<path in example-robot-data>"
    ee_frame: str
    locked_joints: tuple[str, ...] = ()
    home: tuple[float, ...] | None = None  # a comfortable "ready" posture


PANDA_HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
PANDA_FINGERS = ("panda_finger_joint1", "panda_finger_joint2")

KNOWN_ROBOTS: dict[str, RobotSpec] = {
    # The project's own copy (urdf/panda.urdf), the default.
    "panda": RobotSpec("project:panda.urdf", "panda_hand_tcp", PANDA_FINGERS, PANDA_HOME),
    # The same robot read straight from the example-robot-data wheel.
    "panda-erd": RobotSpec(
        "erd:robots/panda_description/urdf/panda.urdf", "panda_hand_tcp", PANDA_FINGERS, PANDA_HOME
    ),
}


def project_urdf_dir() -> Path:
    """``urdf/`` of the checkout, or of the installed ROS share directory."""
    from scfl_nodes.core.paths import package_path

    return package_path("urdf")


def example_robot_data_dir() -> Path:
    """Share directory of the ``example-robot-data`` wheel (it ships data only, no Python module)."""
    try:
        dist = importlib.metadata.distribution("example-robot-data")
    except importlib.metadata.PackageNotFoundError:
        raise RobotModelError("example-robot-data is not installed (pip install example-robot-data)") from None
    path = Path(dist.locate_file("cmeel.prefix/share/example-robot-data"))
    if not path.is_dir():
        raise RobotModelError(f"example-robot-data data directory not found at {path}")
    return path


def resolve_urdf(robot: str) -> tuple[Path, RobotSpec | None]:
    """Map a robot name or URDF path to a file (and its spec, for known names)."""
    spec = KNOWN_ROBOTS.get(robot)
    if spec is None:
        path = Path(robot).expanduser()
        if path.suffix.lower() != ".urdf":
            raise RobotModelError(
                f"unknown robot {robot!r}: use one of {', '.join(KNOWN_ROBOTS)} or a path to a .urdf file"
            )
        if not path.is_file():
            raise RobotModelError(f"URDF file {path} does not exist")
        return path, None
    kind, rel = spec.urdf.split(":", 1)
    base = project_urdf_dir() if kind == "project" else example_robot_data_dir()
    path = base / rel
    if not path.is_file():
        raise RobotModelError(f"URDF for robot {robot!r} not found at {path}")
    return path, spec


class RobotModel:
    """An arm (locked gripper) with a named end-effector frame; thin helpers over Pinocchio."""

    def __init__(self, model: pin.Model, ee_frame: str, name: str = "robot", home: np.ndarray | None = None):
        if not model.existFrame(ee_frame):
            frames = ", ".join(f.name for f in model.frames if f.type == pin.FrameType.BODY)
            raise RobotModelError(f"end-effector frame {ee_frame!r} not in the model; body frames: {frames}")
        self.model = model
        self.data = model.createData()
        self.name = name
        self.ee_frame = ee_frame
        self.ee_frame_id = model.getFrameId(ee_frame)
        self.nq = model.nq
        self.lower = np.array(model.lowerPositionLimit, dtype=float)
        self.upper = np.array(model.upperPositionLimit, dtype=float)
        if model.nq != model.nv or not np.all(np.isfinite(self.lower) & np.isfinite(self.upper)):
            raise RobotModelError("retargeting needs a fixed-base arm with finite joint limits on every joint")
        self.velocity_limit = np.array(model.velocityLimit, dtype=float)
        self.joint_names = [model.names[i] for i in range(1, model.njoints)]
        mid = 0.5 * (self.lower + self.upper)
        self.home = self.clamp(np.asarray(home, dtype=float)) if home is not None else mid

    def clamp(self, q: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(q, self.lower), self.upper)

    def within_limits(self, q: np.ndarray, tol: float = 0.0) -> bool:
        return bool(np.all(q >= self.lower - tol) and np.all(q <= self.upper + tol))

    def random_configuration(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.lower, self.upper)

    def fk(self, q: np.ndarray) -> pin.SE3:
        """End-effector pose in the robot base frame (a fresh SE3)."""
        pin.forwardKinematics(self.model, self.data, q)
        return pin.updateFramePlacement(self.model, self.data, self.ee_frame_id).copy()

    def fk_matrix(self, q: np.ndarray) -> np.ndarray:
        return self.fk(q).homogeneous

    def copy(self) -> "RobotModel":
        """An independent copy (own pin.Data) for use from another thread."""
        return RobotModel(self.model.copy(), self.ee_frame, self.name, self.home)


def load_robot(robot: str = "panda", ee_frame: str | None = None, locked_joints: list[str] | tuple[str, ...] | None = None) -> RobotModel:
    """Load a robot by name (``panda``, ``panda-erd``) or URDF path, gripper joints locked.

    ``ee_frame``/``locked_joints`` default to the known robot's values; for a URDF path,
    ``ee_frame`` is required.
    """
    path, spec = resolve_urdf(robot)
    if ee_frame is None:
        if spec is None:
            raise RobotModelError(f"robot {robot!r} is a URDF path: give its end-effector frame (retarget.ee_frame)")
        ee_frame = spec.ee_frame
    if locked_joints is None:
        locked_joints = spec.locked_joints if spec is not None else ()
    try:
        full = pin.buildModelFromUrdf(str(path))
    except (RuntimeError, ValueError) as exc:
        raise RobotModelError(f"cannot parse URDF {path}: {exc}") from None
    missing = [j for j in locked_joints if not full.existJointName(j)]
    if missing:
        raise RobotModelError(f"locked joint(s) {', '.join(missing)} not in {path.name}")
    if locked_joints:
        ids = [full.getJointId(j) for j in locked_joints]
        q_lock = pin.neutral(full)
        model = pin.buildReducedModel(full, ids, q_lock)
    else:
        model = full
    home = None
    if spec is not None and spec.home is not None and len(spec.home) == model.nq:
        home = np.array(spec.home)
    return RobotModel(model, ee_frame, name=robot, home=home)
