"""Decoding ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` payloads to numpy, without ROS.

Works on rclpy messages and on ``rosbags`` message objects alike (same field names), so the
ROS nodes, the bag player and offline replays decode frames with one code path. Colour
comes back RGB; ``16UC1`` depth (realsense-ros' aligned depth, millimetres) as uint16.
"""

from __future__ import annotations

import numpy as np

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3, "16UC1": 1, "mono16": 1,
             "32FC1": 1}
_DTYPES = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}


class ImageDecodeError(ValueError):
    """An image message whose encoding or payload cannot be decoded."""


def _bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return np.asarray(data, dtype=np.uint8).tobytes()


def image_to_array(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> (H, W, C) uint8 RGB(A) / (H, W, 1) mono8, (H, W) uint16 or float32 depth."""
    enc = msg.encoding
    channels = _CHANNELS.get(enc)
    if channels is None:
        raise ImageDecodeError(f"unsupported image encoding {enc!r}; known: {', '.join(_CHANNELS)}")
    dtype = np.dtype(_DTYPES.get(enc, np.uint8)).newbyteorder(">" if msg.is_bigendian else "<")
    buf = np.frombuffer(_bytes(msg.data), np.uint8)
    row = msg.width * channels * dtype.itemsize
    if msg.step < row or len(buf) < msg.step * msg.height:
        raise ImageDecodeError(f"{enc} image {msg.width}x{msg.height}: {len(buf)} bytes with step {msg.step} is too short")
    rows = buf[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row]
    img = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="))
    if enc in _DTYPES:
        return img.reshape(msg.height, msg.width)
    img = img.reshape(msg.height, msg.width, channels)
    if enc.startswith("bgr"):
        img = img[..., [2, 1, 0] + ([3] if channels == 4 else [])]
    return img


def compressed_to_array(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg / png, e.g. ``"rgb8; jpeg compressed bgr8"``) -> RGB uint8,
    or uint16 depth for 16-bit PNGs (``compressedDepth`` is not supported)."""
    import cv2

    fmt = (msg.format or "").lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(f"compressedDepth images are not supported (format {msg.format!r})")
    img = cv2.imdecode(np.frombuffer(_bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageDecodeError(f"cannot decode compressed image (format {msg.format!r}, {len(_bytes(msg.data))} bytes)")
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[..., ::-1]  # OpenCV decodes to BGR
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> tuple[str, bytes]:
    """(format string as image_transport writes it, bytes) of an RGB uint8 frame."""
    import cv2

    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise ImageDecodeError(f"unknown compression {fmt!r}; use jpeg or png")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ImageDecodeError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return f"rgb8; {'jpeg' if ext == '.jpg' else 'png'} compressed bgr8", buf.tobytes()


def is_compressed(msg) -> bool:
    """True for ``sensor_msgs/CompressedImage`` (rclpy class or rosbags dataclass)."""
    return type(msg).__name__.endswith("CompressedImage")


def rgb_frame(msg) -> np.ndarray:
    """An (H, W, 3) uint8 RGB frame from either image message type (mono is repeated, alpha dropped)."""
    img = compressed_to_array(msg) if is_compressed(msg) else image_to_array(msg)
    if img.dtype != np.uint8:
        raise ImageDecodeError(f"expected a colour image, got {img.dtype} data")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., :3])
