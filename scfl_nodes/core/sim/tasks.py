"""The Meta-World v3 tasks scfl uses, with the natural-language instruction of each.

The instruction is what the router and the language-conditioned base policy see; the
task name is what Meta-World needs. Keeping both here means one place to add a task.
Every MT50 task with a scripted expert in ``metaworld.policies`` is accepted; ``TASKS``
are the four FedVLA tasks the shipped base policy was trained on (the defaults).
"""

from __future__ import annotations

#: The four FedVLA Meta-World tasks (the base policy's training tasks; their texts are
#: what the shipped base policy saw, so they must not change).
FEDVLA_INSTRUCTIONS: dict[str, str] = {
    "door-lock-v3": "lock the door by turning the lock knob down",
    "drawer-close-v3": "push the open drawer closed",
    "sweep-into-v3": "sweep the puck into the hole",
    "window-open-v3": "slide the window open to the left",
}

#: The other MT50 tasks (Meta-World's task descriptions, phrased as instructions).
OTHER_INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "dunk the basketball into the basket",
    "bin-picking-v3": "move the puck from one bin into the other bin",
    "box-close-v3": "grasp the lid and close the box with it",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "reach over the wall and press the button from the top",
    "button-press-v3": "press the button on the front",
    "button-press-wall-v3": "reach around the wall and press the button",
    "coffee-button-v3": "push the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial half a revolution",
    "disassemble-v3": "pick the nut off the peg",
    "door-close-v3": "swing the door closed",
    "door-open-v3": "pull the door open",
    "door-unlock-v3": "unlock the door by turning the lock knob up",
    "drawer-open-v3": "pull the drawer open",
    "faucet-close-v3": "turn the faucet handle clockwise to close it",
    "faucet-open-v3": "turn the faucet handle counter-clockwise to open it",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "insert the gripper into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg sideways",
    "pick-out-of-hole-v3": "pick the puck up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "plate-slide-back-side-v3": "slide the plate out of the cabinet sideways",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-side-v3": "slide the plate into the cabinet sideways",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "pull the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach over the wall to the goal position",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "soccer-v3": "kick the ball into the goal",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "stick-push-v3": "grasp the stick and push the box with it",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "slide the window closed to the right",
}

TASK_INSTRUCTIONS: dict[str, str] = {**FEDVLA_INSTRUCTIONS, **OTHER_INSTRUCTIONS}

#: The default task set: the four FedVLA tasks.
TASKS: tuple[str, ...] = tuple(FEDVLA_INSTRUCTIONS)
#: Every task scfl accepts (MT50: each has a scripted expert in metaworld.policies).
ALL_TASKS: tuple[str, ...] = tuple(sorted(TASK_INSTRUCTIONS))
#: Tasks neither the base policy nor the default fleet trains on: the held-out study set.
HELD_OUT_TASKS: tuple[str, ...] = ("button-press-topdown-v3", "drawer-open-v3", "reach-v3", "plate-slide-v3")

#: Meta-World state observation: hand xyz, gripper, 2 objects (pos + quat), previous frame, goal.
OBS_DIM = 39
#: Meta-World action: end-effector xyz delta + gripper effort, each in [-1, 1].
ACTION_DIM = 4
#: Meta-World's own episode limit.
MAX_EPISODE_STEPS = 500


class UnknownTaskError(ValueError):
    """A task name that scfl's simulator does not provide."""


def check_task(task: str) -> str:
    """Return ``task`` if known, else raise a one-line error (with close matches, not all 50)."""
    if task not in TASK_INSTRUCTIONS:
        import difflib

        close = difflib.get_close_matches(str(task), ALL_TASKS, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: the {len(ALL_TASKS)} Meta-World MT50 v3 tasks, e.g. {', '.join(TASKS)}"
        raise UnknownTaskError(f"unknown Meta-World task {task!r}; {hint}")
    return task


def instruction_for(task: str) -> str:
    return TASK_INSTRUCTIONS[check_task(task)]


def task_for_instruction(instruction: str) -> str | None:
    """The task whose instruction is exactly ``instruction`` (None if it is free text)."""
    for task, text in TASK_INSTRUCTIONS.items():
        if text == instruction:
            return task
    return None
