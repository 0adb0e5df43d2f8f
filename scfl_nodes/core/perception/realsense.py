"""Intel RealSense through ``pyrealsense2``: live devices and rosbag2 ``.db3`` playback.

Live capture uses the librealsense pipeline (with ``rs.align`` when depth must be aligned to
colour). Playback of a recording reads every sensor through its own frame queue in
non-real-time mode and pairs depth and colour by frame number, so each recorded frame comes
out exactly once (the pipeline's syncer drops unmatched frames at the start of a file).
:func:`record_synthetic` writes a recording from numpy arrays with ``rs.software_device`` --
a hardware-free way to exercise the real RealSense path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .base import CameraError, CameraIntrinsics, CameraNotFoundError, CameraSource, Frame


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # libusb missing shows up here as an ImportError too
        raise CameraError(f"pyrealsense2 is not usable ({exc}); pip install pyrealsense2 and apt-get install libusb-1.0-0") from None
    return rs


def _intrinsics(profile) -> CameraIntrinsics:
    i = profile.as_video_stream_profile().get_intrinsics()
    return CameraIntrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, str(i.model).split(".")[-1], tuple(i.coeffs))


def align_depth_to_color(
    depth: np.ndarray, depth_k: CameraIntrinsics, color_k: CameraIntrinsics, rotation: np.ndarray, translation: np.ndarray
) -> np.ndarray:
    """Reproject a metric depth image into the colour camera (nearest surface wins, 0 = no data).

    Used for recordings, where librealsense's ``rs.align`` needs its pipeline syncer, which
    loses frames on playback; it is the same pinhole model (distortion ignored: RealSense
    depth streams are undistorted).
    """
    h, w = depth.shape
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    x = (u - depth_k.cx) / depth_k.fx * z
    y = (v - depth_k.cy) / depth_k.fy * z
    # Component-wise rigid transform: a skinny (N, 3) @ (3, 3) matmul is ~20x slower here.
    r, t = np.asarray(rotation, dtype=np.float64), np.asarray(translation, dtype=np.float64)
    xc = r[0, 0] * x + r[0, 1] * y + r[0, 2] * z + t[0]
    yc = r[1, 0] * x + r[1, 1] * y + r[1, 2] * z + t[1]
    zc = r[2, 0] * x + r[2, 1] * y + r[2, 2] * z + t[2]
    front = zc > 0
    xc, yc, zc = xc[front], yc[front], zc[front]
    cu = np.rint(xc / zc * color_k.fx + color_k.cx).astype(np.int64)
    cv = np.rint(yc / zc * color_k.fy + color_k.cy).astype(np.int64)
    inside = (cu >= 0) & (cu < color_k.width) & (cv >= 0) & (cv < color_k.height)
    flat = cv[inside] * color_k.width + cu[inside]
    out = np.full(color_k.height * color_k.width, np.inf)
    np.minimum.at(out, flat, zc[inside])  # 1-D index: ~8x faster than a 2-D ufunc.at
    out[np.isinf(out)] = 0.0
    return out.reshape(color_k.height, color_k.width).astype(np.float32)


def list_realsense_devices() -> list[str]:
    rs = _rs()
    out = []
    for dev in rs.context().query_devices():
        out.append(f"{dev.get_info(rs.camera_info.name)} (serial {dev.get_info(rs.camera_info.serial_number)})")
    return out


def _video_devices() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("video*"))


def _to_rgb(frame, rs) -> np.ndarray:
    data = np.asanyarray(frame.get_data())
    fmt = frame.get_profile().format()
    if fmt == rs.format.bgr8:
        return data[..., ::-1].copy()
    if fmt in (rs.format.rgba8, rs.format.bgra8):
        rgb = data[..., :3]
        return (rgb[..., ::-1] if fmt == rs.format.bgra8 else rgb).copy()
    if fmt == rs.format.rgb8:
        return data.copy()
    raise CameraError(f"unsupported RealSense colour format {fmt}")


class RealSenseSource(CameraSource):
    """A RealSense camera (``serial``, or the first found) or a ``.db3`` recording (``playback``)."""

    name = "realsense"

    def __init__(
        self,
        serial: str | None = None,
        playback: str | os.PathLike | None = None,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        enable_depth: bool = True,
        align_depth_to_color: bool = False,
        real_time: bool = False,
        timeout_ms: int = 5000,
    ):
        self.serial = serial
        self.playback = Path(playback) if playback else None
        self.width, self.height, self.fps = width, height, fps
        self.enable_depth = enable_depth
        self.align = align_depth_to_color
        self.real_time = real_time
        self.timeout_ms = timeout_ms
        if self.playback is not None and not self.playback.is_file():
            raise CameraNotFoundError(f"RealSense recording {self.playback} does not exist")
        self._color_sensor = None  # live colour sensor while streaming (set_control)

    def controls(self) -> frozenset[str]:
        return frozenset() if self.playback is not None else frozenset({"exposure", "gain"})

    def set_control(self, name: str, value: float) -> None:
        """Colour sensor options as realsense-ros' ``rgb_camera.exposure`` / ``rgb_camera.gain``;
        exposure 0 = auto exposure."""
        if name not in self.controls():
            return super().set_control(name, value)
        sensor = self._color_sensor
        if sensor is None:
            raise CameraError("the RealSense is not streaming")
        rs = _rs()
        try:
            if name == "exposure" and value <= 0:
                sensor.set_option(rs.option.enable_auto_exposure, 1)
            elif name == "exposure":
                sensor.set_option(rs.option.enable_auto_exposure, 0)
                sensor.set_option(rs.option.exposure, float(value))
            else:
                sensor.set_option(rs.option.gain, float(value))
        except RuntimeError as exc:
            raise CameraError(f"the RealSense refused {name} = {value}: {exc}") from None

    # -- live or aligned playback: the librealsense pipeline --------------------------------
    def _pipeline_frames(self, max_frames: int | None) -> Iterator[Frame]:
        rs = _rs()
        pipe, cfg = rs.pipeline(), rs.config()
        if self.playback is not None:
            cfg.enable_device_from_file(str(self.playback), repeat_playback=False)
        else:
            found = list_realsense_devices()
            if not found:
                raise CameraNotFoundError(
                    "no RealSense device connected; found RealSense devices: none; video devices: "
                    + (", ".join(_video_devices()) or "none")
                )
            if self.serial:
                if not any(f"serial {self.serial})" in f for f in found):
                    raise CameraNotFoundError(f"no RealSense with serial {self.serial}; found: {', '.join(found)}")
                cfg.enable_device(self.serial)
            cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
            if self.enable_depth:
                cfg.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        profile = pipe.start(cfg)
        playback = None
        if self.playback is None:
            self._color_sensor = profile.get_device().first_color_sensor()
        if self.playback is not None:
            playback = profile.get_device().as_playback()
            # The pipeline's syncer loses frames when a file plays faster than real time, so the
            # (aligned) pipeline path always plays recordings at their recorded rate.
            playback.set_real_time(True)
        aligner = rs.align(rs.stream.color) if (self.align and self.enable_depth) else None
        n = 0
        waited = 0.0
        try:
            while max_frames is None or n < max_frames:
                ok, fs = pipe.try_wait_for_frames(100 if playback is not None else self.timeout_ms)
                if not ok:
                    waited += 0.1
                    if playback is not None:
                        # "stopped" also shows briefly before playback begins: insist on a quiet 0.5 s.
                        stopped = playback.current_status() == rs.playback_status.stopped
                        if (stopped and n > 0 and waited >= 0.5) or waited * 1000 > self.timeout_ms:
                            return
                        continue
                    raise CameraError(f"RealSense: no frame within {self.timeout_ms} ms")
                waited = 0.0
                if aligner is not None:
                    fs = aligner.process(fs)
                color = fs.get_color_frame()
                if not color:
                    continue
                intr = _intrinsics(color.get_profile())
                depth = depth_intr = None
                if self.enable_depth:
                    d = fs.get_depth_frame()
                    if d:
                        depth = np.asanyarray(d.get_data()).astype(np.float32) * d.get_units()
                        depth_intr = intr if aligner is not None else _intrinsics(d.get_profile())
                yield Frame(color.get_timestamp() / 1000.0, color.get_frame_number(), _to_rgb(color, rs), intr, depth, depth_intr)
                n += 1
        finally:
            self._color_sensor = None
            pipe.stop()

    # -- exact playback: one frame queue per sensor ----------------------------------------
    def _exact_playback_frames(self, max_frames: int | None) -> Iterator[Frame]:
        rs = _rs()
        device = rs.context().load_device(str(self.playback))
        playback = device.as_playback()
        playback.set_real_time(self.real_time)
        queues = {}
        sensors = []
        # Playback starts streaming when the first sensor starts: hold it until all listen,
        # or the sensors started later miss the first frames.
        playback.pause()
        for sensor in device.query_sensors():
            profiles = [p for p in sensor.get_stream_profiles() if p.stream_type() in (rs.stream.color, rs.stream.depth)]
            if not self.enable_depth:
                profiles = [p for p in profiles if p.stream_type() == rs.stream.color]
            if not profiles:
                continue
            q = rs.frame_queue(1024, keep_frames=True)
            sensor.open(profiles)
            sensor.start(q)
            sensors.append(sensor)
            for p in profiles:
                queues[p.stream_type()] = q
        if rs.stream.color not in queues:
            raise CameraError(f"{self.playback} has no colour stream")
        playback.resume()
        pending: dict = {rs.stream.color: {}, rs.stream.depth: {}}
        n = 0
        deadline_s = self.timeout_ms / 1000.0

        def drain(block_ms: int) -> bool:
            got = False
            for q in set(queues.values()):
                ok, f = q.try_wait_for_frame(block_ms)
                while ok:
                    got = True
                    pending[f.get_profile().stream_type()][f.get_frame_number()] = f
                    ok, f = q.try_wait_for_frame(0)
            return got

        try:
            last = time.monotonic()
            while max_frames is None or n < max_frames:
                if drain(20):
                    last = time.monotonic()
                # Only after playback stopped *and* the queues stayed quiet for a while may a
                # colour frame go out without its depth frame (frame callbacks lag the status).
                stopped = playback.current_status() == rs.playback_status.stopped and time.monotonic() - last > 0.3
                ready = sorted(pending[rs.stream.color])
                for number in ready:
                    if self.enable_depth and rs.stream.depth in queues and number not in pending[rs.stream.depth] and not stopped:
                        break  # wait for its depth frame
                    color = pending[rs.stream.color].pop(number)
                    d = pending[rs.stream.depth].pop(number, None)
                    depth = depth_intr = None
                    color_intr = _intrinsics(color.get_profile())
                    if d is not None:
                        df = d.as_depth_frame()
                        depth = np.asanyarray(df.get_data()).astype(np.float32) * df.get_units()
                        depth_intr = _intrinsics(d.get_profile())
                        if self.align:
                            try:
                                ext = d.get_profile().get_extrinsics_to(color.get_profile())
                            except RuntimeError:
                                raise CameraError(f"{self.playback} has no depth-to-colour extrinsics: cannot align depth") from None
                            rotation = np.asarray(ext.rotation, dtype=np.float64).reshape(3, 3).T  # column-major
                            depth = align_depth_to_color(depth, depth_intr, color_intr, rotation, np.asarray(ext.translation))
                            depth_intr = color_intr
                    yield Frame(color.get_timestamp() / 1000.0, number, _to_rgb(color, rs), color_intr, depth, depth_intr)
                    n += 1
                    if max_frames is not None and n >= max_frames:
                        return
                if stopped and not pending[rs.stream.color]:
                    return
                if time.monotonic() - last > deadline_s:
                    return
        finally:
            for sensor in sensors:
                try:
                    sensor.stop()
                    sensor.close()
                except RuntimeError:
                    pass

    def frames(self, max_frames: int | None = None) -> Iterator[Frame]:
        if self.playback is not None:
            return self._exact_playback_frames(max_frames)
        return self._pipeline_frames(max_frames)


def record_synthetic(
    path: str | os.PathLike,
    colors: Sequence[np.ndarray],
    depths: Sequence[np.ndarray] | None,
    *,
    fps: int = 30,
    depth_units: float = 0.001,
    intrinsics: CameraIntrinsics | None = None,
) -> Path:
    """Record RGB uint8 frames (+ uint16 depth in ``depth_units``) to a RealSense ``.db3``.

    Uses ``rs.software_device`` and ``rs.recorder`` without compression, so playback returns
    the exact pixels. Refuses to overwrite an existing file.
    """
    rs = _rs()
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwriting a recording")
    h, w = colors[0].shape[:2]
    intr = rs.intrinsics()
    k = intrinsics or CameraIntrinsics(w, h, 0.9 * w, 0.9 * w, (w - 1) / 2, (h - 1) / 2)
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = w, h, k.fx, k.fy, k.cx, k.cy
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    dev = rs.software_device()
    sensors, profiles = {}, {}
    for kind, fmt, bpp, uid in (("Color", rs.format.rgb8, 3, 1), ("Depth", rs.format.z16, 2, 0)):
        if kind == "Depth" and depths is None:
            continue
        sensor = dev.add_sensor(kind)
        vs = rs.video_stream()
        vs.type = rs.stream.color if kind == "Color" else rs.stream.depth
        vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt, vs.intrinsics = 0, uid, w, h, fps, bpp, fmt, intr
        profiles[kind] = sensor.add_video_stream(vs)
        if kind == "Depth":
            sensor.add_read_only_option(rs.option.depth_units, depth_units)
        sensors[kind] = sensor
    if "Depth" in profiles:  # co-located streams: identity depth -> colour extrinsics
        ext = rs.extrinsics()
        ext.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        ext.translation = [0.0, 0.0, 0.0]
        profiles["Depth"].register_extrinsics_to(profiles["Color"], ext)
    dev.create_matcher(rs.matchers.default)
    sink = rs.frame_queue(4096)
    recorder = rs.recorder(str(path), dev, False)
    for kind, sensor in sensors.items():
        sensor.open(profiles[kind])
        sensor.start(sink)
    keep = []  # librealsense reads the pixel buffers asynchronously
    for i, color in enumerate(colors):
        stamp = i * 1000.0 / fps
        items = [("Color", np.ascontiguousarray(color, dtype=np.uint8), 3)]
        if depths is not None:
            items.append(("Depth", np.ascontiguousarray(depths[i], dtype=np.uint16), 2))
        for kind, pixels, bpp in items:
            keep.append(pixels)
            f = rs.software_video_frame()
            f.pixels, f.stride, f.bpp = pixels, w * bpp, bpp
            f.timestamp, f.domain, f.frame_number = stamp, rs.timestamp_domain.hardware_clock, i
            f.profile = profiles[kind].as_video_stream_profile()
            if kind == "Depth":
                f.depth_units = depth_units
            sensors[kind].on_video_frame(f)
    for sensor in sensors.values():
        sensor.stop()
        sensor.close()
    del recorder
    return path
