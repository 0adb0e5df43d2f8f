"""The simulated fleet: which robot does which task with how many demonstrations.

Heterogeneity is what makes federation worth measuring: a robot with a single
demonstration cannot learn a skill alone, but it can borrow from robots that do the same
task. :func:`build_fleet` turns the ``fleet`` config section into concrete robots whose
demonstration seeds never overlap each other or the evaluation episodes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Evaluation episodes use seeds from this offset on, demonstrations stay far below it.
EVAL_SEED_OFFSET = 1_000_000


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """One simulated robot: its tasks and how many demonstrations it collects for each."""

    robot_id: str
    tasks: tuple[str, ...]
    demos_per_task: tuple[int, ...]
    few_demo: bool = False
    retargeted: bool = False  # demonstrations made by retargeting human-hand demos (retargeted_demos.py)

    @property
    def num_demos(self) -> int:
        return int(sum(self.demos_per_task))


#: Robot classes reported separately, so a cost of federation to anyone is visible:
#: ``few`` (single-task, ``few_demos`` demonstrations), ``rich`` (single-task, the full
#: ``demos_per_robot``), ``mixed`` (demonstrations split over two tasks), ``retargeted``
#: (single-task, ``demos_per_robot`` demonstrations made through retargeting).
ROBOT_CLASSES = ("few", "rich", "mixed", "retargeted")


def robot_class(robot: RobotSpec) -> str:
    if robot.retargeted:
        return "retargeted"
    if len(robot.tasks) > 1:
        return "mixed"
    return "few" if robot.few_demo else "rich"


def build_fleet(cfg) -> list[RobotSpec]:
    """Robots for a :class:`~scfl_nodes.core.config.FleetConfig` (deterministic, ordered by task)."""
    robots: list[RobotSpec] = []
    for t, task in enumerate(cfg.tasks):
        for r in range(cfg.robots_per_task):
            few = r >= cfg.robots_per_task - cfg.few_demo_robots_per_task
            n = cfg.few_demos if few else cfg.demos_per_robot
            retargeted = r < cfg.retargeted_demo_robots
            name = f"robot-{len(robots):02d}-{task.removesuffix('-v3')}" + ("-retargeted" if retargeted else "")
            robots.append(RobotSpec(name, (task,), (n,), few, retargeted))
    for m in range(cfg.mixed_task_robots):
        a = cfg.tasks[m % len(cfg.tasks)]
        b = cfg.tasks[(m + 1) % len(cfg.tasks)]
        half = max(1, cfg.demos_per_robot // 2)
        robots.append(RobotSpec(f"robot-{len(robots):02d}-mixed", (a, b), (half, max(1, cfg.demos_per_robot - half))))
    return robots


def demo_seed(run_seed: int, robot_index: int, task_index: int) -> int:
    """Seed of a robot's demonstrations: distinct per (run seed, robot, task), below the eval range."""
    return int(np.random.SeedSequence([int(run_seed), int(robot_index), int(task_index), 17]).generate_state(1)[0]) % EVAL_SEED_OFFSET


def eval_seed(run_seed: int) -> int:
    """Seed of the evaluation episodes of a run: the same for every method (paired comparison)."""
    return EVAL_SEED_OFFSET + int(run_seed)
