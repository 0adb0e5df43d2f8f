"""Demonstration I/O (NPZ, Parquet, rosbag2) and local residual-skill training."""

from .demonstrations import (
    BASE_ACTION_TOPIC,
    EXPERT_ACTION_TOPIC,
    OBSERVATION_TOPIC,
    ROSBAG_TOPICS,
    TASK_TOPIC,
    DemonstrationError,
    Episode,
    episodes_task_descriptions,
    find_episode_files,
    load_demonstrations,
    read_npz_episode,
    read_parquet_episodes,
    read_rosbag_episode,
    split_episodes,
    validate_episode,
    write_npz_episode,
    write_parquet_episode,
    write_rosbag_episode,
)
from .residual import residual_action_error, train_residual_skill
from .synthetic import synthetic_episodes

__all__ = [
    "BASE_ACTION_TOPIC",
    "EXPERT_ACTION_TOPIC",
    "OBSERVATION_TOPIC",
    "ROSBAG_TOPICS",
    "TASK_TOPIC",
    "DemonstrationError",
    "Episode",
    "episodes_task_descriptions",
    "find_episode_files",
    "load_demonstrations",
    "read_npz_episode",
    "read_parquet_episodes",
    "read_rosbag_episode",
    "residual_action_error",
    "split_episodes",
    "synthetic_episodes",
    "train_residual_skill",
    "validate_episode",
    "write_npz_episode",
    "write_parquet_episode",
    "write_rosbag_episode",
]
