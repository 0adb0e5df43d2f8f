"""Cameras read through OpenCV: generic UVC webcams, video files, and a ZED as a UVC device.

A ZED (2, 2i, Mini) enumerates as a plain UVC camera delivering both views side by side;
Stereolabs' SDK (``pyzed``) is not on PyPI, so scfl splits the frame itself and takes the
intrinsics from the factory calibration file ``SN<serial>.conf`` (or a YAML/JSON file).
"""

from __future__ import annotations

import configparser
import json
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from .base import CameraError, CameraIntrinsics, CameraNotFoundError, CameraSource, Frame

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


def _cv2():
    import cv2

    return cv2


def list_video_devices() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("video*"))


def _default_intrinsics(w: int, h: int, hfov_deg: float = 70.0) -> CameraIntrinsics:
    f = 0.5 * w / np.tan(np.deg2rad(hfov_deg) / 2)
    return CameraIntrinsics(w, h, float(f), float(f), (w - 1) / 2, (h - 1) / 2)


class OpenCVSource(CameraSource):
    """A UVC device (index or ``/dev/videoN``) or a video file; colour only.

    Files yield media timestamps (``index / fps``) as fast as they decode (or at their frame
    rate with ``real_time``); devices yield wall-clock capture times.
    """

    name = "uvc"

    def __init__(
        self,
        device: int | str = 0,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        intrinsics: CameraIntrinsics | None = None,
        real_time: bool = False,
    ):
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self.intrinsics = intrinsics
        self.real_time = real_time
        self._cap = None
        self.is_file = isinstance(device, (str, os.PathLike)) and not str(device).startswith("/dev/") and not str(device).isdigit()
        if self.is_file and not Path(device).is_file():
            raise CameraNotFoundError(f"video file {device} does not exist")

    def open(self) -> None:
        if self._cap is not None:
            return
        cv2 = _cv2()
        dev = int(self.device) if isinstance(self.device, str) and self.device.isdigit() else self.device
        cap = cv2.VideoCapture(str(dev) if self.is_file else dev)
        if not cap.isOpened():
            cap.release()
            if self.is_file:
                raise CameraError(f"OpenCV cannot decode video file {self.device}")
            raise CameraNotFoundError(
                f"no camera at {self.device!r}; video devices found: {', '.join(list_video_devices()) or 'none'}"
            )
        if not self.is_file:
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def controls(self) -> frozenset[str]:
        return frozenset() if self.is_file else frozenset({"exposure", "gain"})

    def set_control(self, name: str, value: float) -> None:
        """V4L2 through OpenCV: exposure = ``exposure_time_absolute`` (100 µs units), 0 = auto
        (aperture priority); gain in the device's units."""
        if name not in self.controls():
            return super().set_control(name, value)
        if self._cap is None:
            raise CameraError(f"camera {self.device!r} is not open")
        cv2 = _cv2()
        if name == "exposure" and value <= 0:
            ok = self._cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 3)  # V4L2_EXPOSURE_APERTURE_PRIORITY
        elif name == "exposure":
            ok = self._cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1) and self._cap.set(cv2.CAP_PROP_EXPOSURE, float(value))
        else:
            ok = self._cap.set(cv2.CAP_PROP_GAIN, float(value))
        if not ok:
            raise CameraError(f"camera {self.device!r} refused {name} = {value}")

    @property
    def frame_rate(self) -> float:
        self.open()
        fps = self._cap.get(_cv2().CAP_PROP_FPS)
        return float(fps) if fps and fps > 0 else float(self.fps or 30.0)

    def _read(self):
        ok, bgr = self._cap.read()
        return (bgr[..., ::-1].copy() if ok else None), time.time()

    def _make_frame(self, rgb: np.ndarray, stamp: float, index: int) -> Frame:
        h, w = rgb.shape[:2]
        intr = self.intrinsics or _default_intrinsics(w, h)
        return Frame(stamp, index, rgb, intr)

    def frames(self, max_frames: int | None = None) -> Iterator[Frame]:
        self.open()
        fps = self.frame_rate
        t0 = time.monotonic()
        index = 0
        try:
            while max_frames is None or index < max_frames:
                rgb, wall = self._read()
                if rgb is None:
                    if self.is_file:
                        return
                    raise CameraError(f"camera {self.device!r} stopped delivering frames")
                stamp = index / fps if self.is_file else wall
                if self.is_file and self.real_time:
                    time.sleep(max(0.0, t0 + stamp - time.monotonic()))
                yield self._make_frame(rgb, stamp, index)
                index += 1
        finally:
            self.close()


def load_zed_calibration(path: str | os.PathLike, width: int) -> tuple[CameraIntrinsics, CameraIntrinsics, float]:
    """(left, right, baseline metres) for one eye of ``width`` pixels from a ZED calibration file.

    ``SN*.conf`` (Stereolabs' INI: ``[LEFT_CAM_HD]`` ... ``[STEREO] Baseline`` in mm) or a
    YAML/JSON file ``{left: {fx, fy, cx, cy[, coeffs]}, right: {...}, baseline_m}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CameraNotFoundError(f"ZED calibration file {path} does not exist")
    resolutions = {2208: "2K", 1920: "FHD", 1280: "HD", 672: "VGA"}
    if path.suffix in (".yaml", ".yml", ".json"):
        import yaml

        data = yaml.safe_load(path.read_text()) if path.suffix != ".json" else json.loads(path.read_text())
        eyes = []
        for eye in ("left", "right"):
            e = data[eye]
            eyes.append(CameraIntrinsics(width, int(e.get("height", 0)) or int(round(width * 9 / 16)), float(e["fx"]), float(e["fy"]),
                                         float(e["cx"]), float(e["cy"]), coeffs=tuple(e.get("coeffs", (0.0,) * 5))))
        return eyes[0], eyes[1], float(data.get("baseline_m", 0.12))
    parser = configparser.ConfigParser()
    parser.read(path)
    res = resolutions.get(width)
    if res is None:
        raise CameraError(f"ZED eye width {width} is not a ZED resolution ({', '.join(f'{k}={v}' for k, v in resolutions.items())})")
    heights = {"2K": 1242, "FHD": 1080, "HD": 720, "VGA": 376}
    eyes = []
    for eye in ("LEFT", "RIGHT"):
        section = f"{eye}_CAM_{res}"
        if section not in parser:
            raise CameraError(f"{path}: no [{section}] section (sections: {', '.join(parser.sections())})")
        s = parser[section]
        coeffs = tuple(float(s.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2", "k3"))
        eyes.append(CameraIntrinsics(width, heights[res], float(s["fx"]), float(s["fy"]), float(s["cx"]), float(s["cy"]), coeffs=coeffs))
    baseline_mm = float(parser["STEREO"].get("Baseline", 120.0)) if "STEREO" in parser else 120.0
    return eyes[0], eyes[1], baseline_mm / 1000.0


def load_zed_stereo_rotation(path: str | os.PathLike, width: int) -> np.ndarray:
    """Right-to-left rotation (Rodrigues vector RX, CV, RZ of ``[STEREO]``; zeros if absent)."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml", ".json"):
        import yaml

        data = yaml.safe_load(path.read_text()) if path.suffix != ".json" else json.loads(path.read_text())
        return np.asarray(data.get("rotation_rodrigues", (0.0, 0.0, 0.0)), dtype=np.float64)
    parser = configparser.ConfigParser()
    parser.read(path)
    res = {2208: "2K", 1920: "FHD", 1280: "HD", 672: "VGA"}.get(width, "HD")
    st = parser["STEREO"] if "STEREO" in parser else {}
    return np.array([float(st.get(f"{k}_{res}", 0.0)) for k in ("RX", "CV", "RZ")], dtype=np.float64)


class StereoDepth:
    """Rectification + semi-global block matching (OpenCV) -> metric depth on the rectified left view."""

    def __init__(self, left: CameraIntrinsics, right: CameraIntrinsics, baseline_m: float, rotation_rodrigues,
                 num_disparities: int = 96, block_size: int = 5):
        cv2 = _cv2()
        size = (left.width, left.height)
        R, _ = cv2.Rodrigues(np.asarray(rotation_rodrigues, dtype=np.float64).reshape(3, 1))
        T = np.array([[-baseline_m], [0.0], [0.0]])
        R1, R2, P1, P2, _Q, _, _ = cv2.stereoRectify(left.matrix, np.asarray(left.coeffs, dtype=np.float64).reshape(1, -1), right.matrix,
                                                      np.asarray(right.coeffs, dtype=np.float64).reshape(1, -1), size, R, T, alpha=0)
        self.maps = [cv2.initUndistortRectifyMap(k.matrix, np.asarray(k.coeffs, dtype=np.float64).reshape(1, -1), r, p, size, cv2.CV_32FC1)
                     for k, r, p in ((left, R1, P1), (right, R2, P2))]
        self.focal = float(P1[0, 0])
        self.baseline = float(baseline_m)
        self.intrinsics = CameraIntrinsics(left.width, left.height, float(P1[0, 0]), float(P1[1, 1]), float(P1[0, 2]),
                                           float(P1[1, 2]), "none", (0.0,) * 5)
        num_disparities = max(16, (num_disparities // 16) * 16)
        self.matcher = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num_disparities, blockSize=block_size,
                                             P1=8 * 3 * block_size**2, P2=32 * 3 * block_size**2, uniquenessRatio=10,
                                             speckleWindowSize=100, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)

    def __call__(self, left_rgb: np.ndarray, right_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rectified left RGB, depth metres float32; 0 where no match)."""
        cv2 = _cv2()
        rect = [cv2.remap(img, mx, my, cv2.INTER_LINEAR) for img, (mx, my) in zip((left_rgb, right_rgb), self.maps)]
        grey = [cv2.cvtColor(r, cv2.COLOR_RGB2GRAY) for r in rect]
        disparity = self.matcher.compute(grey[0], grey[1]).astype(np.float32) / 16.0
        depth = np.zeros_like(disparity)
        valid = disparity > 0.5
        depth[valid] = self.focal * self.baseline / disparity[valid]
        return rect[0], depth


class ZEDSource(OpenCVSource):
    """A ZED camera as a UVC device: splits the side-by-side frame into left (colour) + right.

    With ``depth=True`` both views are rectified with the calibration and OpenCV's SGBM
    computes depth; colour is then the rectified left view and depth is aligned to it.
    """

    name = "zed"

    def __init__(self, device: int | str = 0, calibration: str | os.PathLike | None = None, resolution: str = "HD",
                 fps: float = 30, keep_right: bool = True, depth: bool = False, num_disparities: int = 96):
        sizes = {"2K": (4416, 1242), "FHD": (3840, 1080), "HD": (2560, 720), "VGA": (1344, 376)}
        if resolution not in sizes:
            raise ValueError(f"unknown ZED resolution {resolution!r}; known: {', '.join(sizes)}")
        w, h = sizes[resolution]
        super().__init__(device, width=w, height=h, fps=fps)
        self.calibration = Path(calibration) if calibration else None
        self.keep_right = keep_right
        self.depth = depth
        self.num_disparities = num_disparities
        self._calib: tuple | None = None
        self._stereo: StereoDepth | None = None
        if depth and self.calibration is None:
            raise CameraError("ZED depth needs the camera's calibration file (SN<serial>.conf)")

    def _make_frame(self, rgb: np.ndarray, stamp: float, index: int) -> Frame:
        h, w2 = rgb.shape[:2]
        if w2 % 2:
            raise CameraError(f"ZED frame width {w2} is odd: not a side-by-side stereo frame")
        w = w2 // 2
        if self._calib is None or self._calib[0].width != w:
            self._calib = load_zed_calibration(self.calibration, w) if self.calibration else (
                _default_intrinsics(w, h, 110.0), _default_intrinsics(w, h, 110.0), 0.12)
        left, right = rgb[:, :w].copy(), rgb[:, w:].copy()
        if self.depth:
            if self._stereo is None or self._stereo.intrinsics.width != w:
                rot = load_zed_stereo_rotation(self.calibration, w)
                self._stereo = StereoDepth(self._calib[0], self._calib[1], self._calib[2], rot, self.num_disparities)
            rect_left, depth = self._stereo(left, right)
            k = self._stereo.intrinsics
            return Frame(stamp, index, rect_left, k, depth, k, right=right if self.keep_right else None)
        return Frame(stamp, index, left, self._calib[0], right=right if self.keep_right else None)

    @property
    def baseline_m(self) -> float | None:
        return self._calib[2] if self._calib else None
