"""Object-centric transforms (paper 5.1): invariance of the hand-object relation, input validation."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scfl_nodes.core.retarget.transforms import (
    TransformError,
    ee_targets,
    hand_in_object,
    invert,
    object_trajectory_in_robot_scene,
    pose_from_xyz_rpy,
    retarget_poses,
    validate_poses,
)


def random_poses(rng, n, scale=1.0):
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = Rotation.random(n, random_state=rng.integers(1 << 31)).as_matrix()
    out[:, :3, 3] = rng.uniform(-scale, scale, size=(n, 3))
    return out


def test_hand_object_relation_preserved_under_random_object_motions():
    rng = np.random.default_rng(0)
    hand_w = random_poses(rng, 50)
    obj_w = random_poses(rng, 50)  # the object moves during the human demo
    rel = np.linalg.inv(obj_w) @ hand_w  # reference computed independently with a general inverse
    np.testing.assert_allclose(hand_in_object(hand_w, obj_w), rel, atol=1e-12)
    for _ in range(100):
        obj_robot = random_poses(rng, 1, scale=2.0)[0]
        targets = retarget_poses(hand_w, obj_w, obj_robot)
        obj_robot_traj = object_trajectory_in_robot_scene(obj_w, obj_robot)
        # the robot-scene object starts at the given pose and follows the human object's motion
        np.testing.assert_allclose(obj_robot_traj[0], obj_robot, atol=1e-12)
        recovered = np.linalg.inv(obj_robot_traj) @ targets
        assert np.abs(recovered - rel).max() < 1e-9


def test_static_object_and_gripper_offset():
    rng = np.random.default_rng(1)
    hand_w = random_poses(rng, 20)
    obj_w = random_poses(rng, 1)[0]
    obj_robot = random_poses(rng, 1)[0]
    offset = pose_from_xyz_rpy([0.0, 0.0, 0.1, 0.0, 0.0, np.pi / 2])
    targets = retarget_poses(hand_w, obj_w, obj_robot, hand_to_gripper=offset)
    expected = obj_robot @ np.linalg.inv(obj_w) @ hand_w @ offset
    assert np.abs(targets - expected).max() < 1e-9
    # the relation of the *hand* (offset removed) to the object is the human's one
    hand_robot = targets @ np.linalg.inv(offset)
    assert np.abs(np.linalg.inv(obj_robot) @ hand_robot - np.linalg.inv(obj_w) @ hand_w).max() < 1e-9


def test_invert_is_exact_inverse():
    poses = random_poses(np.random.default_rng(2), 10, scale=5.0)
    assert np.abs(invert(poses) @ poses - np.eye(4)).max() < 1e-12


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((4, 4), np.nan), "NaN or inf"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), "reflection"),
        (np.diag([2.0, 1.0, 1.0, 1.0]), "not orthonormal"),
        (np.eye(3), "expected shape"),
        (np.vstack([np.eye(4)[:3], [0, 0, 1, 1]]), "last row"),
    ],
)
def test_invalid_poses_are_rejected_with_clear_errors(bad, message):
    with pytest.raises(TransformError, match=message):
        hand_in_object(bad, np.eye(4))
    with pytest.raises(TransformError, match=message):
        ee_targets(np.eye(4), bad)


def test_error_names_the_bad_time_step():
    poses = np.tile(np.eye(4), (5, 1, 1))
    poses[3, 0, 0] = np.inf
    with pytest.raises(TransformError, match=r"hand\[3\]"):
        validate_poses(poses, "hand")


def test_mismatched_trajectory_lengths():
    with pytest.raises(TransformError, match="need equal or 1"):
        hand_in_object(np.tile(np.eye(4), (5, 1, 1)), np.tile(np.eye(4), (3, 1, 1)))


def test_pose_from_numbers():
    np.testing.assert_allclose(pose_from_xyz_rpy([1, 2, 3])[:3, 3], [1, 2, 3])
    quat = pose_from_xyz_rpy([0, 0, 0, np.cos(0.25), 0, 0, np.sin(0.25)])  # 0.5 rad about z
    np.testing.assert_allclose(quat[:3, :3], Rotation.from_euler("z", 0.5).as_matrix(), atol=1e-12)
    with pytest.raises(TransformError, match="unit norm"):
        pose_from_xyz_rpy([0, 0, 0, 2, 0, 0, 0])
    with pytest.raises(TransformError, match="3 \\(xyz\\)"):
        pose_from_xyz_rpy([0, 0])
