"""camera_node and vla_node as managed (lifecycle) nodes, and camera QoS as realsense-ros
publishes it, on a real multi-process graph: transitions driven over the lifecycle services,
a missing camera fails configure with a clear error and stays unconfigured, a default-QoS
(reliable) subscriber in another process receives every frame, and best-effort subscribers
(the project's) accept reliable and SensorDataQoS cameras alike."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(600)

SMALL = {"camera_type": "sim", "width": 32, "height": 32, "fps": 10.0}


def _lifecycle(ros):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    def state(node: str) -> str:
        return ros.call(GetState, f"{node}/get_state", GetState.Request(), timeout=120).current_state.label

    def change(node: str, transition: str) -> bool:
        request = ChangeState.Request()
        request.transition.id = getattr(Transition, f"TRANSITION_{transition.upper()}")
        return ros.call(ChangeState, f"{node}/change_state", request, timeout=180).success

    return state, change


def _settled_count(messages: list, quiet_s: float = 1.5) -> int:
    """Wait until no new message arrived for ``quiet_s`` and return the count."""
    count, since = len(messages), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.1)
        if len(messages) != count:
            count, since = len(messages), time.monotonic()
    return count


def test_lifecycle_transitions_and_missing_camera(tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data

    from scfl_nodes.nodes.testing import RosHarness

    with RosHarness(tmp_path / "ros") as ros:
        from sensor_msgs.msg import Image
        from tf2_msgs.msg import TFMessage

        from scfl_interfaces.msg import BaseAction

        state, change = _lifecycle(ros)
        missing = ros.start("camera_node", {"camera_type": "uvc", "device": "/dev/video99", "autostart": False},
                            namespace="missing")
        ros.start("camera_node", {**SMALL, "autostart": False}, namespace="cam")
        ros.start("vla_node", {"autostart": False}, namespace="cam")
        images = ros.subscribe(Image, "/cam/camera/camera/color/image_raw", qos_profile_sensor_data)
        bases = ros.subscribe(BaseAction, "/cam/scfl/base_action", 10)
        tf = ros.subscribe(TFMessage, "/tf_static", QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))

        # a missing camera: configure fails with one clear error, the node stays unconfigured and alive
        assert state("/missing/camera_node") == "unconfigured"
        assert change("/missing/camera_node", "configure") is False
        assert state("/missing/camera_node") == "unconfigured" and missing.alive()
        ros.wait_for(lambda: "configure failed: camera unavailable: cannot open uvc camera /dev/video99" in missing.log(),
                     30, "the configure error in the node's log")
        ros.wait_for(lambda: [s for s in ros.diagnostics() if s.name.endswith("/missing/camera_node")
                              and s.level == bytes([2]) and "still unconfigured" in s.message], 30, "diagnostics ERROR")

        # unconfigured -> inactive: camera open + static TF, but nothing streams
        assert state("/cam/camera_node") == "unconfigured"
        assert change("/cam/camera_node", "configure") and state("/cam/camera_node") == "inactive"
        ros.wait_for(lambda: any(t.child_frame_id == "camera_color_optical_frame" for m in tf for t in m.transforms),
                     60, "/tf_static from the configured camera")
        time.sleep(2.0)
        assert images == []
        # inactive -> active: frames flow
        assert change("/cam/camera_node", "activate") and state("/cam/camera_node") == "active"
        ros.wait_for(lambda: len(images) >= 5, 120, "images from the activated camera")
        # vla_node: configure loads the model, activate infers
        assert state("/cam/vla_node") == "unconfigured"
        assert change("/cam/vla_node", "configure") and state("/cam/vla_node") == "inactive"
        time.sleep(2.0)
        assert bases == []
        assert change("/cam/vla_node", "activate") and state("/cam/vla_node") == "active"
        ros.wait_for(lambda: len(bases) >= 3, 180, "base actions from the activated vla_node")
        # active -> inactive: streaming stops; -> active again: it resumes; cleanup closes the camera
        assert change("/cam/camera_node", "deactivate") and state("/cam/camera_node") == "inactive"
        stopped = _settled_count(images)
        time.sleep(2.0)
        assert len(images) == stopped
        assert change("/cam/camera_node", "activate")
        ros.wait_for(lambda: len(images) >= stopped + 3, 120, "images after re-activation")
        assert change("/cam/camera_node", "deactivate") and change("/cam/camera_node", "cleanup")
        assert state("/cam/camera_node") == "unconfigured"
        assert change("/cam/vla_node", "deactivate") and state("/cam/vla_node") == "inactive"
        codes = ros.close()
    assert set(codes.values()) == {0}, codes


def test_camera_qos_reliable_by_default_and_sensor_data_selectable(tmp_path):
    """realsense-ros publishes reliable: a default-QoS subscriber (rviz, `ros2 topic echo`) gets every
    frame. With qos sensor_data a reliable subscriber gets nothing (incompatible), so the project's
    subscribers are best effort, which matches both."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from scfl_nodes.nodes.testing import RosHarness

    with RosHarness(tmp_path / "ros") as ros:
        from sensor_msgs.msg import CameraInfo, Image

        from scfl_interfaces.msg import BaseAction

        state, change = _lifecycle(ros)
        ros.start("camera_node", {**SMALL, "autostart": False}, namespace="reliable")
        ros.start("camera_node", {**SMALL, "qos": "sensor_data"}, namespace="best_effort")
        ros.start("vla_node", {}, namespace="best_effort")  # the project's (best-effort) image subscriber
        default_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        reliable = ros.subscribe(Image, "/reliable/camera/camera/color/image_raw", default_qos)
        reliable_infos = ros.subscribe(CameraInfo, "/reliable/camera/camera/color/camera_info", default_qos)
        reliable_be = ros.subscribe(Image, "/reliable/camera/camera/color/image_raw", qos_profile_sensor_data)
        be_reliable_sub = ros.subscribe(Image, "/best_effort/camera/camera/color/image_raw", default_qos)
        be_be_sub = ros.subscribe(Image, "/best_effort/camera/camera/color/image_raw", qos_profile_sensor_data)
        bases = ros.subscribe(BaseAction, "/best_effort/scfl/base_action", 10)

        assert change("/reliable/camera_node", "configure")
        # both of our subscriptions matched before the first frame: then "every frame" is well defined
        ros.wait_for(lambda: ros.node.count_publishers("/reliable/camera/camera/color/image_raw") == 1, 60,
                     "the reliable camera's publisher")
        time.sleep(3.0)  # endpoint matching completes shortly after graph discovery
        assert change("/reliable/camera_node", "activate")
        ros.wait_for(lambda: len(reliable) >= 40, 240, "40 frames on the default-QoS subscriber")
        assert change("/reliable/camera_node", "deactivate")
        received = _settled_count(reliable)
        ros.wait_for(lambda: _frames_published(ros, "/reliable/camera_node") >= received, 30,
                     "the camera's frame count on /diagnostics")
        time.sleep(1.5)
        published = _frames_published(ros, "/reliable/camera_node")
        assert received == published == len(reliable_infos), (received, published, len(reliable_infos))
        assert len(reliable_be) > 0  # best effort accepts a reliable publisher
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in reliable]
        assert stamps == sorted(set(stamps))  # in order, no duplicates

        # SensorDataQoS camera: best-effort subscribers (ours, vla_node's) receive, reliable ones cannot
        ros.wait_for(lambda: len(be_be_sub) >= 10, 240, "frames from the sensor_data camera")
        ros.wait_for(lambda: len(bases) >= 3, 240, "vla_node's base actions from the sensor_data camera")
        assert be_reliable_sub == []
        codes = ros.close()
    assert set(codes.values()) == {0}, codes


def _frames_published(ros, node: str) -> int:
    """The camera's own count of published frames (its /diagnostics ``frames`` value)."""
    values = [dict((kv.key, kv.value) for kv in s.values) for s in ros.diagnostics() if s.name.endswith(node)]
    counts = [int(v["frames"]) for v in values if "frames" in v]
    return max(counts) if counts else 0
