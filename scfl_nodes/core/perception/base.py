"""One interface for every camera: ``frames()`` yields timestamped colour (+ depth) + intrinsics.

The VLA node does not care whether pixels come from a RealSense, a ZED over USB, a webcam,
a video file, a recorded ``.db3`` or the Meta-World renderer; it iterates ``frames()``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterator

import numpy as np


class CameraError(RuntimeError):
    """A camera could not be opened or read."""


class CameraNotFoundError(CameraError):
    """The requested device is absent; the message lists what was found instead."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole model (pixels); ``coeffs`` are distortion coefficients in ``model``'s convention."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    model: str = "plumb_bob"
    coeffs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_fov(cls, width: int, height: int, fovy_deg: float) -> "CameraIntrinsics":
        """Square pixels, principal point in the centre, vertical field of view ``fovy_deg``."""
        f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0)
        return cls(width, height, float(f), float(f), (width - 1) / 2.0, (height - 1) / 2.0)


@dataclass
class Frame:
    """One capture. ``color`` is RGB uint8 (H, W, 3); ``depth`` metres float32 (H, W) or None."""

    timestamp: float  # seconds (device clock for hardware, media time for files, sim time for sim)
    index: int
    color: np.ndarray
    intrinsics: CameraIntrinsics
    depth: np.ndarray | None = None
    depth_intrinsics: CameraIntrinsics | None = None
    right: np.ndarray | None = None  # right view of a stereo camera (ZED), when kept
    command: np.ndarray | None = None  # simulator: the scripted demonstrator's action for this frame

    @property
    def depth_aligned(self) -> bool:
        return self.depth is not None and self.depth_intrinsics == self.intrinsics


class CameraSource(abc.ABC):
    """Base class: use as a context manager, iterate ``frames()``."""

    name = "camera"

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire the device (called by ``frames()`` when needed)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device."""

    def controls(self) -> frozenset[str]:
        """Image controls :meth:`set_control` can change while the source streams (none here)."""
        return frozenset()

    def set_control(self, name: str, value: float) -> None:
        """Set an image control while streaming, in the device's units: ``exposure`` (0 = auto
        exposure) or ``gain``. Raises :class:`CameraError` saying why when it cannot."""
        raise CameraError(f"the {self.name} source has no {name} control "
                          f"(controls: {', '.join(sorted(self.controls())) or 'none'})")

    @abc.abstractmethod
    def frames(self, max_frames: int | None = None) -> Iterator[Frame]:
        """Yield frames until the source ends or ``max_frames`` were produced."""
