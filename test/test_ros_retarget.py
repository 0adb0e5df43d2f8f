"""retarget_node in its own process: the service answer equals the core Retargeter's result;
rviz topics (latched robot_description, joint states, markers) are published under retarget/,
never on the robot driver's /joint_states and /robot_description."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(240)


def test_retarget_service_matches_core_and_feeds_rviz(tmp_path):
    from scfl_nodes.core.config import load_config
    from scfl_nodes.core.retarget import Retargeter, synthetic_pick_demo
    from scfl_nodes.nodes.common import latched_qos
    from scfl_nodes.nodes.retarget_node import matrix_to_pose
    from scfl_nodes.nodes.testing import RosHarness

    demo = synthetic_pick_demo(n=8, dt=0.1, seed=3)
    obj_demo = demo.object_pose[0]
    obj_robot = obj_demo.copy()
    obj_robot[:3, 3] = [0.5, 0.0, 0.05]  # the object sits elsewhere, in front of the robot
    shift = obj_robot[:3, 3] - obj_demo[:3, 3]

    with RosHarness(tmp_path) as ros:
        ros.start("retarget_node")
        from scfl_interfaces.srv import RetargetDemo
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        req = RetargetDemo.Request(hand_poses=[matrix_to_pose(m) for m in demo.hand_poses],
                                   object_pose_demo=matrix_to_pose(obj_demo),
                                   object_pose_robot=matrix_to_pose(obj_robot), dt=0.5)
        resp = ros.call(RetargetDemo, "/retarget_node/retarget", req, timeout=120)
        # late subscribers still get the transient-local robot_description
        description = ros.subscribe(String, "/retarget/robot_description", latched_qos())
        joints = ros.subscribe(JointState, "/retarget/joint_states")
        markers = ros.subscribe(MarkerArray, "/scfl/retarget_markers", latched_qos())
        ros.wait_for(lambda: description and joints and markers, 30, "rviz topics")
        assert ros.node.count_publishers("/joint_states") == 0  # a robot driver's topics stay untouched
        assert ros.node.count_publishers("/robot_description") == 0

    assert resp.success, resp.message
    core = Retargeter.from_config(load_config().retarget)
    expected = core.human_to_robot(demo.hand_poses, obj_demo, obj_robot, timestamps=np.arange(8) * 0.5)
    q = np.array([p.positions for p in resp.trajectory.points])
    assert resp.trajectory.joint_names == list(core.robot.joint_names)
    np.testing.assert_allclose(q, expected.q, atol=1e-6)
    targets = np.array([[p.position.x, p.position.y, p.position.z] for p in resp.ee_targets.poses])
    np.testing.assert_allclose(targets, expected.targets[:, :3, 3], atol=1e-9)
    # object-centric: the targets moved with the object, relative to the demo hand path
    np.testing.assert_allclose(targets - demo.hand_poses[:, :3, 3], np.tile(shift, (8, 1)), atol=1e-9)
    assert max(resp.position_errors_m) < 2e-3
    assert "<robot" in description[0].data and len(joints[-1].name) == len(core.robot.joint_names)
    ns = {m.ns for m in markers[-1].markers}
    assert {"scfl_ee_targets", "scfl_ee_achieved"} <= ns
