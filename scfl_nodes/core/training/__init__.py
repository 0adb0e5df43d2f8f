"""Demonstration I/O (NPZ, Parquet, rosbag2) and local residual-skill training.

The torch-based trainers are imported lazily so that reading and validating
demonstrations (and reporting a bad file) does not pay torch's import time.
"""

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
from .synthetic import skewed_multitask_episodes, synthetic_episodes

_LAZY = {
    "train_skills_with_router": "moe",
    "residual_action_error": "residual",
    "train_residual_skill": "residual",
    "torch_threads": "residual",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    "skewed_multitask_episodes",
    "split_episodes",
    "synthetic_episodes",
    "torch_threads",
    "train_residual_skill",
    "train_skills_with_router",
    "validate_episode",
    "write_npz_episode",
    "write_parquet_episode",
    "write_rosbag_episode",
]
