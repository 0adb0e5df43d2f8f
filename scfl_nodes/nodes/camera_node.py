"""camera_node: camera frames -> ``sensor_msgs/Image`` + ``CameraInfo`` (realsense-ros names).

Topics (relative, so a launch namespace prefixes them):
``<camera_namespace>/<camera_name>/color/image_raw`` and ``.../color/camera_info`` (plus
``.../aligned_depth_to_color/image_raw`` when the source has depth), SensorDataQoS, frames in
REP-103 optical convention (``<camera_name>_color_optical_frame``: z forward, x right, y down).

Sources come from :mod:`scfl_nodes.core.perception` (RealSense live / ``.db3`` playback, ZED
side-by-side over UVC, generic UVC / video file). ``camera_type: sim`` renders the Meta-World
simulator (:mod:`scfl_nodes.core.sim`) with its scripted expert acting, and also publishes the
simulator state (``scfl/observation_state``, same stamp as the image) and the task instruction
(``scfl/instruction``, latched) -- what vla_node needs for the state-based scfl base policy.

A missing or failing camera never kills the node: diagnostics go to ERROR and the source is
reopened every ``reconnect_s``.
"""

from __future__ import annotations

import math
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
    Param("reconnect_s", 2.0, "seconds between attempts to (re)open a missing camera", min=0.1, max=600.0),
]


class SimCameraSource:
    """Meta-World rendered from the 'corner' camera while its scripted expert acts (no hardware)."""

    def __init__(self, task: str, seed: int, width: int, height: int):
        from scfl_nodes.core.sim import MAX_EPISODE_STEPS, instruction_for, make_env, reset_episode, scripted_expert

        self.env = make_env(task, seed, render_mode="rgb_array", width=width, height=height, camera_name="corner")
        self.env.model.vis.quality.offsamples = 0  # cheap CPU rendering: no MSAA, no shadows
        self.env.model.vis.quality.shadowsize = 0
        self.expert = scripted_expert(task)
        self.instruction = instruction_for(task)
        self._reset = lambda episode: reset_episode(self.env, seed, episode)
        self._max_steps = MAX_EPISODE_STEPS
        self.episode = 0
        self.obs = self._reset(0)
        self.steps = 0
        fovy = float(self.env.model.cam_fovy[self.env.model.camera("corner").id])
        f = 0.5 * height / math.tan(math.radians(fovy) / 2)
        self.intrinsics = (f, f, width / 2.0, height / 2.0)

    def read(self):
        """(rgb HxWx3, depth or None, state) of the current step, then advance the simulation."""
        image = np.asarray(self.env.render(), dtype=np.uint8)[::-1]  # MuJoCo renders bottom-up
        state = self.obs.astype(np.float32)
        for _ in range(3):
            self.obs, _, _, _, info = self.env.step(np.clip(self.expert.act(self.obs), -1, 1))
            self.steps += 1
            if info.get("success") or self.steps >= self._max_steps:
                self.episode += 1
                self.obs, self.steps = self._reset(self.episode), 0
                break
        return image, None, state

    def close(self):
        self.env.close()


class PerceptionSource:
    """Adapter over the core camera sources (``frames()`` yields timestamped colour/depth)."""

    def __init__(self, p: dict):
        try:
            from scfl_nodes.core import perception
        except ImportError as exc:
            raise RuntimeError(f"camera sources are not installed (scfl_nodes.core.perception: {exc})") from None
        opener = getattr(perception, "open_camera", None) or getattr(perception, "make_camera_source", None)
        if opener is None:
            raise RuntimeError("scfl_nodes.core.perception offers no open_camera()")
        self.source = opener(p["camera_type"], device=p["device"] or None, width=p["width"], height=p["height"],
                             fps=p["fps"], enable_depth=p["enable_depth"], calibration=p["calibration_file"] or None)
        self._frames = iter(self.source.frames())
        self.intrinsics = None

    def read(self):
        frame = next(self._frames)
        color = getattr(frame, "color", None)
        if color is None:
            color = frame["color"]
        depth = getattr(frame, "depth", None)
        k = getattr(frame, "intrinsics", None)
        if k is not None:
            self.intrinsics = (float(k.fx), float(k.fy), float(k.cx), float(k.cy)) if hasattr(k, "fx") else tuple(
                float(v) for v in (k[0][0], k[1][1], k[0][2], k[1][2]))
        return np.asarray(color, dtype=np.uint8), depth, None

    def close(self):
        close = getattr(self.source, "close", None)
        if close:
            close()


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
        self._Observation, self._CameraInfo, self._String = Observation, CameraInfo, String
        self.diag = Diagnostics(self, f"camera:{self.p['camera_type']}:{self.p['device'] or 'default'}")
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture_loop, name="camera-capture", daemon=True)
        self._thread.start()
        self.get_logger().info(f"{self.p['camera_type']} camera -> {self.image_pub.topic_name} "
                               f"({self.p['width']}x{self.p['height']} @ {self.p['fps']} fps)")

    def _open(self):
        if self.p["camera_type"] == "sim":
            src = SimCameraSource(self.p["sim_task"], self.p["sim_seed"], self.p["width"], self.p["height"])
            self.instruction_pub.publish(self._String(data=src.instruction))
            return src
        return PerceptionSource(self.p)

    def _capture_loop(self) -> None:
        period = 1.0 / self.p["fps"]
        while not self._stop.is_set():
            try:
                source = self._open()
            except Exception as exc:
                self.diag.set(Diagnostics.ERROR, f"camera unavailable: {exc}; retrying every {self.p['reconnect_s']} s")
                self._stop.wait(self.p["reconnect_s"])
                continue
            self.diag.set(Diagnostics.OK, "streaming")
            next_t = time.monotonic()
            try:
                while not self._stop.is_set():
                    color, depth, state = source.read()
                    self._publish(color, depth, state, source.intrinsics)
                    next_t += period
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_t = time.monotonic()
            except Exception as exc:
                self.diag.set(Diagnostics.ERROR, f"camera stream failed: {type(exc).__name__}: {exc}; reopening")
                self._stop.wait(self.p["reconnect_s"])
            finally:
                try:
                    source.close()
                except Exception:
                    pass

    def _publish(self, color, depth, state, intrinsics) -> None:
        stamp = self.get_clock().now().to_msg()
        if state is not None:  # before the image: vla_node pairs them by stamp
            obs = self._Observation(state=state.tolist())
            obs.header.stamp, obs.header.frame_id = stamp, "world"
            self.state_pub.publish(obs)
        self.image_pub.publish(numpy_to_image(color, stamp, self.frame_id, "rgb8"))
        h, w = color.shape[:2]
        fx, fy, cx, cy = intrinsics or (float(w), float(w), w / 2.0, h / 2.0)
        info = self._CameraInfo(width=w, height=h, distortion_model="plumb_bob", d=[0.0] * 5,
                                k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                                r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                                p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
        info.header.stamp, info.header.frame_id = stamp, self.frame_id
        self.info_pub.publish(info)
        if depth is not None and self.depth_pub is not None:
            d = np.asarray(depth)
            enc = "16UC1" if d.dtype == np.uint16 else "32FC1"
            msg = numpy_to_image(d.astype(np.uint16 if enc == "16UC1" else np.float32).view(np.uint8).reshape(d.shape[0], -1),
                                 stamp, self.frame_id, enc)
            msg.width, msg.step = d.shape[1], d.shape[1] * (2 if enc == "16UC1" else 4)
            self.depth_pub.publish(msg)
        self.frames += 1
        self.diag.update(frames=self.frames)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3.0)


def main(args=None) -> int:
    return run_node(CameraNode, "camera_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
