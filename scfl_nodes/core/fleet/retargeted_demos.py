"""Retargeted demonstrations for the simulated fleet (paper section 5 in the loop).

A retargeted robot never sees the scripted expert's actions. Its demonstrations are made
the way a real one's would be:

1. **Human demo.** The scripted expert's hand path relative to the task object (Meta-World
   state: hand position ``obs[0:3]``, object position ``obs[4:7]``) is re-expressed as a
   human demonstration: hand poses (palm down, with smoothed hand tremor in position and
   orientation) and the object pose, recorded in a *different* human scene frame (the person's
   table stands elsewhere and is turned).
2. **Retargeting.** The project's :class:`~scfl_nodes.core.retarget.Retargeter` (object-centric
   T_ee = T_o^robot · T_h^o, Pinocchio IK with the GMR posture prior, velocity limits) solves
   a Panda joint trajectory in the robot scene, where the object lies at its simulator pose.
3. **Replay.** The Panda's achieved end-effector path (FK of the IK solution) becomes the
   demonstration: the simulator is driven toward it step by step (end-effector deltas ->
   Meta-World actions) and :func:`~scfl_nodes.core.sim.collect_expert_episodes` records the
   base policy's embedding, the base action and the executed action, exactly as for expert demos.

The Panda base stands at :data:`PANDA_BASE_IN_WORLD` in Meta-World's world frame (facing the
table), so Meta-World's workspace lies inside its reach.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation

#: Panda base in Meta-World's world frame: at the origin, facing +y (the table). Closer bases (y = 0.15,
#: 0.25) left far drawer-close waypoints unreachable on the warm-started IK branch (measured).
PANDA_BASE_IN_WORLD = np.array([[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1.0]])
#: Meta-World moves the hand's mocap by ``action[:3] * 0.01`` m per step: gain 100 asks for the whole
#: remaining step at once (clipped to 1 cm). The experts' gains of 10-25 lagged too far behind the
#: path (door-lock replays, seed 5: 3/3 succeeded at 100, 1/3 at 10).
TRACK_GAIN = 100.0


@dataclasses.dataclass(frozen=True)
class HumanStyle:
    """How a human demonstration differs from the expert's: tremor and a different scene frame."""

    tremor_m: float = 0.002  # sd of the (smoothed) hand position noise
    tremor_rad: float = 0.03  # sd of the (smoothed) hand orientation noise
    scene_shift_m: float = 0.5  # the human scene frame is moved up to this far ...
    scene_turn_rad: float = np.pi  # ... and turned up to this much about z


def _pose(position, rotation=None) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = position
    if rotation is not None:
        T[:3, :3] = rotation
    return T


def _smooth_noise(rng, n: int, dim: int, sd: float, width: int = 9) -> np.ndarray:
    """Low-pass noise (moving average of white noise), rescaled to ``sd``: hands tremble smoothly."""
    if sd <= 0:
        return np.zeros((n, dim))
    raw = rng.normal(size=(n + width - 1, dim))
    kernel = np.ones(width) / width
    smooth = np.stack([np.convolve(raw[:, d], kernel, mode="valid") for d in range(dim)], axis=1)
    return smooth / max(smooth.std(), 1e-12) * sd


def human_demo_from_expert(episode: dict, task: str, seed: int, style: HumanStyle = HumanStyle()):
    """A :class:`~scfl_nodes.core.retarget.HumanDemo` from an expert episode's raw states.

    Returns ``(demo, object_pose_world)``: the human demo in its own scene frame and the
    object's pose in the simulator's world frame (where the robot will find it).
    """
    from scfl_nodes.core.retarget import make_human_demo

    rng = np.random.default_rng(seed)
    state = np.asarray(episode["state"], dtype=float)
    n = len(state)
    obj_world = _pose(state[0, 4:7])  # object frame: its position, world-aligned axes
    palm_down = Rotation.from_euler("x", np.pi)
    tremor = Rotation.from_rotvec(_smooth_noise(rng, n, 3, style.tremor_rad))
    hand_world = np.stack([_pose(p, (palm_down * r).as_matrix())
                           for p, r in zip(state[:, 0:3] + _smooth_noise(rng, n, 3, style.tremor_m), tremor)])
    scene = _pose(rng.uniform(-style.scene_shift_m, style.scene_shift_m, 3) * [1, 1, 0.2],
                  Rotation.from_euler("z", rng.uniform(-style.scene_turn_rad, style.scene_turn_rad)).as_matrix())
    grip = (np.clip(np.asarray(episode["expert_action"], dtype=float)[:, 3], -1, 1) + 1) / 2
    demo = make_human_demo(scene @ hand_world, scene @ obj_world, gripper=grip, task=str(episode["task"]))
    return demo, obj_world


class PathFollower:
    """Drives the simulated hand along a retargeted end-effector path (one episode)."""

    def __init__(self, positions: np.ndarray, gripper: np.ndarray):
        self.positions = np.asarray(positions, dtype=float)
        self.gripper = np.asarray(gripper, dtype=float)
        self.step = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        k = min(self.step + 1, len(self.positions) - 1)
        self.step += 1
        move = np.clip(TRACK_GAIN * (self.positions[k] - np.asarray(obs, dtype=float)[:3]), -1, 1)
        return np.append(move, 2 * self.gripper[k] - 1).astype(np.float32)


def default_retargeter():
    """The project's Retargeter as configured in config/scfl.yaml's ``retarget`` section."""
    from scfl_nodes.core.config import load_config
    from scfl_nodes.core.retarget import Retargeter

    return Retargeter.from_config(load_config().retarget)


def retargeted_episodes(task: str, n: int, seed: int, base_policy=None, *, retargeter=None,
                        style: HumanStyle = HumanStyle(), max_steps: int | None = None) -> list[dict]:
    """``n`` demonstrations of ``task`` made through human demo -> retargeting -> simulator replay.

    Episodes have the format of :func:`~scfl_nodes.core.sim.collect_expert_episodes` plus
    ``retarget`` (the human demo, the object pose in the robot base frame and the IK result),
    for inspection. Failed replays are kept: imperfect demonstrations are what retargeting gives.
    """
    from scfl_nodes.core.sim import collect_expert_episodes
    from scfl_nodes.core.sim.tasks import MAX_EPISODE_STEPS

    max_steps = max_steps or MAX_EPISODE_STEPS
    retargeter = retargeter or default_retargeter()
    sources = collect_expert_episodes(task, n, seed=seed, base_policy=None, only_successful=False, max_steps=max_steps)
    base_inv = np.linalg.inv(PANDA_BASE_IN_WORLD)
    made = []
    for i, src in enumerate(sources):
        demo, obj_world = human_demo_from_expert(src, task, seed * 7919 + i, style)
        obj_robot = base_inv @ obj_world
        result, _arrays = retargeter.retarget_demo(demo, obj_robot)
        path_world = np.einsum("ij,tjk->tik", PANDA_BASE_IN_WORLD, result.achieved)
        made.append(dict(demo=demo, object_pose_robot=obj_robot, ik=result,
                         follower=PathFollower(path_world[:, :3, 3], demo.gripper)))
    episodes = collect_expert_episodes(task, n, seed=seed, base_policy=base_policy, only_successful=False,
                                       max_steps=max_steps, batch_size=1, actors=[m["follower"] for m in made])
    for ep, m in zip(episodes, made):
        ep["retarget"] = {k: m[k] for k in ("demo", "object_pose_robot", "ik")}
    return episodes
