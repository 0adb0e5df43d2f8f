"""bag_player: replay a rosbag2 (sqlite3 or mcap) onto live topics, honouring recorded timing.

rosbag2's ``ros2 bag play`` is not installable from PyPI; this node reads bags with ``rosbags``
(:mod:`scfl_nodes.core.rosbag_io`) and publishes each message at
``start + (t_msg - t_first) / rate`` on a wall-clock schedule. Messages with a
``std_msgs/Header`` are restamped by the same offset (``restamp``), so stamps look live and
topics recorded together keep identical stamps (vla_node pairs image and state by stamp).
Optionally publishes ``/clock`` with the recorded time for ``use_sim_time`` consumers.

Bags recorded on real robots (``ros2 bag record -a`` with realsense-ros) carry types this
machine has no Python message class for (``realsense2_camera_msgs/msg/Metadata``,
``tf2_msgs/msg/TFMessage`` where tf2_msgs is not built): their definitions stored in the bag
are registered (:func:`scfl_nodes.core.rosbag_io.bag_types`), and a topic that still cannot be
published is skipped with one warning -- playback never aborts on a type. Topics recorded
transient-local (``/tf_static``) are replayed transient-local. ``sensor_msgs/CompressedImage``
topics ``X/compressed`` are also republished decoded as ``sensor_msgs/Image`` on ``X`` (like
image_transport's republish) when the bag has no raw ``X``, so the graph's default image
topic works for compressed recordings.
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path

from rclpy.node import Node

from scfl_nodes.core.paths import package_path
from scfl_nodes.nodes.common import (
    Diagnostics,
    NodeConfigError,
    Param,
    declare_params,
    latched_qos,
    run_node,
)

DEFAULT_BAG = package_path("test/data/demo_bag")  # installed as share/scfl_nodes/data/demo_bag

PARAMS = [
    Param("bag_path", "", "rosbag2 directory to play (sqlite3 or mcap); empty = the bundled demo bag"),
    Param("rate", 1.0, "playback speed factor (2.0 = twice as fast)", min=0.01, max=100.0),
    Param("loop", False, "restart from the beginning when the bag ends"),
    Param("start_delay_s", 1.0, "wait this long before the first message (lets subscribers connect)", min=0.0, max=60.0),
    Param("topics", [""], "topics to play; [''] or [] = all topics in the bag"),
    Param("restamp", True, "shift header stamps by (playback start - recorded start) so they look live"),
    Param("publish_clock", False, "publish /clock with the recorded time (for use_sim_time consumers)"),
    Param("wait_for_subscribers", [""], "topics that must each have a subscriber before playback starts"),
    Param("wait_timeout_s", 30.0, "give up waiting for subscribers after this long (then play anyway)", min=0.0, max=3600.0),
    Param("exit_when_done", True, "exit the process after the last message (ignored with loop)"),
    Param("decompress_images", True, "republish CompressedImage topics X/compressed decoded as Image on X"),
]


def message_class(msgtype: str):
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class BagPlayer(Node):
    def __init__(self):
        super().__init__("bag_player")
        from rclpy.serialization import deserialize_message

        from scfl_nodes.core import rosbag_io

        self.p = declare_params(self, PARAMS)
        self.diag = Diagnostics(self, "bag_player")
        self.finished = threading.Event()
        path = Path(self.p["bag_path"]) if self.p["bag_path"] else DEFAULT_BAG
        try:
            info = rosbag_io.bag_info(path)
        except (rosbag_io.BagError, OSError) as exc:
            raise NodeConfigError(f"parameter 'bag_path': {exc}") from None
        wanted = [t for t in self.p["topics"] if t]
        unknown = sorted(set(wanted) - set(info["topics"]))
        if unknown:
            raise NodeConfigError(f"parameter 'topics': not in {path}: {', '.join(unknown)}")
        self.path, self.info = path, info
        self._deserialize = deserialize_message
        self._types = rosbag_io.bag_types(path)
        latched = rosbag_io.latched_topics(path) | {"/tf_static"}
        self._pubs, self._classes, self._has_header, self._decompress = {}, {}, {}, {}
        self.skipped: dict[str, str] = {}
        for topic in wanted or sorted(info["topics"]):
            msgtype = info["topics"][topic][0]
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError):
                why = self._types.untyped.get(topic) or f"{msgtype} has no ROS 2 Python message class here (decodable offline from the bag's definition)"
                self.skipped[topic] = why
                self.get_logger().warning(f"skipping {topic}: {why}")
                continue
            qos = latched_qos() if topic in latched or topic.endswith("/instruction") else 10
            # relative name: under a launch namespace the replay lands in that namespace
            self._pubs[topic] = self.create_publisher(cls, topic.lstrip("/"), qos)
            self._classes[topic] = cls
            self._has_header[topic] = "header" in cls.get_fields_and_field_types()
            raw = topic.removesuffix("/compressed")
            if (self.p["decompress_images"] and msgtype == "sensor_msgs/msg/CompressedImage" and raw != topic
                    and raw not in info["topics"]):
                from sensor_msgs.msg import Image

                self._decompress[topic] = self.create_publisher(Image, raw.lstrip("/"), 10)
        self._topics = list(self._pubs)
        if self.skipped:
            self.diag.update(skipped_topics=", ".join(sorted(self.skipped)))
        self._clock_pub = None
        if self.p["publish_clock"]:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.published = 0
        self.get_logger().info(
            f"playing {path} ({info['storage']}, {info['message_count']} messages, {info['duration_s']:.1f} s) "
            f"at rate {self.p['rate']} on {len(self._topics)} topics"
        )
        self.diag.set(Diagnostics.OK, "ready", bag=str(path), storage=info["storage"])
        self._thread = threading.Thread(target=self._play_forever, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _wait_for_subscribers(self) -> None:
        topics = [t for t in self.p["wait_for_subscribers"] if t]
        deadline = time.monotonic() + self.p["wait_timeout_s"]
        while topics and time.monotonic() < deadline and not self._stop.is_set():
            missing = [t for t in topics if self.count_subscribers(t) == 0]
            if not missing:
                return
            time.sleep(0.05)
        if topics and not self._stop.is_set():
            self.get_logger().warning(f"playing although nobody subscribed to some of {topics}")

    def _play_forever(self) -> None:
        try:
            self._wait_for_subscribers()
            if self._stop.wait(self.p["start_delay_s"]):
                return
            while not self._stop.is_set():
                self._play_once()
                if not self.p["loop"]:
                    break
            self.get_logger().info(f"done: published {self.published} messages")
            self.diag.set(Diagnostics.OK, "playback finished", published=self.published)
        except Exception as exc:  # keep the process alive long enough to report
            self.get_logger().error(f"playback failed: {exc}")
            self.diag.set(Diagnostics.ERROR, f"playback failed: {exc}")
        finally:
            if self.p["exit_when_done"] and not self.p["loop"]:
                time.sleep(0.3)  # let the last messages leave
                self.finished.set()

    def _play_once(self) -> None:
        from scfl_nodes.core import rosbag_io

        rate = self.p["rate"]
        t_first = None
        wall_start = time.monotonic()
        stamp_offset_ns = 0
        for msg in rosbag_io.read_bag(self.path, self._topics):
            if self._stop.is_set():
                return
            if t_first is None:  # wall clock and ROS clock anchored at the same instant
                t_first = msg.timestamp_ns
                wall_start = time.monotonic()
                stamp_offset_ns = self.get_clock().now().nanoseconds - t_first
            due = wall_start + (msg.timestamp_ns - t_first) * 1e-9 / rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            ros_msg = None
            if (self._has_header[msg.topic] and self.p["restamp"]) or msg.topic in self._decompress:
                ros_msg = self._deserialize(msg.data, self._classes[msg.topic])
            if ros_msg is not None and self._has_header[msg.topic] and self.p["restamp"]:
                stamp = ros_msg.header.stamp
                ns = stamp.sec * 1_000_000_000 + stamp.nanosec + stamp_offset_ns
                stamp.sec, stamp.nanosec = divmod(ns, 1_000_000_000)
            self._pubs[msg.topic].publish(ros_msg if ros_msg is not None else msg.data)
            if msg.topic in self._decompress:
                self._publish_decompressed(msg.topic, ros_msg)
            if self._clock_pub is not None:
                from rosgraph_msgs.msg import Clock

                clock = Clock()
                clock.clock.sec, clock.clock.nanosec = divmod(msg.timestamp_ns, 1_000_000_000)
                self._clock_pub.publish(clock)
            self.published += 1
            self.diag.update(published=self.published)

    def _publish_decompressed(self, topic: str, msg) -> None:
        from scfl_nodes.core.perception.image_codec import ImageDecodeError, rgb_frame
        from scfl_nodes.nodes.common import numpy_to_image

        try:
            rgb = rgb_frame(msg)
        except ImageDecodeError as exc:
            self.diag.set(Diagnostics.WARN, f"{topic}: {exc}")
            return
        self._decompress[topic].publish(numpy_to_image(rgb, msg.header.stamp, msg.header.frame_id))

    def shutdown(self) -> None:
        self._stop.set()


def main(args=None) -> int:
    return run_node(BagPlayer, "bag_player", args)


if __name__ == "__main__":
    raise SystemExit(main())
