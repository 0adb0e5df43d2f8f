"""recorder_node: records demonstrations from the running graph into rosbag2 (``rosbags``).

``~/start`` and ``~/stop`` (``std_srvs/Trigger``) open and close one bag per demonstration
under ``recordings_path`` (the response message is the bag's path). While recording, the
graph's own messages are written unchanged (raw CDR, no re-encoding on the robot): the camera
image, ``scfl/base_action`` (base action + observation embedding from vla_node), the
demonstrator's command (``command_type`` twist: a teleop ``geometry_msgs/TwistStamped``;
joints: the commanded ``sensor_msgs/JointState``) and the instruction, plus one JSON message
on ``/scfl/recording_info`` that says how the command maps onto the action space. So each bag
is a self-describing demonstration that ``scfl train-skill`` and trainer_node's ``TrainSkill``
action read directly (scfl_nodes.core.training.recording, docs/demonstrations.md).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from scfl_nodes.nodes.common import (
    Diagnostics,
    NodeConfigError,
    Param,
    declare_params,
    latched_qos,
    run_node,
    sensor_qos,
)

PARAMS = [
    Param("recordings_path", "${SCFL_HOME}/recordings", "directory the demonstration bags are written to"),
    Param("storage", "sqlite3", "rosbag2 storage", choices=("sqlite3", "mcap")),
    Param("base_action_topic", "scfl/base_action", "input: scfl_interfaces/BaseAction (base action + embedding)"),
    Param("command_topic", "scfl/teleop_cmd", "input: the demonstrator's command"),
    Param("command_type", "twist", "twist: geometry_msgs/TwistStamped; joints: sensor_msgs/JointState",
          choices=("twist", "joints")),
    Param("command_fields", [""], "twist: axes in action order (e.g. linear.x); joints: joint names in action "
          "order; [''] = the default twist mapping (linear.x, linear.y, linear.z, angular.z)"),
    Param("command_scale", 1.0, "twist: action = scale * twist axis", min=-1e6, max=1e6),
    Param("image_topic", "camera/camera/color/image_raw", "input: camera image (sensor_msgs/Image)"),
    Param("record_images", True, "also record the camera image (for replay and re-embedding)"),
    Param("instruction_topic", "scfl/instruction", "input: latched std_msgs/String task instruction"),
    Param("max_command_age_s", 0.5, "a base action pairs with a command at most this much older than its image",
          min=0.0, max=60.0),
    Param("max_duration_s", 600.0, "a recording stops by itself after this long", min=0.1, max=86400.0),
]


class RecorderNode(Node):
    def __init__(self):
        super().__init__("recorder_node")
        from geometry_msgs.msg import TwistStamped
        from scfl_interfaces.msg import BaseAction
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from scfl_nodes.core.config import expand_path
        from scfl_nodes.core.training.recording import command_mapping

        self.p = declare_params(self, PARAMS)
        fields = [f for f in self.p["command_fields"] if f]
        try:
            self.mapping = command_mapping(self.p["command_type"], fields, self.p["command_scale"])
        except ValueError as exc:
            raise NodeConfigError(f"parameter 'command_fields': {exc}") from None
        self.root = Path(expand_path(self.p["recordings_path"]))
        self.diag = Diagnostics(self, "recorder")
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="bag-writer", daemon=True)
        self._thread.start()
        self._bag_path: Path | None = None
        self._started = 0.0
        self._counts: dict[str, int] = {}
        self._instruction_raw: bytes | None = None
        self.recordings = 0

        group = MutuallyExclusiveCallbackGroup()  # one writer: callbacks never interleave
        command_type = TwistStamped if self.mapping.kind == "twist" else JointState
        self._subs = {
            "base": self.create_subscription(BaseAction, self.p["base_action_topic"], self._writer_for("base"), 50,
                                             callback_group=group, raw=True),
            "command": self.create_subscription(command_type, self.p["command_topic"], self._writer_for("command"),
                                                50, callback_group=group, raw=True),
            "instruction": self.create_subscription(String, self.p["instruction_topic"], self._on_instruction,
                                                    latched_qos(), callback_group=group, raw=True),
        }
        if self.p["record_images"]:
            self._subs["image"] = self.create_subscription(Image, self.p["image_topic"], self._writer_for("image"),
                                                           sensor_qos(), callback_group=group, raw=True)
        self._types = {"base": "scfl_interfaces/msg/BaseAction", "command": self.mapping.msgtype,
                       "instruction": "std_msgs/msg/String", "image": "sensor_msgs/msg/Image"}
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/start", self._on_start, callback_group=services)
        self.create_service(Trigger, "~/stop", self._on_stop, callback_group=services)
        self.create_timer(0.5, self._check, callback_group=services)
        self.get_logger().info(f"recording demonstrations to {self.root} ({self.p['storage']}); "
                               f"command {self._subs['command'].topic_name} ({self.mapping.kind})")
        self.diag.set(Diagnostics.OK, "idle")

    # ------------------------------------------------------------------ recording
    # The bag is written by ONE thread (SQLite objects may not cross threads, and the executor
    # runs callbacks on any of its threads): callbacks only enqueue raw CDR, in arrival order.
    def _topic(self, key: str) -> str:
        return self._subs[key].topic_name  # fully resolved: /robot1/scfl/base_action

    def _writer_for(self, key: str):
        def write(raw: bytes) -> None:
            with self._lock:
                if self._bag_path is None:
                    return
                self._queue.put(("write", self._topic(key), self.get_clock().now().nanoseconds, raw, self._types[key]))
                self._counts[key] = self._counts.get(key, 0) + 1
        return write

    def _on_instruction(self, raw: bytes) -> None:
        self._instruction_raw = raw
        self._writer_for("instruction")(raw)

    def _write_loop(self) -> None:
        from scfl_nodes.core.rosbag_io import BagWriter, string_message
        from scfl_nodes.core.training.recording import RECORDING_INFO_TOPIC

        writer = None
        while True:
            op = self._queue.get()
            kind = op[0]
            try:
                if kind == "write" and writer is not None:
                    writer.write(*op[1:])
                elif kind == "open":
                    _, path, t_ns, info, instruction, done = op
                    try:
                        writer = BagWriter(path, self.p["storage"]).__enter__()
                        writer.write(RECORDING_INFO_TOPIC, t_ns, string_message(info), "std_msgs/msg/String")
                        if instruction is not None:  # latched before the recording started
                            writer.write(self._topic("instruction"), t_ns, instruction, self._types["instruction"])
                        done.set_result(None)
                    except Exception as exc:
                        writer = None
                        done.set_exception(exc)
                elif kind in ("close", "quit"):
                    if writer is not None:
                        writer.__exit__(None, None, None)
                        writer = None
                    op[1].set_result(None)
                    if kind == "quit":
                        return
            except Exception as exc:  # a failing disk: say so, keep the node alive
                self.diag.set(Diagnostics.ERROR, f"recording failed: {type(exc).__name__}: {exc}")

    def _on_start(self, request, response):
        from concurrent.futures import Future

        from scfl_nodes.core.training.recording import recording_info

        with self._lock:
            if self._bag_path is not None:
                response.success, response.message = False, f"already recording to {self._bag_path}"
                return response
            self.root.mkdir(parents=True, exist_ok=True)
            name = time.strftime("demo_%Y%m%d_%H%M%S")
            path = self.root / name
            n = 1
            while path.exists():
                path, n = self.root / f"{name}_{n}", n + 1
            info = recording_info(self._topic("base"), self._topic("command"), self.mapping, self._topic("instruction"),
                                  self._topic("image") if "image" in self._subs else "", self.p["max_command_age_s"])
            done: Future = Future()
            self._queue.put(("open", path, self.get_clock().now().nanoseconds, info, self._instruction_raw, done))
            try:
                done.result(timeout=30)
            except Exception as exc:
                response.success, response.message = False, f"cannot create {path}: {exc}"
                return response
            self._bag_path, self._started, self._counts = path, time.monotonic(), {}
        self.get_logger().info(f"recording started: {path}")
        self.diag.set(Diagnostics.OK, f"recording {path.name}")
        response.success, response.message = True, str(path)
        return response

    def _close(self, kind: str = "close") -> tuple[Path | None, dict]:
        from concurrent.futures import Future

        with self._lock:
            path, counts = self._bag_path, dict(self._counts)
            self._bag_path = None
            done: Future = Future()
            self._queue.put((kind, done))  # after every write enqueued so far
        done.result(timeout=60)
        if path is not None:
            self.recordings += 1
        return path, counts

    def _on_stop(self, request, response):
        path, counts = self._close()
        if path is None:
            response.success, response.message = False, "not recording"
            return response
        self.get_logger().info(f"recording stopped: {path} ({counts})")
        self.diag.set(Diagnostics.OK, "idle")
        self.diag.update(recordings=self.recordings, last=str(path))
        response.success, response.message = True, str(path)
        return response

    def _check(self) -> None:
        if self._bag_path is not None and time.monotonic() - self._started > self.p["max_duration_s"]:
            path, counts = self._close()
            self.get_logger().warning(f"recording {path} stopped after max_duration_s ({counts})")
            self.diag.set(Diagnostics.OK, "idle")
        with self._lock:
            self.diag.update(**{f"recorded_{k}": v for k, v in self._counts.items()})

    def shutdown(self) -> None:
        self._close("quit")  # a bag is always closed (readable) when the node stops
        self._thread.join(timeout=10)


def main(args=None) -> int:
    return run_node(RecorderNode, "recorder_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
