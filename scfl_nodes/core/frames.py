"""The robot's static TF tree (REP-103 / REP-105), pure Python so it is testable without ROS.

    world -> <base_frame> -> <camera_name>_link -> <camera_name>_color_optical_frame

``world`` is the fixed frame (REP-105), the robot base is placed in it by configurable
extrinsics, the camera body frame (x forward, y left, z up: REP-103) is placed on the base by
the camera extrinsics, and the optical frame (z forward, x right, y down) is the fixed rotation
realsense-ros also publishes, so images and CameraInfo have a frame rviz and tf2 can resolve.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

#: camera body frame -> optical frame (rpy = -pi/2, 0, -pi/2), quaternion x, y, z, w
OPTICAL_ROTATION = (-0.5, 0.5, -0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class StaticTransform:
    parent: str
    child: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # x, y, z, w


def quaternion_from_rpy(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """Fixed-axis roll, pitch, yaw (ROS / URDF convention) -> unit quaternion (x, y, z, w)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def pose_transform(parent: str, child: str, xyz_rpy: Sequence[float]) -> StaticTransform:
    """``[x, y, z, roll, pitch, yaw]`` (metres, radians) of ``child`` in ``parent``."""
    if len(xyz_rpy) != 6:
        raise ValueError(f"pose of {child} in {parent} must be [x, y, z, roll, pitch, yaw], got {list(xyz_rpy)}")
    x, y, z, roll, pitch, yaw = (float(v) for v in xyz_rpy)
    return StaticTransform(parent, child, (x, y, z), quaternion_from_rpy(roll, pitch, yaw))


def camera_frames(camera_name: str) -> tuple[str, str]:
    """(camera body frame, colour optical frame) as realsense-ros names them."""
    return f"{camera_name}_link", f"{camera_name}_color_optical_frame"


def robot_static_tree(world_frame: str, base_frame: str, base_in_world: Sequence[float], camera_name: str,
                      camera_in_base: Sequence[float]) -> list[StaticTransform]:
    """The static transforms of one robot with one camera (see module docstring)."""
    link, optical = camera_frames(camera_name)
    return [
        pose_transform(world_frame, base_frame, base_in_world),
        pose_transform(base_frame, link, camera_in_base),
        StaticTransform(link, optical, (0.0, 0.0, 0.0), OPTICAL_ROTATION),
    ]


def reachable_from(root: str, transforms: Sequence[StaticTransform]) -> set[str]:
    """Every frame connected to ``root`` through ``transforms`` (parent -> child edges)."""
    children: dict[str, list[str]] = {}
    for t in transforms:
        children.setdefault(t.parent, []).append(t.child)
    seen, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen
