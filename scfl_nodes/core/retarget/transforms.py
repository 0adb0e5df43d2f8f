"""Object-centric transforms (paper 5.1, OKAMI): keep the hand pose relative to the object.

    T_h^o = (T_o^w)^-1 · T_h^w          recorded in the human scene
    T_ee  = T_o^w' · T_h^o · T_hand^ee  applied in the robot scene

All functions take single poses (4, 4) or trajectories (T, 4, 4) and validate them first:
a non-rigid matrix would silently skew the robot target, so it is an error, not a warning.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


class TransformError(ValueError):
    """A pose is not a finite rigid transform (proper rotation, last row 0 0 0 1)."""


def validate_poses(poses, name: str = "pose", tol: float = 1e-6) -> np.ndarray:
    """Return ``poses`` as float64 (T, 4, 4) (a single (4, 4) becomes T=1) or raise TransformError."""
    arr = np.asarray(poses, dtype=float) if not isinstance(poses, np.ndarray) else poses.astype(float, copy=False)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise TransformError(f"{name}: expected shape (4, 4) or (T, 4, 4), got {np.shape(poses)}")
    if arr.shape[0] == 0:
        raise TransformError(f"{name}: empty trajectory")
    finite = np.isfinite(arr).all(axis=(1, 2))
    if not finite.all():
        raise TransformError(f"{name}[{int(np.argmin(finite))}]: contains NaN or inf")
    bottom = np.abs(arr[:, 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1)
    if (bottom > tol).any():
        i = int(np.argmax(bottom))
        raise TransformError(f"{name}[{i}]: last row must be [0 0 0 1], got {arr[i, 3].tolist()}")
    rot = arr[:, :3, :3]
    ortho = np.abs(np.einsum("tji,tjk->tik", rot, rot) - np.eye(3)).max(axis=(1, 2))
    if (ortho > tol).any():
        i = int(np.argmax(ortho))
        raise TransformError(f"{name}[{i}]: rotation is not orthonormal (|R^T R - I| = {ortho[i]:.2g})")
    det = np.linalg.det(rot)
    if (det < 0).any():
        i = int(np.argmin(det))
        raise TransformError(f"{name}[{i}]: rotation is a reflection (det = {det[i]:.3g}), not a proper rotation")
    return arr


def invert(poses: np.ndarray) -> np.ndarray:
    """Exact inverse of rigid transforms (R^T, -R^T p) for (..., 4, 4) arrays."""
    rot_t = np.swapaxes(poses[..., :3, :3], -1, -2)
    out = np.zeros_like(poses)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_t, poses[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def _broadcast(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise TransformError(f"{names[0]} has {a.shape[0]} poses but {names[1]} has {b.shape[0]} (need equal or 1)")
    return a, b


def hand_in_object(hand_world, object_world) -> np.ndarray:
    """T_h^o = (T_o^w)^-1 · T_h^w for every time step; the object may be static (one pose) or move."""
    hand = validate_poses(hand_world, "hand pose T_h^w")
    obj = validate_poses(object_world, "object pose T_o^w")
    hand, obj = _broadcast(hand, obj, ("hand pose", "object pose"))
    return invert(obj) @ hand


def ee_targets(hand_object, object_world_robot, hand_to_gripper=None) -> np.ndarray:
    """T_ee = T_o^w' · T_h^o · T_hand^ee: end-effector targets in the robot scene.

    ``hand_to_gripper`` is the fixed pose of the gripper frame in the hand frame (identity if
    None): it maps the human hand's axis convention onto the robot's end-effector frame.
    """
    rel = validate_poses(hand_object, "hand-in-object T_h^o")
    obj = validate_poses(object_world_robot, "robot-scene object pose T_o^w")
    rel, obj = _broadcast(rel, obj, ("hand-in-object", "robot-scene object pose"))
    out = obj @ rel
    if hand_to_gripper is not None:
        out = out @ validate_poses(hand_to_gripper, "hand_to_gripper")[0]
    return out


def object_trajectory_in_robot_scene(object_world_human, object_world_robot) -> np.ndarray:
    """Robot-scene object poses that replay the human scene's object motion from the robot-scene
    start pose: T_o^w'(t) = T_o^w'(0) · (T_o^w(0))^-1 · T_o^w(t). A static object stays put."""
    human = validate_poses(object_world_human, "object pose T_o^w")
    robot = validate_poses(object_world_robot, "robot-scene object pose T_o^w")
    if robot.shape[0] != 1:
        return robot  # the caller already knows the whole robot-scene object trajectory
    return robot[0] @ invert(human[0]) @ human


def retarget_poses(hand_world, object_world_human, object_world_robot, hand_to_gripper=None) -> np.ndarray:
    """Whole-trajectory object-centric retargeting of hand poses into robot end-effector targets.

    A single robot-scene object pose is the object's pose at the start; if the object moves in
    the human demo, it moves the same way (relative to its start) in the robot scene."""
    object_robot = object_trajectory_in_robot_scene(object_world_human, object_world_robot)
    return ee_targets(hand_in_object(hand_world, object_world_human), object_robot, hand_to_gripper)


def pose_from_xyz_rpy(values) -> np.ndarray:
    """4x4 from ``[x, y, z]``, ``[x, y, z, roll, pitch, yaw]`` (rad, extrinsic xyz) or
    ``[x, y, z, qw, qx, qy, qz]``."""
    v = np.asarray(values, dtype=float).ravel()
    if not np.isfinite(v).all():
        raise TransformError(f"pose values must be finite, got {v.tolist()}")
    out = np.eye(4)
    if v.size == 3:
        pass
    elif v.size == 6:
        out[:3, :3] = Rotation.from_euler("xyz", v[3:]).as_matrix()
    elif v.size == 7:
        quat = v[3:]
        norm = np.linalg.norm(quat)
        if abs(norm - 1.0) > 1e-3:
            raise TransformError(f"quaternion (qw, qx, qy, qz) must have unit norm, got norm {norm:.4g}")
        out[:3, :3] = Rotation.from_quat(np.r_[quat[1:], quat[0]] / norm).as_matrix()
    else:
        raise TransformError(f"pose needs 3 (xyz), 6 (xyz rpy) or 7 (xyz qw qx qy qz) numbers, got {v.size}")
    out[:3, 3] = v[:3]
    return out


def pose_to_xyz_quat(poses: np.ndarray) -> np.ndarray:
    """(T, 4, 4) -> (T, 7) as [x, y, z, qw, qx, qy, qz] (scalar-first, like Pinocchio/ROS order aside)."""
    poses = np.asarray(poses, dtype=float).reshape(-1, 4, 4)
    quat = Rotation.from_matrix(poses[:, :3, :3]).as_quat()  # x y z w
    return np.concatenate([poses[:, :3, 3], quat[:, 3:], quat[:, :3]], axis=1)


def pose_errors(actual: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position error (m) and rotation angle error (rad) between pose arrays (..., 4, 4)."""
    pos = np.linalg.norm(actual[..., :3, 3] - target[..., :3, 3], axis=-1)
    rel = np.einsum("...ji,...jk->...ik", actual[..., :3, :3], target[..., :3, :3])
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    skew = np.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]], -1)
    sin = np.linalg.norm(skew, axis=-1) / 2.0
    return pos, np.arctan2(sin, cos)  # accurate for small angles too (arccos is not)
