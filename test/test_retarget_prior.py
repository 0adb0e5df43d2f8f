"""GMR (Gaussian Mixture Regression) posture prior: fit, predict, save/load, errors; robot loading."""

import numpy as np
import pinocchio as pin
import pytest

from scfl_nodes.core.retarget import PosturePrior, PosturePriorError, RobotModelError, load_robot
from scfl_nodes.core.retarget.posture_prior import sample_natural_postures
from scfl_nodes.core.retarget.robot import resolve_urdf


@pytest.fixture(scope="module")
def robot():
    return load_robot("panda")


@pytest.mark.timeout(120)
def test_fit_predict_save_load(robot, tmp_path):
    ctx, q = sample_natural_postures(robot, 500, seed=1)
    prior = PosturePrior.fit(ctx, q, n_components=4, seed=0, robot=robot)
    ctx_test, q_test = sample_natural_postures(robot, 200, seed=2)
    pred = prior.predict(ctx_test)
    assert pred.shape == q_test.shape
    # regression beats the best constant guess (the training mean posture)
    err_gmr = np.abs(pred - q_test).mean()
    err_mean = np.abs(q.mean(0) - q_test).mean()
    assert err_gmr < 0.9 * err_mean, (err_gmr, err_mean)
    assert all(robot.within_limits(p) for p in pred)
    single = prior.predict(ctx_test[0])
    np.testing.assert_allclose(single, pred[0])
    path = prior.save(tmp_path / "prior.npz")
    loaded = PosturePrior.load(path, robot)
    np.testing.assert_array_equal(loaded.predict(ctx_test), pred)
    assert loaded.joint_names == robot.joint_names


def test_prior_errors(robot, tmp_path):
    ctx, q = sample_natural_postures(robot, 100, seed=3)
    with pytest.raises(PosturePriorError, match="same N"):
        PosturePrior.fit(ctx[:50], q)
    with pytest.raises(PosturePriorError, match="at least"):
        PosturePrior.fit(ctx[:10], q[:10], n_components=5)
    bad = q.copy()
    bad[3, 2] = np.nan
    with pytest.raises(PosturePriorError, match="finite"):
        PosturePrior.fit(ctx, bad)
    with pytest.raises(PosturePriorError, match="joints"):
        PosturePrior.fit(ctx, q[:, :5], n_components=2, robot=robot)
    prior = PosturePrior.fit(ctx, q, n_components=2, robot=robot)
    with pytest.raises(PosturePriorError, match="3 values"):
        prior.predict([0.1, 0.2])
    with pytest.raises(PosturePriorError, match="does not exist"):
        PosturePrior.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(PosturePriorError, match="not a posture prior"):
        PosturePrior.load(tmp_path / "junk.npz")


def test_robot_models(robot, tmp_path):
    assert robot.nq == 7 and robot.ee_frame == "panda_hand_tcp"
    assert robot.joint_names == [f"panda_joint{i}" for i in range(1, 8)]
    # the project's URDF and the example-robot-data wheel's describe the same kinematics
    erd = load_robot("panda-erd")
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = robot.random_configuration(rng)
        np.testing.assert_allclose(robot.fk_matrix(q), erd.fk_matrix(q), atol=1e-12)
    # the TCP is 10.34 cm beyond the hand flange along its z axis
    hand = robot.model.getFrameId("panda_hand")
    pin.forwardKinematics(robot.model, robot.data, robot.home)
    pin.updateFramePlacements(robot.model, robot.data)
    offset = robot.data.oMf[hand].actInv(robot.data.oMf[robot.ee_frame_id]).translation
    np.testing.assert_allclose(offset, [0, 0, 0.1034], atol=1e-9)
    # a URDF path works with an explicit frame; errors are clear
    urdf = resolve_urdf("panda")[0]
    assert urdf.name == "panda.urdf" and urdf.parent.name == "urdf"
    custom = load_robot(str(urdf), ee_frame="panda_hand", locked_joints=["panda_finger_joint1", "panda_finger_joint2"])
    assert custom.nq == 7
    with pytest.raises(RobotModelError, match="end-effector frame"):
        load_robot(str(urdf))
    with pytest.raises(RobotModelError, match="not in the model"):
        load_robot("panda", ee_frame="gripper_tip")
    with pytest.raises(RobotModelError, match="unknown robot"):
        load_robot("ur5e")
    with pytest.raises(RobotModelError, match="does not exist"):
        load_robot(str(tmp_path / "none.urdf"), ee_frame="x")


def test_retargeter_from_config(tmp_path):
    from scfl_nodes.core.config import ConfigError, config_from_dict
    from scfl_nodes.core.retarget import Retargeter, synthetic_pick_demo
    from scfl_nodes.core.retarget.transforms import pose_from_xyz_rpy, retarget_poses

    cfg = config_from_dict({"retarget": {"hand_to_gripper": [0.0, 0.0, 0.02, 0.0, 0.0, 0.3], "posture_weight": 0.0,
                                         "solver": "qp", "max_joint_velocity": 2.0}}).retarget
    retargeter = Retargeter.from_config(cfg)
    assert retargeter.prior is None and retargeter.solver == "qp"
    offset = pose_from_xyz_rpy([0.0, 0.0, 0.02, 0.0, 0.0, 0.3])
    np.testing.assert_allclose(retargeter.hand_to_gripper, offset)
    demo = synthetic_pick_demo(n=12)
    obj = pose_from_xyz_rpy([0.5, 0.0, 0.1])
    result, arrays = retargeter.retarget_demo(demo, obj)
    np.testing.assert_allclose(result.targets, retarget_poses(demo.hand_poses, demo.object_pose, obj, offset), atol=1e-12)
    assert result.all_reachable and "q_gmr" not in arrays
    # a fitted prior file is used when configured
    prior_path = tmp_path / "prior.npz"
    robot = retargeter.robot
    ctx, q = sample_natural_postures(robot, 200, seed=4)
    PosturePrior.fit(ctx, q, n_components=3, robot=robot).save(prior_path)
    with_prior = Retargeter.from_config(config_from_dict({"retarget": {"posture_prior": str(prior_path)}}).retarget)
    assert with_prior.prior is not None and with_prior.prior.gmm.n_components == 3
    for bad in ({"solver": "newton"}, {"hand_to_gripper": [0, 0, 0, 1]}, {"max_joint_velocity": 0},
                {"position_tolerance": -1}, {"unknown_key": 1}):
        with pytest.raises(ConfigError, match="retarget"):
            config_from_dict({"retarget": bad})


def test_urdf_path_robot_from_config():
    """A robot given as a URDF path is configured with its frame and locked gripper joints."""
    from scfl_nodes.core.config import config_from_dict
    from scfl_nodes.core.retarget import Retargeter

    urdf = str(resolve_urdf("panda")[0])
    cfg = config_from_dict({"retarget": {"robot": urdf, "ee_frame": "panda_hand", "posture_weight": 0.0,
                                         "locked_joints": ["panda_finger_joint1", "panda_finger_joint2"]}}).retarget
    retargeter = Retargeter.from_config(cfg)
    assert retargeter.robot.nq == 7 and retargeter.robot.ee_frame == "panda_hand"
    cfg_unlocked = config_from_dict({"retarget": {"robot": urdf, "ee_frame": "panda_hand", "posture_weight": 0.0}})
    assert Retargeter.from_config(cfg_unlocked.retarget).robot.nq == 9  # a bare URDF path locks nothing
