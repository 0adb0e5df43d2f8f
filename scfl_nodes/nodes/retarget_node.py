"""retarget_node: ``~/retarget`` service (scfl_interfaces/RetargetDemo) over the core Retargeter.

Human hand poses + the object's pose in the demo and in the robot's scene -> object-centric
end-effector targets (T_ee = T_o^w' (T_o^w)^-1 T_h^w) -> IK with the GMR posture prior ->
``trajectory_msgs/JointTrajectory``. For rviz it publishes ``retarget/robot_description``
(latched, transient local), ``retarget/joint_states`` (the last retargeted trajectory played
back in a loop, the home posture before) and ``scfl/retarget_markers`` (EE targets and achieved
path). The preview lives under ``retarget/`` so that it never collides with a robot driver's
``joint_states`` / ``robot_description`` (which command_node reads).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from scfl_nodes.nodes.common import Diagnostics, NodeConfigError, Param, declare_params, latched_qos, run_node

PARAMS = [
    Param("config_file", "", "scfl.yaml whose retarget section configures robot, solver and IK; empty = default"),
    Param("robot", "", "override retarget.robot (panda, panda-erd or a .urdf path); empty = from config"),
    Param("solver", "", "override retarget.solver (dls or qp); empty = from config"),
    Param("publish_robot_description", True, "publish the URDF on robot_description_topic (transient local)"),
    Param("robot_description_topic", "retarget/robot_description",
          "URDF of the retargeting preview (own namespace: never the robot driver's robot_description)"),
    Param("joint_states_topic", "retarget/joint_states",
          "joint states of the retargeting preview (own namespace: never the robot driver's joint_states)"),
    Param("base_frame", "world", "frame of EE targets and markers (the robot's base)"),
    Param("playback_rate_hz", 10.0, "rate of the joint_states_topic playback of the last trajectory", min=0.5, max=1000.0),
]


def pose_to_matrix(pose) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    q = pose.orientation
    m = np.eye(4)
    norm = np.linalg.norm([q.x, q.y, q.z, q.w])
    if norm < 1e-9:
        raise ValueError("pose has a zero quaternion")
    m[:3, :3] = Rotation.from_quat([q.x / norm, q.y / norm, q.z / norm, q.w / norm]).as_matrix()
    m[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return m


def matrix_to_pose(m: np.ndarray):
    from geometry_msgs.msg import Pose
    from scipy.spatial.transform import Rotation

    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in m[:3, 3])
    x, y, z, w = Rotation.from_matrix(m[:3, :3]).as_quat()
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = float(x), float(y), float(z), float(w)
    return pose


class RetargetNode(Node):
    def __init__(self):
        super().__init__("retarget_node")
        from scfl_interfaces.srv import RetargetDemo
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        from scfl_nodes.core.config import ConfigError, load_config
        from scfl_nodes.core.retarget import Retargeter, RobotModelError
        from scfl_nodes.core.retarget.robot import resolve_urdf

        self.p = declare_params(self, PARAMS)
        if self.p["solver"] and self.p["solver"] not in ("dls", "qp"):
            raise NodeConfigError(f"parameter 'solver' must be dls or qp (or empty), got {self.p['solver']!r}")
        try:
            cfg = load_config(self.p["config_file"] or None).retarget
            t0 = time.monotonic()
            self.retargeter = Retargeter.from_config(cfg, solver=self.p["solver"] or None, robot=self.p["robot"] or None)
            urdf_path, _ = resolve_urdf(self.p["robot"] or cfg.robot)
        except (ConfigError, RobotModelError, ValueError, OSError) as exc:
            raise NodeConfigError(f"cannot build the retargeter: {exc}") from None
        robot = self.retargeter.robot
        self.get_logger().info(f"retargeting to {robot.name} ({len(robot.joint_names)} joints, ee {robot.ee_frame}, "
                               f"solver {self.retargeter.solver}) ready in {time.monotonic() - t0:.1f} s")
        self.diag = Diagnostics(self, f"retarget:{robot.name}")
        self._JointState = JointState
        self._trajectory = None  # (q (T, n), timestamps (T,))
        self._lock = threading.Lock()
        self._play_index = 0
        if self.p["publish_robot_description"]:
            self.description_pub = self.create_publisher(String, self.p["robot_description_topic"], latched_qos())
            self.description_pub.publish(String(data=urdf_path.read_text()))
        self.joint_pub = self.create_publisher(JointState, self.p["joint_states_topic"], 10)
        self.marker_pub = self.create_publisher(MarkerArray, "scfl/retarget_markers", latched_qos())
        self.create_service(RetargetDemo, "~/retarget", self._on_retarget, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0 / self.p["playback_rate_hz"], self._publish_joint_state,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.requests = 0
        self.diag.set(Diagnostics.OK, "ready")

    def _on_retarget(self, request, response):
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        response.success = False
        n = len(request.hand_poses)
        if n == 0:
            response.message = "hand_poses is empty"
            return response
        try:
            hands = np.stack([pose_to_matrix(p) for p in request.hand_poses])
            obj_demo = pose_to_matrix(request.object_pose_demo)
            obj_robot = pose_to_matrix(request.object_pose_robot)
        except ValueError as exc:
            response.message = f"bad pose: {exc}"
            return response
        dt = request.dt if request.dt > 0 else self.retargeter.default_dt
        t0 = time.perf_counter()
        try:
            result = self.retargeter.human_to_robot(hands, obj_demo, obj_robot, timestamps=np.arange(n) * dt)
        except Exception as exc:
            response.message = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"retargeting failed: {response.message}")
            return response
        elapsed = time.perf_counter() - t0
        traj = JointTrajectory(joint_names=list(self.retargeter.robot.joint_names))
        traj.header.stamp = self.get_clock().now().to_msg()
        traj.header.frame_id = self.p["base_frame"]
        for q, t in zip(result.q, result.timestamps):
            point = JointTrajectoryPoint(positions=[float(v) for v in q])
            point.time_from_start.sec = int(t)
            point.time_from_start.nanosec = int(round((t - int(t)) * 1e9))
            traj.points.append(point)
        response.trajectory = traj
        response.ee_targets.header = traj.header
        response.ee_targets.poses = [matrix_to_pose(m) for m in result.targets]
        response.position_errors_m = [float(e) for e in result.position_error]
        response.success = bool(result.all_reachable)
        response.message = result.summary() + f" ({elapsed:.2f} s)"
        with self._lock:
            self._trajectory = (np.asarray(result.q), np.asarray(result.timestamps))
            self._play_index = 0
        self._publish_markers(result)
        self.requests += 1
        self.diag.update(requests=self.requests, last=response.message)
        if response.success:
            self.diag.set(Diagnostics.OK, "ready")
        else:
            self.diag.set(Diagnostics.WARN, f"last demo had unreachable waypoints: {response.message}")
        self.get_logger().info(f"retargeted {n} frames: {response.message}")
        return response

    def _publish_joint_state(self) -> None:
        robot = self.retargeter.robot
        with self._lock:
            if self._trajectory is None:
                q = np.asarray(robot.home)
            else:
                qs, _ = self._trajectory
                q = qs[self._play_index % len(qs)]
                self._play_index += 1
        msg = self._JointState(name=list(robot.joint_names), position=[float(v) for v in q])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.joint_pub.publish(msg)

    def _publish_markers(self, result) -> None:
        from geometry_msgs.msg import Point
        from visualization_msgs.msg import Marker, MarkerArray

        stamp = self.get_clock().now().to_msg()
        markers = [Marker(action=Marker.DELETEALL)]
        for idx, (ns, poses, rgb) in enumerate((("ee_targets", result.targets, (0.1, 0.9, 0.2)),
                                                 ("ee_achieved", result.achieved, (0.2, 0.4, 1.0)))):
            line = Marker(ns=f"scfl_{ns}", id=idx, type=Marker.LINE_STRIP, action=Marker.ADD)
            line.header.frame_id, line.header.stamp = self.p["base_frame"], stamp
            line.pose.orientation.w = 1.0
            line.scale.x = 0.004
            line.color.r, line.color.g, line.color.b, line.color.a = (*rgb, 1.0)
            line.points = [Point(x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])) for m in poses]
            markers.append(line)
        for i, m in enumerate(result.targets[:: max(1, len(result.targets) // 20)]):
            arrow = Marker(ns="scfl_ee_target_axes", id=100 + i, type=Marker.ARROW, action=Marker.ADD)
            arrow.header.frame_id, arrow.header.stamp = self.p["base_frame"], stamp
            arrow.pose = matrix_to_pose(m)
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.05, 0.005, 0.005
            arrow.color.r, arrow.color.a = 1.0, 0.8
            markers.append(arrow)
        self.marker_pub.publish(MarkerArray(markers=markers))


def main(args=None) -> int:
    return run_node(RetargetNode, "retarget_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
