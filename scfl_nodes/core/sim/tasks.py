"""The Meta-World v3 tasks scfl uses, with the natural-language instruction of each.

The instruction is what the router and the language-conditioned base policy see; the
task name is what Meta-World needs. Keeping both here means one place to add a task.
"""

from __future__ import annotations

TASK_INSTRUCTIONS: dict[str, str] = {
    "door-lock-v3": "lock the door by turning the lock knob down",
    "drawer-close-v3": "push the open drawer closed",
    "sweep-into-v3": "sweep the puck into the hole",
    "window-open-v3": "slide the window open to the left",
}

TASKS: tuple[str, ...] = tuple(TASK_INSTRUCTIONS)

#: Meta-World state observation: hand xyz, gripper, 2 objects (pos + quat), previous frame, goal.
OBS_DIM = 39
#: Meta-World action: end-effector xyz delta + gripper effort, each in [-1, 1].
ACTION_DIM = 4
#: Meta-World's own episode limit.
MAX_EPISODE_STEPS = 500


class UnknownTaskError(ValueError):
    """A task name that scfl's simulator does not provide."""


def check_task(task: str) -> str:
    """Return ``task`` if known, else raise a one-line error listing the known tasks."""
    if task not in TASK_INSTRUCTIONS:
        raise UnknownTaskError(f"unknown Meta-World task {task!r}; known: {', '.join(TASKS)}")
    return task


def instruction_for(task: str) -> str:
    return TASK_INSTRUCTIONS[check_task(task)]


def task_for_instruction(instruction: str) -> str | None:
    """The task whose instruction is exactly ``instruction`` (None if it is free text)."""
    for task, text in TASK_INSTRUCTIONS.items():
        if text == instruction:
            return task
    return None
