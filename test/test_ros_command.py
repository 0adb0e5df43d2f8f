"""command_node in its own process: final action + /joint_states -> Twist, JointTrajectory, gripper.

Checked with real Pinocchio forward kinematics on the URDF: the commanded joints move the end
effector by the commanded delta; limits hold for huge and NaN actions; missing or stale joint
states give no command and diagnostics ERROR; dynamic parameters change through the real
rcl_interfaces SetParameters service and bad values are refused with a reason.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from sched_util import thread_scheduling

pytestmark = pytest.mark.timeout(300)

RATE_HZ = 50.0


class JointStatePublisher:
    """A robot driver stand-in in the test process: publishes a posture at 50 Hz until stopped."""

    def __init__(self, ros, names, q):
        from sensor_msgs.msg import JointState

        self._JointState, self.names, self.q = JointState, list(names), list(q)
        self.pub = ros.publisher(JointState, "/joint_states")
        self.ros = ros
        self.running = threading.Event()
        self.running.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.running.is_set():
                msg = self._JointState(name=self.names, position=[float(v) for v in self.q])
                msg.header.stamp = self.ros.node.get_clock().now().to_msg()
                self.pub.publish(msg)
            time.sleep(0.02)

    def close(self):
        self._stop.set()
        self._thread.join(2)


def _action(values, cycle):
    from scfl_interfaces.msg import ResidualAction

    return ResidualAction(action=[float(v) for v in values], cycle=cycle)


def test_command_node_kinematics_limits_staleness_and_dynamic_params(tmp_path):
    from scfl_nodes.core.retarget import load_robot
    from scfl_nodes.nodes.testing import RosHarness

    robot = load_robot("panda")
    names = list(robot.joint_names) + ["panda_finger_joint1", "panda_finger_joint2"]
    q_home = np.asarray(robot.home)

    with RosHarness(tmp_path) as ros:
        from geometry_msgs.msg import TwistStamped
        from scfl_interfaces.msg import ResidualAction
        from trajectory_msgs.msg import JointTrajectory

        # a generous staleness limit: a loaded test machine must not starve the 50 Hz publisher into it
        node = ros.start("command_node", {"control_rate_hz": RATE_HZ, "max_joint_state_age_s": 1.0})
        arm = ros.subscribe(JointTrajectory, "/joint_trajectory_controller/joint_trajectory")
        grip = ros.subscribe(JointTrajectory, "/gripper_controller/joint_trajectory")
        twists = ros.subscribe(TwistStamped, "/servo_node/delta_twist_cmds")
        actions = ros.publisher(ResidualAction, "/scfl/action")

        def diag_has(level: int, text: str):
            return any(s.name.endswith("/command_node") and s.level == bytes([level]) and text in s.message
                       for s in ros.diagnostics())

        # 1. no joint states at all -> ERROR, and actions produce no command
        ros.wait_for(lambda: diag_has(2, "no joint states"), 90, "ERROR without joint states")
        ros.wait_for(lambda: actions.get_subscription_count() > 0, 30, "command_node subscribed to scfl/action")
        for i in range(5):
            actions.publish(_action([0.3, 0.2, -0.2, 1.0], i))
            time.sleep(0.05)
        time.sleep(1.0)
        assert not arm and not twists and not grip, "commanded without joint states"

        # thread_priority (config/nodes.yaml: 50) puts EVERY thread of the process, DDS listeners
        # included, under SCHED_FIFO -- or says on /diagnostics why not
        ros.wait_for(lambda: any(s.name.endswith("/command_node") and any(kv.key == "scheduling" for kv in s.values)
                                 for s in ros.diagnostics()), 30, "command_node's scheduling on /diagnostics")
        scheduling = next(kv.value for s in ros.diagnostics() if s.name.endswith("/command_node")
                          for kv in s.values if kv.key == "scheduling")
        threads = thread_scheduling(node.proc.pid)
        policies = {policy for policy, _ in threads.values()}
        if scheduling.startswith("SCHED_FIFO"):
            assert scheduling == "SCHED_FIFO priority 50"
            assert policies == {os.SCHED_FIFO} and len(threads) > 1, (scheduling, policies)
            assert {prio for _, prio in threads.values()} == {50}
        else:  # no right to real-time scheduling here: normal threads and the reason
            assert "refused" in scheduling and policies == {os.SCHED_OTHER}, (scheduling, policies)

        # 2. fresh joint states: one action -> one command of each kind
        js = JointStatePublisher(ros, names, list(q_home) + [0.02, 0.02])
        try:
            ros.wait_for(lambda: diag_has(0, ""), 30, "OK once joint states arrive")
            action = [0.3, 0.2, -0.2, 1.0]
            stamped = _action(action, 10)
            stamped.header.stamp.sec, stamped.header.stamp.nanosec = 1234, 5678
            actions.publish(stamped)
            ros.wait_for(lambda: arm and twists and grip, 30, "commands for one action")
            traj, twist, gtraj = arm[-1], twists[-1], grip[-1]
            # the twist carries the answered action's stamp; the trajectory starts on receipt (stamp 0)
            assert (twist.header.stamp.sec, twist.header.stamp.nanosec) == (1234, 5678)
            assert (traj.header.stamp.sec, traj.header.stamp.nanosec) == (0, 0)
            assert traj.joint_names == list(robot.joint_names) and len(traj.points) == 1
            assert traj.header.frame_id == twist.header.frame_id == "panda_link0"
            point = traj.points[0]
            assert point.time_from_start.sec == 0 and point.time_from_start.nanosec == int(1e9 / RATE_HZ)
            q_cmd = np.array(point.positions)
            # the commanded delta: Meta-World (x right, y forward) -> REP-103 base (x forward, y left)
            mw = np.array(action[:3]) * 0.01
            delta = np.array([mw[1], -mw[0], mw[2]])
            v = twist.twist.linear
            np.testing.assert_allclose([v.x, v.y, v.z], delta * RATE_HZ, atol=1e-9)
            moved = robot.fk(q_cmd).translation - robot.fk(q_home).translation
            np.testing.assert_allclose(moved, delta, atol=2e-4)
            assert np.all(np.abs(q_cmd - q_home) * RATE_HZ <= 0.5 * robot.velocity_limit + 1e-9)
            assert gtraj.joint_names == ["panda_finger_joint1"] and gtraj.points[0].positions[0] == 0.0  # +1 = closed
            # what the stage adds (action received -> commands published), measured in the node
            ros.wait_for(lambda: any(s.name.endswith("/command_node") and any(
                kv.key == "stage_latency_ms" and kv.value.startswith("median ") for kv in s.values)
                for s in ros.diagnostics()), 30, "command_node's stage latency on /diagnostics")

            # 3. huge actions: limits hold; NaN: no command and ERROR
            n_before = len(arm)
            for i, a in enumerate(([1e12, -1e12, 1e12, 1e12], [-1e30, 1e30, -1e30, -1e30])):
                actions.publish(_action(a, 20 + i))
            ros.wait_for(lambda: len(arm) >= n_before + 2, 30, "commands for huge actions")
            for t in arm[n_before:]:
                q = np.array(t.points[0].positions)
                assert np.all(q >= robot.lower) and np.all(q <= robot.upper)
                assert np.all(np.abs(q - q_home) * RATE_HZ <= 0.5 * robot.velocity_limit + 1e-9)
            for t in grip:
                assert 0.0 <= t.points[0].positions[0] <= 0.04
            for t in twists:
                assert np.linalg.norm([t.twist.linear.x, t.twist.linear.y, t.twist.linear.z]) <= 0.25 + 1e-9
            n_before = len(arm)
            actions.publish(_action([float("nan"), 0.0, 0.0, 0.0], 30))
            ros.wait_for(lambda: diag_has(2, "NaN"), 30, "ERROR for a NaN action")
            time.sleep(0.5)
            assert len(arm) == n_before

            # 4. dynamic parameters through rcl_interfaces/SetParameters from this process
            ok = ros.set_parameters("/command_node", control_rate_hz=25.0)
            assert ok[0].successful, ok[0].reason
            actions.publish(_action([0.0, 0.1, 0.0, 0.0], 31))
            ros.wait_for(lambda: len(arm) > n_before, 30, "command after the rate change")
            assert arm[-1].points[0].time_from_start.nanosec == int(1e9 / 25.0)  # took effect, no restart
            v = twists[-1].twist.linear
            assert v.x == pytest.approx(0.001 * 25.0)
            bad = ros.set_parameters("/command_node", velocity_scale=5.0)
            assert not bad[0].successful and "velocity_scale" in bad[0].reason, bad[0].reason
            read_only = ros.set_parameters("/command_node", robot="kuka")
            assert not read_only[0].successful and "read-only" in read_only[0].reason.lower(), read_only[0].reason
            wrong_type = ros.set_parameters("/command_node", enabled="yes")
            assert not wrong_type[0].successful and wrong_type[0].reason

            # 5. the driver stops: stale joint states -> no command, ERROR
            js.running.clear()
            ros.wait_for(lambda: diag_has(2, "stale"), 30, "ERROR for stale joint states")
            n_before = len(arm)
            actions.publish(_action([0.0, 0.1, 0.0, 0.0], 40))
            time.sleep(1.0)
            assert len(arm) == n_before, "commanded on stale joint states"
        finally:
            js.close()
        codes = ros.close()
    assert codes["command_node"] == 0
