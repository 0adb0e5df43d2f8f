"""Meta-World v3 simulation for scfl: envs by task + seed, scripted experts, demos, evaluation.

State based and render-free by default (fast enough for fleet simulations on a laptop);
rendering for the camera pipeline lives in :mod:`scfl_nodes.core.perception`.
"""

from .env import acquire_envs, make_env, release_envs, reset_episode
from .experts import ScriptedExpert, scripted_expert
from .rollout import collect_expert_episodes, evaluate, save_episodes
from .tasks import (
    ACTION_DIM,
    ALL_TASKS,
    HELD_OUT_TASKS,
    MAX_EPISODE_STEPS,
    OBS_DIM,
    TASK_INSTRUCTIONS,
    TASKS,
    UnknownTaskError,
    check_task,
    instruction_for,
    task_for_instruction,
)

__all__ = [
    "ACTION_DIM",
    "ALL_TASKS",
    "HELD_OUT_TASKS",
    "MAX_EPISODE_STEPS",
    "OBS_DIM",
    "TASKS",
    "TASK_INSTRUCTIONS",
    "ScriptedExpert",
    "UnknownTaskError",
    "check_task",
    "collect_expert_episodes",
    "evaluate",
    "instruction_for",
    "acquire_envs",
    "make_env",
    "release_envs",
    "reset_episode",
    "save_episodes",
    "scripted_expert",
    "task_for_instruction",
]
