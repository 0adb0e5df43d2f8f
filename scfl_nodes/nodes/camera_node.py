"""camera_node: camera frames -> ``sensor_msgs/Image`` + ``CameraInfo`` (realsense-ros names).

Topics (relative, so a launch namespace prefixes them):
``<camera_namespace>/<camera_name>/color/image_raw`` and ``.../color/camera_info`` (plus
``.../aligned_depth_to_color/image_raw`` when the source has depth), SensorDataQoS, frames in
REP-103 optical convention (``<camera_name>_color_optical_frame``: z forward, x right, y down).

Sources come from :mod:`scfl_nodes.core.perception` (RealSense live / ``.db3`` playback, ZED
side-by-side over UVC, generic UVC / video file, the Meta-World renderer). ``camera_type: sim``
renders Meta-World with its scripted expert acting and also publishes the simulator state
(``scfl/observation_state``, same stamp as the image) and the task instruction
(``scfl/instruction``, latched) -- what vla_node needs for the state-based scfl base policy --
and the scripted expert's action as a simulated teleoperator (``scfl/teleop_cmd``,
``geometry_msgs/TwistStamped`` with the image's stamp, mapped by the core ``TwistCommand``
that recorder_node and the demonstration loader use to map it back).

A missing or failing camera never kills the node: diagnostics go to ERROR and the source is
reopened every ``reconnect_s``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.node import Node

from scfl_nodes.nodes.common import (
    Diagnostics,
    NodeConfigError,
    Param,
    declare_params,
    latched_qos,
    numpy_to_image,
    hard_exit,
    preload_realsense,
    run_node,
    sensor_qos,
)

CAMERA_TYPES = ("realsense", "realsense_playback", "zed", "uvc", "video", "sim")

PARAMS = [
    Param("camera_type", "sim", "camera source", choices=CAMERA_TYPES),
    Param("device", "", "serial (realsense), /dev/videoN or index (uvc, zed), file path (video, realsense_playback)"),
    Param("width", 640, "colour image width in pixels", min=16, max=8192),
    Param("height", 480, "colour image height in pixels", min=16, max=8192),
    Param("fps", 30.0, "frame rate", min=0.1, max=1000.0),
    Param("camera_name", "camera", "realsense-ros camera_name (topic and frame prefix)"),
    Param("camera_namespace", "camera", "realsense-ros camera_namespace (topic prefix)"),
    Param("calibration_file", "", "ZED: stereo calibration file (intrinsics of the left camera)"),
    Param("enable_depth", False, "publish aligned depth when the source provides it"),
    Param("sim_task", "drawer-close-v3", "camera_type sim: Meta-World task to render"),
    Param("sim_seed", 0, "camera_type sim: seed of the simulated episodes", min=0, max=2**31 - 1),
    Param("command_topic", "scfl/teleop_cmd", "camera_type sim: the scripted expert's action as geometry_msgs/TwistStamped (a simulated teleoperator)"),
    Param("reconnect_s", 2.0, "seconds between attempts to (re)open a missing camera", min=0.1, max=600.0),
]


def open_source(p: dict, episode: int = 0):
    """The core camera source for the node's parameters (``scfl_nodes.core.perception``)."""
    from scfl_nodes.core.perception import open_camera

    kind, device = p["camera_type"], p["device"]
    if kind == "sim":
        return open_camera("metaworld", task=p["sim_task"], seed=p["sim_seed"], episode=episode, camera="corner",
                           width=p["width"], height=p["height"], depth=p["enable_depth"])
    if kind in ("realsense", "realsense_playback"):
        return open_camera("realsense", serial=(device or None) if kind == "realsense" else None,
                           playback=device if kind == "realsense_playback" else None, width=p["width"],
                           height=p["height"], fps=int(round(p["fps"])), enable_depth=p["enable_depth"],
                           align_depth_to_color=p["enable_depth"], real_time=kind == "realsense_playback")
    if kind == "zed":
        return open_camera("zed", device=int(device) if device.isdigit() else (device or 0),
                           calibration=p["calibration_file"] or None, fps=p["fps"])
    target = int(device) if device.isdigit() else (device or 0)
    return open_camera("uvc", device=target, width=p["width"] if kind == "uvc" else None,
                       height=p["height"] if kind == "uvc" else None, fps=p["fps"] if kind == "uvc" else None,
                       real_time=kind == "video")


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera_node")
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        from scfl_interfaces.msg import Observation

        self.p = declare_params(self, PARAMS)
        if self.p["camera_type"] == "sim":
            from scfl_nodes.core.sim import TASKS

            if self.p["sim_task"] not in TASKS:
                raise NodeConfigError(f"parameter 'sim_task' must be one of {', '.join(TASKS)}; got {self.p['sim_task']!r}")
        if self.p["camera_type"] in ("video", "realsense_playback") and not self.p["device"]:
            raise NodeConfigError(f"parameter 'device' must name the file to play for camera_type {self.p['camera_type']}")
        prefix = f"{self.p['camera_namespace']}/{self.p['camera_name']}".strip("/")
        self.frame_id = f"{self.p['camera_name']}_color_optical_frame"
        self.image_pub = self.create_publisher(Image, f"{prefix}/color/image_raw", sensor_qos())
        self.info_pub = self.create_publisher(CameraInfo, f"{prefix}/color/camera_info", sensor_qos())
        self.depth_pub = self.create_publisher(Image, f"{prefix}/aligned_depth_to_color/image_raw", sensor_qos()) \
            if self.p["enable_depth"] else None
        self.state_pub = self.create_publisher(Observation, "scfl/observation_state", 10)
        self.instruction_pub = self.create_publisher(String, "scfl/instruction", latched_qos())
        self.command_pub = None
        if self.p["camera_type"] == "sim":
            from geometry_msgs.msg import TwistStamped

            from scfl_nodes.core.training.recording import TwistCommand

            self.command_pub = self.create_publisher(TwistStamped, self.p["command_topic"], 10)
            self._TwistStamped, self._command_mapping = TwistStamped, TwistCommand()
        self._Observation, self._CameraInfo, self._String = Observation, CameraInfo, String
        self.diag = Diagnostics(self, f"camera:{self.p['camera_type']}:{self.p['device'] or 'default'}")
        self.frames = 0
        self.episode = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture_loop, name="camera-capture", daemon=True)
        self._thread.start()
        self.get_logger().info(f"{self.p['camera_type']} camera -> {self.image_pub.topic_name} "
                               f"({self.p['width']}x{self.p['height']} @ {self.p['fps']} fps)")

    def _open(self):
        source = open_source(self.p, self.episode)
        if self.p["camera_type"] == "sim":
            from scfl_nodes.core.sim import instruction_for

            self.instruction_pub.publish(self._String(data=instruction_for(self.p["sim_task"])))
        return source

    def _capture_loop(self) -> None:
        # Live cameras block in frames() at their own rate; the simulator is paced to ``fps``.
        period = 1.0 / self.p["fps"] if self.p["camera_type"] == "sim" else 0.0
        while not self._stop.is_set():
            try:
                source = self._open()
                frames = iter(source.frames())
                frame = next(frames)
            except StopIteration:
                self.episode += 1
                continue
            except Exception as exc:
                self.diag.set(Diagnostics.ERROR, f"camera unavailable: {exc}; retrying every {self.p['reconnect_s']} s")
                self._stop.wait(self.p["reconnect_s"])
                continue
            self.diag.set(Diagnostics.OK, "streaming")
            next_t = time.monotonic()
            try:
                while not self._stop.is_set():
                    state = getattr(source, "last_state", None)  # simulator: the state of this frame
                    self._publish(frame.color, frame.depth if self.p["enable_depth"] else None,
                                  None if state is None else np.asarray(state, np.float32), frame.intrinsics,
                                  frame.command)
                    next_t += period
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_t = time.monotonic()
                    frame = next(frames)
            except StopIteration:  # end of a video / recording / simulated episode
                self.episode += 1
                if self.episode == 1:
                    self.get_logger().info(f"{self.p['camera_type']} source ended; reopening it (looping)")
            except Exception as exc:
                self.diag.set(Diagnostics.ERROR, f"camera stream failed: {type(exc).__name__}: {exc}; reopening")
                self._stop.wait(self.p["reconnect_s"])
            finally:
                try:
                    source.close()
                except Exception:
                    pass

    def _publish(self, color, depth, state, intrinsics, command=None) -> None:
        stamp = self.get_clock().now().to_msg()
        if state is not None:  # before the image: vla_node pairs them by stamp
            obs = self._Observation(state=state.tolist())
            obs.header.stamp, obs.header.frame_id = stamp, "world"
            self.state_pub.publish(obs)
        if command is not None and self.command_pub is not None:  # the demonstrator's command for this frame
            cmd = self._command_mapping.fill(self._TwistStamped(), command)
            cmd.header.stamp, cmd.header.frame_id = stamp, "base"
            self.command_pub.publish(cmd)
        self.image_pub.publish(numpy_to_image(color, stamp, self.frame_id, "rgb8"))
        h, w = color.shape[:2]
        if intrinsics is not None:
            fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
        else:
            fx, fy, cx, cy = float(w), float(w), w / 2.0, h / 2.0
        info = self._CameraInfo(width=w, height=h, distortion_model="plumb_bob", d=[0.0] * 5,
                                k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                                r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                                p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
        info.header.stamp, info.header.frame_id = stamp, self.frame_id
        self.info_pub.publish(info)
        if depth is not None and self.depth_pub is not None:
            d = np.ascontiguousarray(depth, dtype=np.float32)  # metres (REP-118: 32FC1)
            msg = numpy_to_image(d.view(np.uint8).reshape(d.shape[0], -1), stamp, self.frame_id, "32FC1")
            msg.width, msg.step = d.shape[1], d.shape[1] * 4
            self.depth_pub.publish(msg)
        self.frames += 1
        self.diag.update(frames=self.frames)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3.0)


def _wants_realsense(argv: list[str]) -> bool:
    """Whether this run may use a RealSense source (from -p overrides or the params files)."""
    import yaml

    for i, arg in enumerate(argv):
        if arg.startswith("camera_type:="):
            return arg.split(":=", 1)[1].strip("'\"").startswith("realsense")
    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--params-file"]
    from scfl_nodes.nodes.common import default_params_file

    if not files and default_params_file() is not None:
        files = [str(default_params_file())]
    kind = None
    for f in files:
        try:
            data = yaml.safe_load(open(f)) or {}
        except (OSError, yaml.YAMLError):
            continue
        for key, section in data.items():
            if str(key).split("/")[-1] in ("camera_node", "**") and isinstance(section, dict):
                kind = (section.get("ros__parameters") or {}).get("camera_type", kind)
    return str(kind or "").startswith("realsense")


def main(args=None) -> int:
    import sys

    argv = list(sys.argv if args is None else args)
    if _wants_realsense(argv):
        preload_realsense()  # before rclpy: see common.preload_realsense
        hard_exit(run_node(CameraNode, "camera_node", argv))
    return run_node(CameraNode, "camera_node", argv)


if __name__ == "__main__":
    raise SystemExit(main())
