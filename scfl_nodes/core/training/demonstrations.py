"""Reading, writing and validating demonstration episodes (docs/demonstrations.md).

An episode holds, per control step, the observation embedding the skill sees, the
frozen base policy's action and the demonstrated (expert) action; a skill learns
``expert - base``. Three on-disk forms are accepted: one ``*.npz`` per episode, one
``*.parquet`` per episode (one row per step, list-valued columns, optional ``episode``
column for several episodes in one file), and rosbag2 recordings (sqlite3 ``.db3`` or
``.mcap``) with ``std_msgs/msg/Float32MultiArray`` on :data:`ROSBAG_TOPICS`.

Every problem is reported as one :class:`DemonstrationError` naming the file, because
a bad demonstration must stop training before it produces a bad skill.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

OBSERVATION_TOPIC = "/scfl/observation"
BASE_ACTION_TOPIC = "/scfl/base_action"
EXPERT_ACTION_TOPIC = "/scfl/expert_action"
TASK_TOPIC = "/scfl/task"  # optional std_msgs/msg/String, first message is the task description
ROSBAG_TOPICS = {"observation": OBSERVATION_TOPIC, "base_action": BASE_ACTION_TOPIC, "expert_action": EXPERT_ACTION_TOPIC}
FLOAT_ARRAY_TYPE = "std_msgs/msg/Float32MultiArray"
ARRAY_FIELDS = ("observation", "base_action", "expert_action")


class DemonstrationError(ValueError):
    """A demonstration file or directory is missing, empty or malformed."""


@dataclasses.dataclass
class Episode:
    """One demonstration: ``observation`` (T, obs_dim), ``base_action``/``expert_action`` (T, action_dim)."""

    observation: np.ndarray
    base_action: np.ndarray
    expert_action: np.ndarray
    timestamp: np.ndarray | None = None
    task: str | None = None
    source: str = ""

    @property
    def length(self) -> int:
        return int(self.observation.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observation.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.base_action.shape[1])

    @property
    def residual_target(self) -> np.ndarray:
        return self.expert_action - self.base_action

    @classmethod
    def from_mapping(cls, data: Mapping, source: str = "") -> "Episode":
        """An episode from a dict with the format's keys (as ``np.load`` or the simulator return)."""
        missing = [name for name in ARRAY_FIELDS if name not in data]
        if missing:
            raise DemonstrationError(f"{source or 'episode'}: missing array(s) {', '.join(missing)}")
        task = data.get("task")
        return cls(data["observation"], data["base_action"], data["expert_action"], data.get("timestamp"),
                   None if task is None else str(task), source or str(data.get("source", "")))


def validate_episode(episode: Episode, obs_dim: int | None = None, action_dim: int | None = None) -> Episode:
    """Check shapes, lengths, finiteness and expected dims; returns the episode (float32).

    Accepts an :class:`Episode` or a mapping with the format's keys.
    """
    if isinstance(episode, Mapping):
        episode = Episode.from_mapping(episode)
    where = episode.source or "episode"
    arrays = {}
    for name in ARRAY_FIELDS:
        value = getattr(episode, name)
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise DemonstrationError(f"{where}: {name} is not a numeric array") from None
        if arr.ndim != 2:
            raise DemonstrationError(f"{where}: {name} must be 2-D (T, dim), got shape {arr.shape}")
        arrays[name] = arr
    lengths = {name: arr.shape[0] for name, arr in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise DemonstrationError(f"{where}: arrays have different numbers of steps {lengths}")
    if lengths["observation"] == 0:
        raise DemonstrationError(f"{where}: episode has no steps")
    if arrays["base_action"].shape[1] != arrays["expert_action"].shape[1]:
        raise DemonstrationError(
            f"{where}: base_action has dim {arrays['base_action'].shape[1]} but expert_action has dim "
            f"{arrays['expert_action'].shape[1]}"
        )
    for name, arr in arrays.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            step = int(np.argwhere(bad)[0][0])
            raise DemonstrationError(f"{where}: {name} contains NaN or inf (first at step {step})")
    if obs_dim is not None and arrays["observation"].shape[1] != obs_dim:
        raise DemonstrationError(f"{where}: observation dim is {arrays['observation'].shape[1]}, expected {obs_dim}")
    if action_dim is not None and arrays["base_action"].shape[1] != action_dim:
        raise DemonstrationError(f"{where}: action dim is {arrays['base_action'].shape[1]}, expected {action_dim}")
    timestamp = episode.timestamp
    if timestamp is not None:
        timestamp = np.asarray(timestamp, dtype=np.float64).reshape(-1)
        if timestamp.shape[0] != lengths["observation"]:
            raise DemonstrationError(f"{where}: timestamp has {timestamp.shape[0]} entries for "
                                     f"{lengths['observation']} steps")
    task = None if episode.task is None else str(episode.task)
    return Episode(arrays["observation"], arrays["base_action"], arrays["expert_action"], timestamp, task,
                   episode.source)


# ----------------------------------------------------------------------------- NPZ
def read_npz_episode(path: str | os.PathLike) -> Episode:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in ARRAY_FIELDS if name not in data.files]
            if missing:
                raise DemonstrationError(f"{path}: missing array(s) {', '.join(missing)}")
            fields = {name: data[name] for name in ARRAY_FIELDS}
            timestamp = data["timestamp"] if "timestamp" in data.files else None
            task = str(data["task"]) if "task" in data.files else None
    except DemonstrationError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DemonstrationError(f"{path}: not a readable NPZ episode ({exc.__class__.__name__}: {exc})") from None
    return validate_episode(Episode(**fields, timestamp=timestamp, task=task, source=str(path)))


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite a demonstration")


def write_npz_episode(path: str | os.PathLike, episode: Episode) -> Path:
    """Write one episode as ``.npz`` (refuses to overwrite)."""
    path = Path(path)
    _refuse_existing(path)
    episode = validate_episode(episode)
    arrays = {name: getattr(episode, name) for name in ARRAY_FIELDS}
    if episode.timestamp is not None:
        arrays["timestamp"] = episode.timestamp
    if episode.task is not None:
        arrays["task"] = np.array(episode.task)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


# ------------------------------------------------------------------------- Parquet
def read_parquet_episodes(path: str | os.PathLike) -> list[Episode]:
    """Episodes of one Parquet file (split by an optional integer ``episode`` column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DemonstrationError(f"{path}: not a readable Parquet file ({exc.__class__.__name__}: {exc})") from None
    missing = [name for name in ARRAY_FIELDS if name not in table.column_names]
    if missing:
        raise DemonstrationError(f"{path}: missing column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        raise DemonstrationError(f"{path}: Parquet file has no rows")

    def matrix(name: str, rows: np.ndarray) -> np.ndarray:
        values = table.column(name).to_pylist()
        try:
            return np.asarray([values[i] for i in rows], dtype=np.float32)
        except (TypeError, ValueError):
            raise DemonstrationError(f"{path}: column {name} must hold equal-length numeric lists") from None

    if "episode" in table.column_names:
        episode_ids = np.asarray(table.column("episode").to_pylist())
        groups = [np.flatnonzero(episode_ids == e) for e in dict.fromkeys(episode_ids.tolist())]
    else:
        groups = [np.arange(table.num_rows)]
    tasks = table.column("task").to_pylist() if "task" in table.column_names else None
    stamps = table.column("timestamp").to_pylist() if "timestamp" in table.column_names else None
    episodes = []
    for n, rows in enumerate(groups):
        source = str(path) if len(groups) == 1 else f"{path} (episode {n})"
        episodes.append(validate_episode(Episode(
            observation=matrix("observation", rows),
            base_action=matrix("base_action", rows),
            expert_action=matrix("expert_action", rows),
            timestamp=None if stamps is None else np.asarray([stamps[i] for i in rows], dtype=np.float64),
            task=None if tasks is None else tasks[rows[0]],
            source=source,
        )))
    return episodes


def write_parquet_episode(path: str | os.PathLike, episode: Episode) -> Path:
    """Write one episode as Parquet, one row per step (refuses to overwrite)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    _refuse_existing(path)
    episode = validate_episode(episode)
    columns = {name: pa.array(list(getattr(episode, name)), type=pa.list_(pa.float32())) for name in ARRAY_FIELDS}
    if episode.timestamp is not None:
        columns["timestamp"] = pa.array(episode.timestamp, type=pa.float64())
    if episode.task is not None:
        columns["task"] = pa.array([episode.task] * episode.length, type=pa.string())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


# ------------------------------------------------------------------------- rosbag2
def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def read_rosbag_episode(path: str | os.PathLike) -> Episode:
    """One episode from a rosbag2 directory (or its ``.db3`` / ``.mcap`` file): either the
    Float32MultiArray form below or a robot recording (:mod:`.recording`, recorder_node)."""
    from rosbags.rosbag2 import Reader

    from .recording import is_recording, read_recorded_episode

    path = Path(path)
    try:
        with Reader(path) as reader:
            recorded = is_recording(reader.connections)
    except Exception:
        recorded = False  # reported below with the reader's own error
    if recorded:
        return read_recorded_episode(path)
    typestore = _typestore()
    series: dict[str, list[np.ndarray]] = {topic: [] for topic in ROSBAG_TOPICS.values()}
    stamps: list[int] = []
    task = None
    try:
        with Reader(path) as reader:
            wanted = [c for c in reader.connections if c.topic in series or c.topic == TASK_TOPIC]
            for conn in wanted:
                if conn.topic in series and conn.msgtype != FLOAT_ARRAY_TYPE:
                    raise DemonstrationError(f"{path}: topic {conn.topic} has type {conn.msgtype}, expected "
                                             f"{FLOAT_ARRAY_TYPE}")
            for conn, timestamp, raw in reader.messages(connections=wanted):
                msg = typestore.deserialize_cdr(raw, conn.msgtype)
                if conn.topic == TASK_TOPIC:
                    task = task if task is not None else str(msg.data)
                    continue
                series[conn.topic].append(np.asarray(msg.data, dtype=np.float32))
                if conn.topic == OBSERVATION_TOPIC:
                    stamps.append(timestamp)
    except DemonstrationError:
        raise
    except Exception as exc:  # rosbags raises several unrelated error types for unreadable bags
        raise DemonstrationError(f"{path}: not a readable rosbag2 ({exc.__class__.__name__}: {exc})") from None
    counts = {topic: len(v) for topic, v in series.items()}
    if not any(counts.values()):
        raise DemonstrationError(f"{path}: rosbag2 has no messages on {', '.join(series)}")
    empty = [topic for topic, n in counts.items() if n == 0]
    if empty:
        raise DemonstrationError(f"{path}: rosbag2 has no messages on {', '.join(empty)}")
    if len(set(counts.values())) != 1:
        raise DemonstrationError(f"{path}: topics have different message counts {counts}; they are aligned by order")

    def stack(topic: str) -> np.ndarray:
        sizes = {v.shape[0] for v in series[topic]}
        if len(sizes) != 1:
            raise DemonstrationError(f"{path}: messages on {topic} have varying lengths {sorted(sizes)}")
        return np.stack(series[topic])

    return validate_episode(Episode(
        observation=stack(OBSERVATION_TOPIC),
        base_action=stack(BASE_ACTION_TOPIC),
        expert_action=stack(EXPERT_ACTION_TOPIC),
        timestamp=np.asarray(stamps, dtype=np.float64) * 1e-9,
        task=task,
        source=str(path),
    ))


def write_rosbag_episode(path: str | os.PathLike, episode: Episode, storage: str = "sqlite3") -> Path:
    """Record an episode as a rosbag2 directory (``storage``: ``sqlite3`` or ``mcap``)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    _refuse_existing(path)
    episode = validate_episode(episode)
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}.get(storage)
    if plugin is None:
        raise ValueError(f"storage must be sqlite3 or mcap, got {storage!r}")
    typestore = _typestore()
    array_type = typestore.types[FLOAT_ARRAY_TYPE]
    layout_type = typestore.types["std_msgs/msg/MultiArrayLayout"]
    string_type = typestore.types["std_msgs/msg/String"]
    stamps = episode.timestamp if episode.timestamp is not None else np.arange(episode.length) * 0.1
    stamps_ns = np.round(np.asarray(stamps, dtype=np.float64) * 1e9).astype(np.int64)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {field: writer.add_connection(topic, FLOAT_ARRAY_TYPE, typestore=typestore)
                 for field, topic in ROSBAG_TOPICS.items()}
        if episode.task is not None:
            task_conn = writer.add_connection(TASK_TOPIC, "std_msgs/msg/String", typestore=typestore)
            writer.write(task_conn, int(stamps_ns[0]),
                         typestore.serialize_cdr(string_type(data=episode.task), "std_msgs/msg/String"))
        for t in range(episode.length):
            for field, conn in conns.items():
                msg = array_type(layout=layout_type(dim=[], data_offset=0), data=getattr(episode, field)[t])
                writer.write(conn, int(stamps_ns[t]), typestore.serialize_cdr(msg, FLOAT_ARRAY_TYPE))
    return path


# ------------------------------------------------------------------------ discovery
def _is_bag_dir(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file()


def find_episode_files(directory: str | os.PathLike) -> list[Path]:
    """Episode sources under ``directory``: npz/parquet files, rosbag2 dirs and bag files."""
    directory = Path(directory)
    if _is_bag_dir(directory):
        return [directory]
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        root_path = Path(root)
        bag_dirs = [d for d in dirs if _is_bag_dir(root_path / d)]
        found.extend(root_path / d for d in bag_dirs)
        dirs[:] = sorted(d for d in dirs if d not in bag_dirs and not d.startswith("."))
        for name in files:
            if name.endswith((".npz", ".parquet", ".db3", ".mcap")) and not name.startswith("."):
                found.append(root_path / name)
    return sorted(found)


def read_episode_file(path: Path) -> list[Episode]:
    if path.is_dir() or path.suffix in (".db3", ".mcap"):
        return [read_rosbag_episode(path)]
    if path.suffix == ".npz":
        return [read_npz_episode(path)]
    if path.suffix == ".parquet":
        return read_parquet_episodes(path)
    raise DemonstrationError(f"{path}: unknown demonstration format (expected .npz, .parquet or rosbag2)")


def load_demonstrations(path: str | os.PathLike, obs_dim: int | None = None, action_dim: int | None = None,
                        progress: bool = False) -> list[Episode]:
    """All episodes under a directory (or one file/bag), validated to share one set of dims."""
    path = Path(path)
    if not path.exists():
        raise DemonstrationError(f"demonstrations path {path} does not exist")
    files = [path] if path.is_file() else find_episode_files(path)
    if not files:
        raise DemonstrationError(f"{path}: no demonstration episodes (*.npz, *.parquet or rosbag2 .db3/.mcap)")
    if progress:
        from tqdm.auto import tqdm

        files = tqdm(files, desc="read demonstrations", unit="file")
    episodes: list[Episode] = []
    for file in files:
        for episode in read_episode_file(file):
            obs_dim = episode.obs_dim if obs_dim is None else obs_dim
            action_dim = episode.action_dim if action_dim is None else action_dim
            episodes.append(validate_episode(episode, obs_dim, action_dim))
    return episodes


def episodes_task_descriptions(episodes: Iterable[Episode]) -> list[str]:
    """Distinct task descriptions recorded in the episodes, in first-seen order."""
    return list(dict.fromkeys(e.task for e in episodes if e.task))


def split_episodes(episodes: Sequence[Episode], val_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
    """Hold out whole episodes (>= 1 when val_fraction > 0 and there are >= 2 episodes)."""
    episodes = list(episodes)
    if val_fraction <= 0 or len(episodes) < 2:
        return episodes, []
    order = np.random.default_rng(seed).permutation(len(episodes))
    n_val = min(len(episodes) - 1, max(1, int(round(len(episodes) * val_fraction))))
    val = [episodes[i] for i in sorted(order[:n_val])]
    train = [episodes[i] for i in sorted(order[n_val:])]
    return train, val
