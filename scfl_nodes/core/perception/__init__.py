"""Camera sources behind one interface (``frames()`` -> :class:`Frame`), see docs/cameras.md.

``open_camera(kind, **options)`` builds one from the ``camera`` config section:
``realsense`` (live or ``.db3`` playback), ``zed`` (UVC side-by-side), ``uvc`` (webcam or
video file), ``metaworld`` (the simulator's renderer).
"""

from __future__ import annotations

from .base import CameraError, CameraIntrinsics, CameraNotFoundError, CameraSource, Frame

SOURCE_KINDS = ("realsense", "zed", "uvc", "metaworld")


def open_camera(kind: str, **options) -> CameraSource:
    """Build a camera source by kind; unknown kinds are a one-line error."""
    if kind == "realsense":
        from .realsense import RealSenseSource

        return RealSenseSource(**options)
    if kind == "zed":
        from .opencv_sources import ZEDSource

        return ZEDSource(**options)
    if kind == "uvc":
        from .opencv_sources import OpenCVSource

        return OpenCVSource(**options)
    if kind == "metaworld":
        from .sim_camera import MetaWorldCameraSource

        return MetaWorldCameraSource(**options)
    raise ValueError(f"unknown camera kind {kind!r}; known: {', '.join(SOURCE_KINDS)}")


def camera_from_config(cfg) -> CameraSource:
    """A source from a validated :class:`scfl_nodes.core.config.CameraConfig`."""
    if cfg.source == "realsense":
        return open_camera("realsense", serial=cfg.device or None, playback=cfg.playback or None, width=cfg.width,
                           height=cfg.height, fps=cfg.fps, enable_depth=cfg.depth, align_depth_to_color=cfg.align_depth)
    if cfg.source == "zed":
        return open_camera("zed", device=cfg.device or 0, calibration=cfg.calibration or None, fps=cfg.fps)
    if cfg.source == "uvc":
        return open_camera("uvc", device=cfg.playback or cfg.device or 0, width=cfg.width, height=cfg.height, fps=cfg.fps)
    return open_camera("metaworld", task=cfg.task, camera=cfg.sim_camera, width=cfg.width, height=cfg.height, depth=cfg.depth)


__all__ = [
    "SOURCE_KINDS",
    "CameraError",
    "CameraIntrinsics",
    "CameraNotFoundError",
    "CameraSource",
    "Frame",
    "camera_from_config",
    "open_camera",
]
