"""Demonstrations recorded from the running robot graph (recorder_node, ``scfl record``).

A robot recording is a rosbag2 with the graph's own messages, unchanged: the camera image,
``scfl_interfaces/BaseAction`` (base action + observation embedding, header stamp = image
stamp), the demonstrator's command (a teleop ``geometry_msgs/TwistStamped`` or the robot's
commanded joints as ``sensor_msgs/JointState``) and the instruction. A JSON ``std_msgs/String``
on :data:`RECORDING_INFO_TOPIC` says which topic is which and how the command maps onto the
action space, so a bag is self-describing and :func:`read_recorded_episode` turns it into an
:class:`~scfl_nodes.core.training.Episode` (observation = embedding, base = base action,
expert = mapped command) without any configuration.

Steps are paired by header stamp: every base action gets the newest command stamped at or
before its image (a stamp of zero falls back to the log time), at most ``max_command_age_s``
older; base actions without such a command (before the demonstrator started, or after the
teleop went quiet) are not steps.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .demonstrations import DemonstrationError, Episode, validate_episode

RECORDING_INFO_TOPIC = "/scfl/recording_info"
BASE_ACTION_TYPE = "scfl_interfaces/msg/BaseAction"
INSTRUCTION_TYPE = "std_msgs/msg/String"
FORMAT = "scfl-recording-1"


class CommandMapping(abc.ABC):
    """How a demonstrator's command message becomes an action-space vector (and back, for the
    simulated demonstrator). Works on rclpy and rosbags messages alike (same field names)."""

    kind: str
    msgtype: str

    @abc.abstractmethod
    def to_action(self, msg: Any) -> np.ndarray: ...

    @abc.abstractmethod
    def fill(self, msg: Any, action: Sequence[float]) -> Any:
        """Write ``action`` into the command message ``msg`` (the inverse of :meth:`to_action`)."""

    @abc.abstractmethod
    def info(self) -> dict: ...

    @property
    @abc.abstractmethod
    def action_dim(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class TwistCommand(CommandMapping):
    """A teleop ``TwistStamped``: action[i] = ``fields[i]`` of the twist (e.g. ``linear.x``) * scale.

    The default suits Meta-World's 4-D action (dx, dy, dz, gripper): the gripper channel rides
    on ``angular.z`` (a spacemouse's twist axis; teleop drivers map a button there)."""

    fields: tuple[str, ...] = ("linear.x", "linear.y", "linear.z", "angular.z")
    scale: float = 1.0
    kind = "twist"
    msgtype = "geometry_msgs/msg/TwistStamped"

    def __post_init__(self):
        valid = {f"{part}.{axis}" for part in ("linear", "angular") for axis in "xyz"}
        bad = [f for f in self.fields if f not in valid]
        if bad or not self.fields:
            raise ValueError(f"twist command fields must be among {sorted(valid)}, got {list(self.fields)}")
        if self.scale == 0:
            raise ValueError("twist command scale must not be 0")

    @property
    def action_dim(self) -> int:
        return len(self.fields)

    def to_action(self, msg: Any) -> np.ndarray:
        twist = msg.twist
        return np.array([getattr(getattr(twist, f.split(".")[0]), f.split(".")[1]) for f in self.fields],
                        np.float32) * np.float32(self.scale)

    def fill(self, msg: Any, action: Sequence[float]) -> Any:
        for f, value in zip(self.fields, action):
            part, axis = f.split(".")
            setattr(getattr(msg.twist, part), axis, float(value) / self.scale)
        return msg

    def info(self) -> dict:
        return {"type": self.kind, "fields": list(self.fields), "scale": self.scale}


@dataclasses.dataclass(frozen=True)
class JointCommand(CommandMapping):
    """The robot's commanded joints (``JointState``): action[i] = position of ``joints[i]``."""

    joints: tuple[str, ...] = ()
    kind = "joints"
    msgtype = "sensor_msgs/msg/JointState"

    def __post_init__(self):
        if not self.joints:
            raise ValueError("a joint command needs the joint names in action order")

    @property
    def action_dim(self) -> int:
        return len(self.joints)

    def to_action(self, msg: Any) -> np.ndarray:
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [j for j in self.joints if j not in index]
        if missing:
            raise DemonstrationError(f"joint command lacks joint(s) {', '.join(missing)}")
        position = np.asarray(msg.position, np.float32)
        return np.array([position[index[j]] for j in self.joints], np.float32)

    def fill(self, msg: Any, action: Sequence[float]) -> Any:
        msg.name = list(self.joints)
        msg.position = np.asarray(action, np.float64)  # rclpy and rosbags (CDR float64[]) both take it
        return msg

    def info(self) -> dict:
        return {"type": self.kind, "joints": list(self.joints)}


def command_mapping(kind: str, fields: Sequence[str] = (), scale: float = 1.0) -> CommandMapping:
    """``twist`` (fields = twist axes, empty = the default) or ``joints`` (fields = joint names)."""
    if kind == "twist":
        return TwistCommand(tuple(fields), scale) if fields else TwistCommand(scale=scale)
    if kind == "joints":
        return JointCommand(tuple(fields))
    raise ValueError(f"command type must be twist or joints, got {kind!r}")


def mapping_from_info(info: dict) -> CommandMapping:
    if info.get("type") == "joints":
        return JointCommand(tuple(info.get("joints", ())))
    return command_mapping(info.get("type", ""), info.get("fields", ()), float(info.get("scale", 1.0)))


def recording_info(base_action_topic: str, command_topic: str, mapping: CommandMapping, instruction_topic: str,
                   image_topic: str = "", max_command_age_s: float = 0.5) -> str:
    """The JSON the recorder writes on :data:`RECORDING_INFO_TOPIC` (read back by the loader)."""
    return json.dumps({
        "format": FORMAT, "base_action_topic": base_action_topic, "command_topic": command_topic,
        "command": mapping.info(), "instruction_topic": instruction_topic, "image_topic": image_topic,
        "max_command_age_s": max_command_age_s,
    })


def is_recording(connections) -> bool:
    """Whether a bag's connections are a robot recording (it has the info topic)."""
    return any(c.topic == RECORDING_INFO_TOPIC for c in connections)


def _stamp_ns(msg: Any, log_ns: int) -> int:
    stamp = msg.header.stamp
    ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return ns if ns > 0 else int(log_ns)


def read_recorded_episode(path: str | os.PathLike) -> Episode:
    """One episode from a robot recording (see the module docstring); one-line errors."""
    from rosbags.rosbag2 import Reader

    from ..rosbag_io import typestore

    path = Path(path)
    store = typestore()
    bases: list[tuple[int, np.ndarray, np.ndarray]] = []
    commands: list[tuple[int, np.ndarray]] = []
    task = None
    try:
        with Reader(path) as reader:
            info_conns = [c for c in reader.connections if c.topic == RECORDING_INFO_TOPIC]
            raw = next((d for _, _, d in reader.messages(connections=info_conns)), None)
            if raw is None:
                raise DemonstrationError(f"{path}: recording has no {RECORDING_INFO_TOPIC} message")
            info = json.loads(store.deserialize_cdr(raw, INSTRUCTION_TYPE).data)
            try:
                mapping = mapping_from_info(info["command"])
            except (KeyError, ValueError) as exc:
                raise DemonstrationError(f"{path}: bad command mapping in the recording info ({exc})") from None
            by_topic = {c.topic: c for c in reader.connections}
            base_conn = by_topic.get(info["base_action_topic"])
            cmd_conn = by_topic.get(info["command_topic"])
            if base_conn is None or base_conn.msgcount == 0:
                raise DemonstrationError(f"{path}: no base actions on {info['base_action_topic']} "
                                         "(was vla_node running while recording?)")
            if cmd_conn is None or cmd_conn.msgcount == 0:
                raise DemonstrationError(f"{path}: no demonstrator commands on {info['command_topic']}")
            if base_conn.msgtype != BASE_ACTION_TYPE or cmd_conn.msgtype != mapping.msgtype:
                raise DemonstrationError(f"{path}: {base_conn.topic} is {base_conn.msgtype} and {cmd_conn.topic} is "
                                         f"{cmd_conn.msgtype}; expected {BASE_ACTION_TYPE} and {mapping.msgtype}")
            wanted = [base_conn, cmd_conn] + [c for c in reader.connections if c.topic == info.get("instruction_topic")]
            for conn, log_ns, data in reader.messages(connections=wanted):
                msg = store.deserialize_cdr(data, conn.msgtype)
                if conn is base_conn:
                    bases.append((_stamp_ns(msg, log_ns), np.asarray(msg.observation_embedding, np.float32),
                                  np.asarray(msg.action, np.float32)))
                    task = task or (msg.instruction or None)
                elif conn is cmd_conn:
                    commands.append((_stamp_ns(msg, log_ns), mapping.to_action(msg)))
                elif task is None and msg.data:
                    task = str(msg.data)
            max_age_ns = int(float(info.get("max_command_age_s", 0.5)) * 1e9)
    except DemonstrationError:
        raise
    except Exception as exc:  # rosbags raises several unrelated error types for unreadable bags
        raise DemonstrationError(f"{path}: not a readable robot recording ({exc.__class__.__name__}: {exc})") from None

    bases.sort(key=lambda b: b[0])
    commands.sort(key=lambda c: c[0])
    cmd_stamps = np.array([c[0] for c in commands], np.int64)
    obs, base, expert, stamps = [], [], [], []
    for stamp, embedding, action in bases:
        i = int(np.searchsorted(cmd_stamps, stamp, side="right")) - 1
        if i < 0 or stamp - cmd_stamps[i] > max_age_ns:
            continue
        obs.append(embedding)
        base.append(action)
        expert.append(commands[i][1])
        stamps.append(stamp * 1e-9)
    if not obs:
        raise DemonstrationError(f"{path}: no base action has a demonstrator command at most "
                                 f"{max_age_ns / 1e9:g} s older than its image ({len(bases)} base actions, "
                                 f"{len(commands)} commands)")
    for name, rows in (("observation_embedding", obs), ("base action", base)):
        sizes = sorted({r.shape[0] for r in rows})
        if len(sizes) != 1:
            raise DemonstrationError(f"{path}: {name}s have varying lengths {sizes}")
    if mapping.action_dim != base[0].shape[0]:
        raise DemonstrationError(f"{path}: the command maps to {mapping.action_dim} values but the base action has "
                                 f"{base[0].shape[0]}")
    return validate_episode(Episode(np.stack(obs), np.stack(base), np.stack(expert), np.asarray(stamps), task,
                                    str(path)))


def write_recorded_episode(path: str | os.PathLike, episode: Episode, mapping: CommandMapping | None = None,
                           storage: str = "sqlite3", namespace: str = "") -> Path:
    """Write ``episode`` as recorder_node would have recorded it (benchmarks, conversions):
    BaseAction + the demonstrator's command stamped with the same image time + the info."""
    from ..rosbag_io import BagWriter, _header, string_message, typestore

    episode = validate_episode(episode)
    mapping = mapping or TwistCommand()
    if mapping.action_dim != episode.action_dim:
        raise ValueError(f"the command mapping has {mapping.action_dim} values, the episode {episode.action_dim}")
    types = typestore().types
    ns = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
    topics = {"base": f"{ns}/scfl/base_action", "command": f"{ns}/scfl/teleop_cmd", "instruction": f"{ns}/scfl/instruction"}
    stamps = episode.timestamp if episode.timestamp is not None else 1.0 + np.arange(episode.length) * 0.1
    stamps_ns = np.round(np.asarray(stamps, np.float64) * 1e9).astype(np.int64)
    vec = types["geometry_msgs/msg/Vector3"]

    def blank_command(t_ns: int):
        if isinstance(mapping, TwistCommand):
            twist = types["geometry_msgs/msg/Twist"](linear=vec(x=0.0, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=0.0))
            return types[mapping.msgtype](header=_header(t_ns, "base"), twist=twist)
        return types[mapping.msgtype](header=_header(t_ns, "base"), name=[], position=np.zeros(0),
                                      velocity=np.zeros(0), effort=np.zeros(0))

    with BagWriter(path, storage) as writer:
        t0 = int(stamps_ns[0])
        writer.write(RECORDING_INFO_TOPIC, t0, string_message(
            recording_info(topics["base"], topics["command"], mapping, topics["instruction"])))
        if episode.task:
            writer.write(topics["instruction"], t0, string_message(episode.task))
        for t in range(episode.length):
            t_ns = int(stamps_ns[t])
            cmd = mapping.fill(blank_command(t_ns), episode.expert_action[t])
            writer.write(topics["command"], t_ns, cmd)
            writer.write(topics["base"], t_ns + 1, types[BASE_ACTION_TYPE](
                header=_header(t_ns, "base"), instruction=episode.task or "", action=episode.base_action[t],
                observation_embedding=episode.observation[t], inference_time_ms=0.0, age_ms=0.0, sequence=t,
                backend="recorded"))
    return Path(path)
