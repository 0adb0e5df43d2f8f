"""camera_node: camera frames -> ``sensor_msgs/Image`` + ``CameraInfo`` (realsense-ros names).

A managed (lifecycle) node: *configure* opens the camera (a missing device fails the transition
with one clear error and the node stays unconfigured) and publishes the static TF tree,
*activate* starts streaming, *deactivate* stops it, *cleanup* closes the device.
``autostart: true`` (config/nodes.yaml; ``scfl up``, a node run alone) makes the node take
those steps itself and retry configure every ``reconnect_s``; launch/scfl.launch.py sets it
false and drives the transitions through launch_ros' lifecycle events.

Topics (relative, so a launch namespace prefixes them):
``<camera_namespace>/<camera_name>/color/image_raw`` and ``.../color/camera_info`` (plus
``.../aligned_depth_to_color/image_raw`` when the source has depth), frames in REP-103 optical
convention (``<camera_name>_color_optical_frame``: z forward, x right, y down). QoS as
realsense-ros publishes: reliable by default (``qos: sensor_data`` selects best effort); the
project's subscribers are best effort, which accepts both.

``/tf_static`` (transient local, ``tf2_msgs/TFMessage``): world -> base_frame -> camera link ->
optical frame with the extrinsics ``base_in_world`` and ``camera_in_base`` (core.frames).

Sources come from :mod:`scfl_nodes.core.perception` (RealSense live / ``.db3`` playback, ZED
side-by-side over UVC, generic UVC / video file, the Meta-World renderer). ``camera_type: sim``
renders Meta-World with its scripted expert acting and also publishes the simulator state
(``scfl/observation_state``, same stamp as the image) and the task instruction
(``scfl/instruction``, latched) -- what vla_node needs for the state-based scfl base policy --
and the scripted expert's action as a simulated teleoperator (``scfl/teleop_cmd``,
``geometry_msgs/TwistStamped`` with the image's stamp, mapped by the core ``TwistCommand``
that recorder_node and the demonstration loader use to map it back).

A camera failing while streaming never kills the node: diagnostics go to ERROR and the source
is reopened every ``reconnect_s``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from scfl_nodes.nodes.common import (
    Diagnostics,
    NodeConfigError,
    Param,
    camera_qos,
    declare_params,
    enable_dynamic_params,
    latched_qos,
    numpy_to_image,
    hard_exit,
    preload_realsense,
    run_node,
)

CAMERA_TYPES = ("realsense", "realsense_playback", "zed", "uvc", "video", "sim")
#: sources usable only from the thread that opened them (MuJoCo's EGL context is per thread):
#: configure opens one to check it works, then the capture thread opens its own
THREAD_BOUND = ("sim",)

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
    Param("qos", "reliable", "image/camera_info QoS: reliable (realsense-ros default) or sensor_data (best effort)",
          choices=("reliable", "sensor_data")),
    Param("autostart", True, "configure and activate by itself (false: a lifecycle manager / ros2 launch does)"),
    Param("world_frame", "world", "fixed frame of the static TF tree (REP-105)"),
    Param("base_frame", "base_link", "robot base frame (REP-105)"),
    Param("base_in_world", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "robot base pose in world: x y z (m) roll pitch yaw (rad)"),
    Param("camera_in_base", [0.6, 0.0, 0.5, 0.0, 0.6, 3.14159], "camera link pose in the base frame: x y z (m) roll pitch yaw (rad)"),
    Param("exposure", 0.0, "colour exposure in the device's units (RealSense: as realsense-ros rgb_camera.exposure; "
          "UVC: V4L2 exposure_time_absolute, 100 us); 0 = auto exposure", min=0.0, max=1e6, read_only=False),
    Param("gain", -1.0, "colour gain in the device's units; -1 = leave the device's setting", min=-1.0, max=1e6,
          read_only=False),
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


class CameraNode(LifecycleNode):
    def __init__(self):
        super().__init__("camera_node")
        from scfl_nodes.core.frames import camera_frames, robot_static_tree

        self.p = declare_params(self, PARAMS)
        if self.p["camera_type"] == "sim":
            from scfl_nodes.core.sim import TASKS

            if self.p["sim_task"] not in TASKS:
                raise NodeConfigError(f"parameter 'sim_task' must be one of {', '.join(TASKS)}; got {self.p['sim_task']!r}")
        if self.p["camera_type"] in ("video", "realsense_playback") and not self.p["device"]:
            raise NodeConfigError(f"parameter 'device' must name the file to play for camera_type {self.p['camera_type']}")
        try:
            self.static_tree = robot_static_tree(self.p["world_frame"], self.p["base_frame"], self.p["base_in_world"],
                                                 self.p["camera_name"], self.p["camera_in_base"])
        except ValueError as exc:
            raise NodeConfigError(f"parameter 'base_in_world' / 'camera_in_base': {exc}") from None
        self.frame_id = camera_frames(self.p["camera_name"])[1]
        self.diag = Diagnostics(self, f"camera:{self.p['camera_type']}:{self.p['device'] or 'default'}")
        self.diag.set(Diagnostics.WARN, "unconfigured")
        self.frames = 0
        self.episode = 0
        self._source = None
        self._stop = threading.Event()
        self._thread = None
        self._pubs: list = []
        self.live_controls = LiveControls(self.p)
        enable_dynamic_params(self, PARAMS, self.p, apply=self.live_controls.request,
                              validators={name: self.live_controls.validator(name) for name in LiveControls.NAMES})
        self._autostart_timer = self.create_timer(0.01, self._autostart) if self.p["autostart"] else None

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        """configure (retried every reconnect_s while the camera is missing), then activate."""
        self._autostart_timer.cancel()
        label = self._state_machine.current_state[1]
        if label == "unconfigured" and self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self._autostart_timer = self.create_timer(self.p["reconnect_s"], self._autostart)
            return
        if self._state_machine.current_state[1] == "inactive":
            self.trigger_activate()

    def on_configure(self, state) -> TransitionCallbackReturn:
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        from scfl_interfaces.msg import Observation

        try:
            self._source = self._open()
            if self.p["camera_type"] in THREAD_BOUND:
                self._close_source()
        except Exception as exc:
            message = (f"camera unavailable: cannot open {self.p['camera_type']} camera "
                       f"{self.p['device'] or '(default device)'}: {exc}")
            self.get_logger().error(f"configure failed: {message}")
            self.diag.set(Diagnostics.ERROR, f"{message}; "
                          + (f"retrying every {self.p['reconnect_s']} s" if self.p["autostart"] else "still unconfigured"))
            return TransitionCallbackReturn.FAILURE
        prefix = f"{self.p['camera_namespace']}/{self.p['camera_name']}".strip("/")
        qos = camera_qos(self.p["qos"])
        self.image_pub = self.create_publisher(Image, f"{prefix}/color/image_raw", qos)
        self.info_pub = self.create_publisher(CameraInfo, f"{prefix}/color/camera_info", qos)
        self.depth_pub = self.create_publisher(Image, f"{prefix}/aligned_depth_to_color/image_raw", qos) \
            if self.p["enable_depth"] else None
        self.state_pub = self.create_publisher(Observation, "scfl/observation_state", 10)
        self.instruction_pub = self.create_publisher(String, "scfl/instruction", latched_qos())
        self.command_pub = None
        if self.p["camera_type"] == "sim":
            from geometry_msgs.msg import TwistStamped

            from scfl_nodes.core.training.recording import TwistCommand

            self.command_pub = self.create_publisher(TwistStamped, self.p["command_topic"], 10)
            self._TwistStamped, self._command_mapping = TwistStamped, TwistCommand()
        self._pubs = [p for p in (self.image_pub, self.info_pub, self.depth_pub, self.state_pub, self.instruction_pub, self.command_pub) if p]
        self._Observation, self._CameraInfo, self._String = Observation, CameraInfo, String
        self._publish_static_tf()
        self._publish_instruction()
        self.diag.set(Diagnostics.OK, "configured (camera open, not streaming)")
        self.get_logger().info(f"{self.p['camera_type']} camera opened -> {self.image_pub.topic_name} "
                               f"({self.p['width']}x{self.p['height']} @ {self.p['fps']} fps, qos {self.p['qos']})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._stop.clear()
        self._thread = threading.Thread(target=self._capture_loop, name="camera-capture", daemon=True)
        self._thread.start()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_streaming()
        self.diag.set(Diagnostics.OK, "inactive (camera open, not streaming)")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._close()
        self.diag.set(Diagnostics.WARN, "unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def _stop_streaming(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15.0)  # one frame of a slow source on a loaded machine
            if self._thread.is_alive():
                self.get_logger().warning("capture thread still busy after 15 s; leaving it")
            else:
                self._thread = None

    def _close(self) -> None:
        if self._source is not None:
            try:
                self._source.close()
            except Exception:
                pass
            self._source = None
        for pub in self._pubs:
            self.destroy_publisher(pub)
        self._pubs = []

    # ------------------------------------------------------------------ streaming
    def _publish_static_tf(self) -> None:
        from geometry_msgs.msg import TransformStamped
        from tf2_msgs.msg import TFMessage

        if not hasattr(self, "_tf_pub"):
            self._tf_pub = self.create_publisher(TFMessage, "/tf_static", latched_qos())
        stamp = self.get_clock().now().to_msg()
        msg = TFMessage()
        for t in self.static_tree:
            ts = TransformStamped()
            ts.header.stamp, ts.header.frame_id, ts.child_frame_id = stamp, t.parent, t.child
            ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = t.translation
            (ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z,
             ts.transform.rotation.w) = t.rotation
            msg.transforms.append(ts)
        self._tf_pub.publish(msg)

    def _open(self):
        """Create the source and acquire the device now (a missing camera fails here, not later)."""
        source = open_source(self.p, self.episode)
        try:
            source.open()
        except BaseException:
            source.close()
            raise
        return source

    def _publish_instruction(self) -> None:
        if self.p["camera_type"] == "sim":
            from scfl_nodes.core.sim import instruction_for

            self.instruction_pub.publish(self._String(data=instruction_for(self.p["sim_task"])))

    def _capture_loop(self) -> None:
        # Live cameras block in frames() at their own rate; the simulator is paced to ``fps``.
        period = 1.0 / self.p["fps"] if self.p["camera_type"] == "sim" else 0.0
        while not self._stop.is_set():
            try:
                if self._source is None:
                    self._source = self._open()
                    self._publish_instruction()
                frames = iter(self._source.frames())
                frame = next(frames)
            except StopIteration:
                self._close_source()
                self.episode += 1
                continue
            except Exception as exc:
                self._close_source()
                if self._stop.is_set():
                    break
                self.diag.set(Diagnostics.ERROR, f"camera unavailable: {exc}; retrying every {self.p['reconnect_s']} s")
                self._stop.wait(self.p["reconnect_s"])
                continue
            self.diag.set(Diagnostics.OK, "streaming")
            next_t = time.monotonic()
            self.live_controls.opened(self._source)
            try:
                while not self._stop.is_set():
                    for problem in self.live_controls.apply(self._source):  # between frames, on this thread
                        self.diag.set(Diagnostics.WARN, problem)
                    state = getattr(self._source, "last_state", None)  # simulator: the state of this frame
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
                self._close_source()
                self.episode += 1
                if self.episode == 1:
                    self.get_logger().info(f"{self.p['camera_type']} source ended; reopening it (looping)")
            except Exception as exc:
                self._close_source()
                if self._stop.is_set():
                    break
                self.diag.set(Diagnostics.ERROR, f"camera stream failed: {type(exc).__name__}: {exc}; reopening")
                self._stop.wait(self.p["reconnect_s"])

    def _close_source(self) -> None:
        source, self._source = self._source, None
        self.live_controls.opened(None)
        if source is not None:
            try:
                source.close()
            except Exception:
                pass

    def _publish(self, color, depth, state, intrinsics, command=None) -> None:
        stamp = self.get_clock().now().to_msg()
        if state is not None:  # before the image: vla_node pairs them by stamp
            obs = self._Observation(state=state.tolist())
            obs.header.stamp, obs.header.frame_id = stamp, self.p["world_frame"]
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
        self._stop_streaming()
        if self._thread is None:  # never close a source the capture thread still reads
            self._close_source()


class LiveControls:
    """Exposure-like settings changed while the camera streams (dynamic parameters).

    A change is validated against the open source's controls (a source without the control
    refuses it with the reason) and applied by the capture thread between two frames; the
    configured values are applied again whenever the camera is (re)opened.
    """

    NAMES = ("exposure", "gain")

    def __init__(self, params: dict):
        self._params = params
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._source = None

    def _wanted(self) -> dict[str, float]:
        return {n: self._params[n] for n in self.NAMES if not (n == "gain" and self._params[n] < 0)}

    def validator(self, name: str):
        def check(value):
            source = self._source
            if source is not None and name not in source.controls():
                raise ValueError(f"parameter '{name}': the {source.name} source has no {name} control "
                                 f"(controls: {', '.join(sorted(source.controls())) or 'none'})")
            return value
        return check

    def request(self, changed: dict) -> None:
        with self._lock:
            self._pending.update({k: v for k, v in changed.items() if k in self.NAMES})

    def opened(self, source) -> None:
        self._source = source
        if source is not None:
            with self._lock:  # re-apply what is configured, but only what the source has
                self._pending = {k: v for k, v in self._wanted().items()
                                 if k in source.controls() and not (k == "exposure" and v == 0.0)}

    def apply(self, source) -> list[str]:
        from scfl_nodes.core.perception.base import CameraError

        with self._lock:
            pending, self._pending = self._pending, {}
        problems = []
        for name, value in pending.items():
            if name == "gain" and value < 0:
                continue
            try:
                source.set_control(name, value)
            except CameraError as exc:
                problems.append(str(exc))
        return problems


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
