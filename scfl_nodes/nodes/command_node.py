"""command_node: skill_node's final action -> commands a real arm accepts.

For every ``scfl_interfaces/ResidualAction`` (``scfl/action``) it publishes, from the robot's
current ``joint_states``:

* ``geometry_msgs/TwistStamped``: the end-effector velocity (base frame) as MoveIt Servo
  consumes it (``servo_node/delta_twist_cmds``);
* ``trajectory_msgs/JointTrajectory`` with the URDF's arm joint names and ONE point one control
  period ahead, for a ros2_control ``joint_trajectory_controller``
  (``joint_trajectory_controller/joint_trajectory``): Pinocchio IK from the measured posture,
  inside the URDF position limits and ``velocity_scale`` x the URDF velocity limits;
* the gripper as a second ``JointTrajectory`` for the URDF's (non-mimic) finger joints
  (``gripper_controller/joint_trajectory``).

The maths is :class:`scfl_nodes.core.control.ArmCommander`. Missing or stale joint states,
an unusable joint state or a NaN action -> no command at all and ``/diagnostics`` ERROR (the
controllers then finish the last short command and hold; Servo stops on its command timeout).
"""

from __future__ import annotations

import collections
import math
import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from scfl_nodes.nodes.common import (Diagnostics, NodeConfigError, Param, apply_thread_priority, declare_params,
                                     enable_dynamic_params, run_node, thread_priority_param)

PARAMS = [
    Param("config_file", "", "scfl.yaml whose retarget section names the robot (robot, ee_frame, locked_joints); empty = default"),
    Param("robot", "", "robot name (panda, panda-erd) or .urdf path; empty = retarget.robot of config_file"),
    Param("ee_frame", "", "end-effector frame commanded; empty = retarget.ee_frame or the robot's default"),
    Param("gripper_joints", [""], "URDF gripper joints; [''] = retarget.locked_joints or the robot's default (panda fingers)"),
    Param("base_frame", "", "frame_id of the commands (the planning frame); empty = the URDF's root link"),
    Param("action_topic", "scfl/action", "input: scfl_interfaces/ResidualAction from skill_node"),
    Param("joint_states_topic", "joint_states", "input: sensor_msgs/JointState of the robot driver"),
    Param("twist_topic", "servo_node/delta_twist_cmds", "output: geometry_msgs/TwistStamped for MoveIt Servo"),
    Param("trajectory_topic", "joint_trajectory_controller/joint_trajectory",
          "output: trajectory_msgs/JointTrajectory for the arm's joint_trajectory_controller"),
    Param("gripper_topic", "gripper_controller/joint_trajectory", "output: trajectory_msgs/JointTrajectory for the gripper"),
    Param("publish_twist", True, "publish the TwistStamped output"),
    Param("publish_trajectory", True, "publish the arm JointTrajectory output"),
    Param("publish_gripper", True, "publish the gripper JointTrajectory output"),
    Param("action_frame_rpy", [0.0, 0.0, -math.pi / 2],
          "roll, pitch, yaw (rad) of the action frame in base_frame; default: Meta-World (x right, y forward) "
          "in a REP-103 base (x forward, y left)"),
    Param("enabled", True, "send commands (false: pause; nothing is published)", read_only=False),
    Param("control_rate_hz", 50.0, "actions per second: one action's displacement is spread over 1/rate "
          "(keep equal to skill_node's control_rate_hz)", min=1.0, max=1000.0, read_only=False),
    Param("position_scale", 0.01, "metres of end-effector motion per unit action per cycle (Meta-World: 0.01)",
          min=1e-5, max=0.1, read_only=False),
    Param("max_ee_speed", 0.25, "cap on the commanded end-effector speed (m/s)", min=0.001, max=2.0, read_only=False),
    Param("velocity_scale", 0.5, "fraction of the URDF joint velocity limits a command may use", min=0.01, max=1.0,
          read_only=False),
    thread_priority_param(),
    Param("max_joint_state_age_s", 0.2, "joint states older than this (by arrival time) are stale: no command, ERROR",
          min=0.005, max=10.0, read_only=False),
]


class CommandNode(Node):
    def __init__(self):
        super().__init__("command_node")
        from geometry_msgs.msg import TwistStamped
        from scfl_interfaces.msg import ResidualAction
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from scfl_nodes.core.config import ConfigError, load_config
        from scfl_nodes.core.control import ArmCommander, gripper_joints_from_urdf
        from scfl_nodes.core.control.action_map import ActionMapping
        from scfl_nodes.core.control.arm_command import ArmCommanderSettings
        from scfl_nodes.core.retarget import RobotModelError, load_robot
        from scfl_nodes.core.retarget.robot import resolve_urdf

        self.p = declare_params(self, PARAMS)
        if len(self.p["action_frame_rpy"]) != 3:
            raise NodeConfigError(f"parameter 'action_frame_rpy' needs 3 angles, got {self.p['action_frame_rpy']!r}")
        try:
            cfg = load_config(self.p["config_file"] or None).retarget
            robot_name = self.p["robot"] or cfg.robot
            urdf_path, spec = resolve_urdf(robot_name)
            grippers = [g for g in self.p["gripper_joints"] if g] or list(cfg.locked_joints) or (
                list(spec.locked_joints) if spec is not None else [])
            robot = load_robot(robot_name, ee_frame=self.p["ee_frame"] or cfg.ee_frame or None,
                               locked_joints=grippers)
            gripper = gripper_joints_from_urdf(urdf_path, grippers)
        except (ConfigError, RobotModelError, ValueError, OSError) as exc:
            raise NodeConfigError(f"cannot load the robot: {exc}") from None
        self._ActionMapping, self._Settings = ActionMapping, ArmCommanderSettings
        self.commander = ArmCommander(robot, self._mapping(), gripper, self._settings())
        self.base_frame = self.p["base_frame"] or _urdf_root_link(urdf_path)
        self._TwistStamped, self._JointTrajectory, self._Point = TwistStamped, JointTrajectory, JointTrajectoryPoint
        self.diag = Diagnostics(self, f"command:{robot.name}")
        apply_thread_priority(self, self.diag, self.p["thread_priority"])
        self._state = None  # (arm q, gripper q or None, monotonic arrival time)
        self._state_error = None
        self._lock = threading.Lock()
        self.commands = self.refused = self.saturated = 0
        self._last_action_wall = None
        self._last_failure = None
        # per command: publish time - the action's arrival in this process (DDS reception time,
        # so waiting in the executor counts): what this stage adds, reported on /diagnostics
        self._stage_ms: collections.deque[float] = collections.deque(maxlen=500)

        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(JointState, self.p["joint_states_topic"], self._on_joint_state, 10, callback_group=inputs)
        self.create_subscription(ResidualAction, self.p["action_topic"], self._on_action, 10,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self.twist_pub = self.create_publisher(TwistStamped, self.p["twist_topic"], 10) if self.p["publish_twist"] else None
        self.traj_pub = (self.create_publisher(JointTrajectory, self.p["trajectory_topic"], 10)
                         if self.p["publish_trajectory"] else None)
        self.gripper_pub = (self.create_publisher(JointTrajectory, self.p["gripper_topic"], 10)
                            if self.p["publish_gripper"] and gripper else None)
        self.create_timer(0.5, self._health, callback_group=MutuallyExclusiveCallbackGroup())
        enable_dynamic_params(self, PARAMS, self.p, apply=self._on_params_changed)
        self.get_logger().info(
            f"commanding {robot.name}: {len(robot.joint_names)} arm joints, ee {robot.ee_frame}, gripper "
            f"{', '.join(g.name for g in gripper) or 'none'}, frame {self.base_frame}, {self.p['control_rate_hz']:.0f} Hz")
        self.diag.set(Diagnostics.ERROR, f"no joint states yet on {self.p['joint_states_topic']}: not commanding")

    # ------------------------------------------------------------------ configuration
    def _mapping(self):
        return self._ActionMapping(position_scale=self.p["position_scale"],
                                   frame_rpy=tuple(float(v) for v in self.p["action_frame_rpy"]),
                                   max_speed=self.p["max_ee_speed"])

    def _settings(self):
        return self._Settings(velocity_scale=self.p["velocity_scale"])

    def _on_params_changed(self, changed) -> None:
        if {"position_scale", "max_ee_speed", "velocity_scale"} & set(changed):
            c = self.commander
            # a new commander, swapped in by one assignment: an action in flight uses the old one
            self.commander = type(c)(c.robot, self._mapping(), c.gripper, self._settings())

    # ------------------------------------------------------------------ inputs
    def _on_joint_state(self, msg) -> None:
        from scfl_nodes.core.control import JointStateError, joint_positions_by_name

        now = time.monotonic()
        commander = self.commander
        try:
            q = joint_positions_by_name(msg.name, msg.position, commander.joint_names)
        except JointStateError as exc:
            with self._lock:
                self._state, self._state_error = None, str(exc)
            return
        grip = None
        if commander.gripper_names:
            try:
                grip = joint_positions_by_name(msg.name, msg.position, commander.gripper_names)
            except JointStateError:
                grip = None  # the gripper may publish its own joint states
        with self._lock:
            self._state, self._state_error = (q, grip, now), None

    def _state_problem(self, state) -> str | None:
        if state is None:
            return self._state_error or f"no joint states on {self.p['joint_states_topic']}"
        age = time.monotonic() - state[2]
        self.diag.update(joint_state_age_ms=f"{age * 1e3:.0f}")  # a value: the status message stays stable
        if age > self.p["max_joint_state_age_s"]:
            return f"joint states are stale (older than {self.p['max_joint_state_age_s'] * 1e3:.0f} ms)"
        return None

    def _on_action(self, msg, info) -> None:
        """One final action -> commands. ``info`` (rclpy MessageInfo) has the DDS reception time."""
        from scfl_nodes.core.control import InvalidActionError, JointStateError

        self._last_action_wall = time.monotonic()
        if not self.p["enabled"]:
            return
        with self._lock:
            state = self._state
            problem = self._state_problem(state)
        if problem is not None:  # re-checked by _health: clears by itself when fresh states arrive
            self.refused += 1
            self.diag.set(Diagnostics.ERROR, f"{problem}: not commanding")
            return
        q, grip, _ = state
        period = 1.0 / self.p["control_rate_hz"]
        try:
            cmd = self.commander.command(q, np.asarray(msg.action, dtype=float), period, gripper_measured=grip)
        except (InvalidActionError, JointStateError) as exc:
            self._refuse(f"{exc}: not commanding")
            return
        self._publish(cmd, period, msg.header.stamp, info["received_timestamp"])
        self.commands += 1
        self.saturated += int(cmd.saturated)
        self._last_failure = None
        if cmd.saturated:
            self.diag.set(Diagnostics.WARN, "commands saturated by the joint position/velocity limits")
        elif self.diag.level != Diagnostics.OK:
            self.diag.set(Diagnostics.OK, "commanding")

    def _refuse(self, reason: str) -> None:
        """A refused action: ERROR until the next action is commanded."""
        self.refused += 1
        self._last_failure = reason
        self.diag.set(Diagnostics.ERROR, reason)

    # ------------------------------------------------------------------ outputs
    def _publish(self, cmd, period: float, action_stamp, received_ns: int) -> None:
        """``action_stamp``: the answered action's stamp (skill_node's control cycle). It stamps
        the twist: MoveIt Servo measures a command's staleness from the cycle that made it, and a
        consumer can tell exactly which action a command answers."""
        if self.twist_pub is not None:
            twist = self._TwistStamped()
            twist.header.stamp, twist.header.frame_id = action_stamp, self.base_frame
            twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (float(v) for v in cmd.linear_velocity)
            self.twist_pub.publish(twist)
        if self.traj_pub is not None:
            # stamp 0 = "start when received" (joint_trajectory_controller); positions only, so the
            # controller interpolates linearly at |q_target - q|/period, within the velocity limits
            traj = self._JointTrajectory(joint_names=self.commander.joint_names)
            traj.header.frame_id = self.base_frame
            traj.points = [self._point(cmd.q_target, period)]
            self.traj_pub.publish(traj)
        if self.gripper_pub is not None and cmd.gripper_positions:
            traj = self._JointTrajectory(joint_names=self.commander.gripper_names)
            traj.header.frame_id = self.base_frame
            traj.points = [self._point(cmd.gripper_positions, cmd.gripper_duration_s)]
            self.gripper_pub.publish(traj)
        if received_ns:  # 0: the middleware gave no reception time
            self._stage_ms.append((time.time_ns() - received_ns) / 1e6)

    def _point(self, positions, t: float):
        point = self._Point(positions=[float(v) for v in positions])
        point.time_from_start.sec = int(t)
        point.time_from_start.nanosec = int(round((t - int(t)) * 1e9))
        return point

    def _health(self) -> None:
        with self._lock:
            problem = self._state_problem(self._state)
        self.diag.update(commands=self.commands, refused=self.refused, saturated=self.saturated,
                         enabled=self.p["enabled"], control_rate_hz=self.p["control_rate_hz"])
        stage = np.asarray(self._stage_ms, dtype=float)
        if stage.size:  # the last <= 500 commands: action received -> commands published
            self.diag.update(stage_latency_ms=f"median {np.median(stage):.2f}, p99 {np.percentile(stage, 99):.2f}")
        if problem is not None:
            self.diag.set(Diagnostics.ERROR, f"{problem}: not commanding")
        elif self._last_failure is not None:
            self.diag.set(Diagnostics.ERROR, self._last_failure)
        elif not self.p["enabled"]:
            self.diag.set(Diagnostics.WARN, "paused (enabled: false)")
        elif self.diag.level == Diagnostics.ERROR or self._last_action_wall is None:
            self.diag.set(Diagnostics.OK, "joint states fresh; waiting for actions" if self._last_action_wall is None
                          else "commanding")


def _urdf_root_link(urdf_path) -> str:
    """The URDF's root link (the link that is no joint's child): the arm's base frame."""
    import xml.etree.ElementTree as ET

    root = ET.parse(str(urdf_path)).getroot()
    children = {c.get("link") for j in root.iter("joint") for c in j.iter("child")}
    links = [link.get("name") for link in root.iter("link") if link.get("name") not in children]
    return links[0] if links else "base_link"


def main(args=None) -> int:
    return run_node(CommandNode, "command_node", args, threads=1)


if __name__ == "__main__":
    raise SystemExit(main())
