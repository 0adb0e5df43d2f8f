"""Record and replay rosbag2 files (sqlite3 ``.db3`` and ``mcap``) without ROS, via ``rosbags``.

Why not rosbag2 itself: it is not installable from PyPI. ``rosbags`` is pure Python, reads and
writes both storage formats, and (de)serialises CDR with a typestore that knows the standard
ROS 2 messages; the scfl interfaces (``msg/*.msg``) are registered on top so bags that contain
them decode too. Messages are kept as raw CDR bytes where possible: the bag player publishes
them unchanged, only messages with a header are decoded to restamp them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

STORAGES = ("sqlite3", "mcap")

# realsense-ros style names (camera namespace "camera", camera name "camera")
COLOR_IMAGE_TOPIC = "/camera/camera/color/image_raw"
COLOR_INFO_TOPIC = "/camera/camera/color/camera_info"
OBSERVATION_TOPIC = "/scfl/observation_state"
INSTRUCTION_TOPIC = "/scfl/instruction"


class BagError(ValueError):
    """The bag is missing, unreadable or does not contain what was asked for."""


@dataclasses.dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str  # "sensor_msgs/msg/Image"
    timestamp_ns: int  # receive/record time in the bag
    data: bytes  # CDR


def _interface_dirs() -> list[Path]:
    from scfl_nodes.core.paths import package_path

    dirs = [package_path("msg"), package_path("srv")]
    return [d for d in dirs if d.is_dir()]


_TYPESTORE = None


def typestore():
    """The ROS 2 (Kilted) typestore plus the ``scfl_interfaces`` messages from ``msg/``."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        store = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))
        types: dict = {}
        for d in _interface_dirs():
            if d.name != "msg":
                continue
            for f in sorted(d.glob("*.msg")):
                types.update(get_types_from_msg(f.read_text(), f"scfl_interfaces/msg/{f.stem}"))
            break
        store.register(types)
        _TYPESTORE = store
    return _TYPESTORE


@dataclasses.dataclass
class BagTypes:
    """The types one bag can be decoded with: the project typestore plus every definition the
    bag stores itself (mcap schemas, rosbag2 sqlite3 ``message_definitions``). ``untyped``:
    topic -> why its type could not be registered (the topic is skipped, never fatal)."""

    store: Any
    untyped: dict[str, str]


def bag_types(path: str | os.PathLike) -> BagTypes:
    """Register the bag's own message definitions (e.g. ``realsense2_camera_msgs/msg/Metadata``)."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    base = typestore()
    store = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))
    store.register({k: v for k, v in base.fielddefs.items() if k not in store.fielddefs})
    untyped: dict[str, str] = {}
    with Reader(Path(path)) as reader:
        for conn in reader.connections:
            if conn.msgtype in store.types:
                continue
            msgdef = conn.msgdef
            text = getattr(msgdef, "data", "") if msgdef is not None else ""
            if not text:
                untyped[conn.topic] = f"{conn.msgtype}: the bag stores no definition for it"
                continue
            try:
                fmt = str(getattr(msgdef, "format", "msg")).lower()
                types = get_types_from_idl(text) if "idl" in fmt else get_types_from_msg(text, conn.msgtype)
                store.register({k: v for k, v in types.items() if k not in store.fielddefs})
            except Exception as exc:  # noqa: BLE001 - rosbags raises several parser errors
                untyped[conn.topic] = f"{conn.msgtype}: its stored definition does not parse ({type(exc).__name__}: {exc})"
    return BagTypes(store, untyped)


def _latched_qos():
    """The offered QoS ``ros2 bag record`` stores for a transient-local publisher (/tf_static)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


def latched_topics(path: str | os.PathLike) -> set[str]:
    """Topics whose recorded publisher offered transient-local durability (e.g. ``/tf_static``)."""
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader

    with Reader(Path(path)) as reader:
        return {c.topic for c in reader.connections
                if any(q.durability == QosDurability.TRANSIENT_LOCAL for q in getattr(c.ext, "offered_qos_profiles", []) or [])}


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise BagError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


class BagWriter:
    """Write a rosbag2 directory: ``with BagWriter(path, "mcap") as w: w.write(topic, t_ns, msg)``.

    ``msg`` is a rosbags message object (see :func:`make_message`) or raw CDR bytes (then the
    topic must have been added with its type). Refuses to overwrite an existing bag.
    """

    def __init__(self, path: str | os.PathLike, storage: str = "sqlite3"):
        from rosbags.rosbag2 import Writer

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} already exists; refusing to overwrite a bag")
        self._writer = Writer(self.path, version=9, storage_plugin=_storage_plugin(storage))
        self._connections: dict[str, Any] = {}
        self.storage = storage

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def add_topic(self, topic: str, msgtype: str, *, latched: bool = False, store=None):
        """``store``: a typestore that knows ``msgtype`` (its definition is written into the
        bag, as ``ros2 bag record`` does); ``latched``: offered as transient local (``/tf_static``)."""
        if topic not in self._connections:
            qos = [_latched_qos()] if latched else ()
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=store or typestore(),
                                                                   offered_qos_profiles=qos)
        return self._connections[topic]

    def write(self, topic: str, timestamp_ns: int, msg: Any, msgtype: str | None = None, store=None) -> None:
        if isinstance(msg, (bytes, bytearray, memoryview)):
            if topic not in self._connections:
                if msgtype is None:
                    raise BagError(f"topic {topic}: raw bytes need a msgtype the first time")
                self.add_topic(topic, msgtype, store=store)
            data = bytes(msg)
        else:
            msgtype = msgtype or msg.__msgtype__
            self.add_topic(topic, msgtype, store=store)
            data = bytes((store or typestore()).serialize_cdr(msg, msgtype))
        self._writer.write(self._connections[topic], int(timestamp_ns), data)


def read_bag(path: str | os.PathLike, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
    """Messages of a rosbag2 directory (either storage) in time order, as raw CDR."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    try:
        with Reader(path) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if topics is not None:
                missing = sorted(set(topics) - {c.topic for c in conns})
                if missing:
                    raise BagError(f"{path}: topic(s) not in the bag: {', '.join(missing)}")
            for conn, t, data in reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, int(t), bytes(data))
    except BagError:
        raise
    except Exception as exc:  # rosbags raises its own errors for corrupt files
        raise BagError(f"{path}: cannot read bag ({type(exc).__name__}: {exc})") from None


def bag_info(path: str | os.PathLike) -> dict:
    """Storage, duration, message count and topics (name -> (type, count)) of a bag."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    with Reader(path) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        storage = "mcap" if any(path.glob("*.mcap")) else "sqlite3"
        return {
            "path": str(path),
            "storage": storage,
            "duration_s": reader.duration * 1e-9 if reader.message_count else 0.0,
            "start_ns": reader.start_time if reader.message_count else 0,
            "message_count": reader.message_count,
            "topics": topics,
        }


def decode(message: BagMessage, types: BagTypes | None = None):
    """Deserialise a :class:`BagMessage` into a rosbags message object (``types``: a bag's
    own definitions from :func:`bag_types`, for types the project does not know)."""
    return (types.store if types is not None else typestore()).deserialize_cdr(message.data, message.msgtype)


def make_message(msgtype: str, **fields):
    """Build a rosbags message object, e.g. ``make_message("std_msgs/msg/Header", frame_id="x")``."""
    return typestore().types[msgtype](**fields)


def _header(stamp_ns: int, frame_id: str):
    t = typestore().types
    stamp = t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))
    return t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_message(image: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "rgb8"):
    """A ``sensor_msgs/msg/Image`` for an HxWx3 uint8 RGB array (or HxW mono8)."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    return typestore().types["sensor_msgs/msg/Image"](
        header=_header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
        is_bigendian=0, step=w * c, data=img.reshape(-1),
    )


def camera_info_message(width: int, height: int, fx: float, fy: float, cx: float, cy: float, stamp_ns: int, frame_id: str):
    """A pinhole ``sensor_msgs/msg/CameraInfo`` (plumb_bob, no distortion)."""
    t = typestore().types
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return t["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns, frame_id), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], float),
        r=np.eye(3).reshape(-1), p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], float),
        binning_x=0, binning_y=0, roi=roi,
    )


def observation_message(state: np.ndarray, stamp_ns: int, frame_id: str = ""):
    return typestore().types["scfl_interfaces/msg/Observation"](
        header=_header(stamp_ns, frame_id), state=np.asarray(state, dtype=np.float32)
    )


def string_message(text: str):
    return typestore().types["std_msgs/msg/String"](data=text)


def float32_multiarray(values: Iterable[float]):
    """``std_msgs/msg/Float32MultiArray`` (the demonstration-bag format of docs/demonstrations.md)."""
    t = typestore().types
    layout = t["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return t["std_msgs/msg/Float32MultiArray"](layout=layout, data=np.asarray(list(values), dtype=np.float32))
