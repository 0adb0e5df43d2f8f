"""Rollouts on Meta-World: expert demonstrations in scfl's episode format, and success rates.

Episodes of one call run in lock-step over a small batch of envs so that a torch policy is
called once per step for the whole batch (the env physics is the cost, not the network).
Every episode is seeded on its own (see :func:`reset_episode`), so results do not depend on
the batch size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .env import acquire_envs, release_envs, reset_episode
from .experts import ScriptedExpert
from .tasks import ACTION_DIM, MAX_EPISODE_STEPS, OBS_DIM, check_task, instruction_for

PolicyFn = Callable[[np.ndarray, str], Any]


def _is_base_policy(policy: Any) -> bool:
    """Base models and compositions on them (:class:`ObservingPolicy`) get spec-built observations."""
    from scfl_nodes.core.vla.interface import ObservingPolicy

    return isinstance(policy, ObservingPolicy)


def _policy_actions(policy: Any, obs: np.ndarray, instruction: str, images: np.ndarray | None = None) -> np.ndarray:
    """Call a policy on a (B, 39) batch (+ rendered frames for image models).

    A :class:`~scfl_nodes.core.vla.interface.BasePolicy` gets the observation its spec asks
    for (``predict``); any other callable gets ``(obs, instruction)``. Only the action is used.
    """
    if _is_base_policy(policy):
        out = policy.predict(policy.observation_from(instruction, image=images, state=obs))
    else:
        out = policy(obs, instruction)
    if isinstance(out, tuple):
        out = out[0]
    out = np.asarray(out, dtype=np.float32)
    if out.ndim == 1:
        out = out[None]
    if out.shape != (obs.shape[0], ACTION_DIM):
        raise ValueError(f"policy returned actions of shape {out.shape}, expected ({obs.shape[0]}, {ACTION_DIM})")
    return out


class _Renderers:
    """Offscreen cameras on the rollout's envs, only when the policy reads images."""

    def __init__(self, policy: Any, envs: list, camera: str):
        self.items = None
        if _is_base_policy(policy) and policy.observation_spec.image:
            from scfl_nodes.core.perception.sim_camera import EnvRenderer

            spec = policy.observation_spec
            size, camera = spec.image_size or 224, spec.camera or camera
            self.items = [EnvRenderer(env, camera, size, size) for env in envs]

    def frames(self, idx) -> np.ndarray | None:
        if self.items is None:
            return None
        return np.stack([self.items[j].render()[0] for j in idx])

    def close(self) -> None:
        for r in self.items or []:
            r.close()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ep", disable=not enabled, leave=False)


def evaluate(
    policy_fn: PolicyFn | Any,
    task: str,
    n_episodes: int = 50,
    seed: int = 0,
    *,
    instruction: str | None = None,
    max_steps: int = MAX_EPISODE_STEPS,
    batch_size: int = 10,
    progress: bool = False,
    return_details: bool = False,
    camera: str = "corner",
):
    """Success rate of ``policy_fn`` on ``task`` over ``n_episodes`` seeded episodes.

    ``policy_fn(obs_batch, instruction) -> actions`` gets a (B, 39) float64 state batch and
    returns (B, 4) actions (a base policy object with ``act`` works too). An episode counts
    as a success when Meta-World reports success within ``max_steps``; it stops there.
    With ``return_details`` also returns a dict with per-episode success and lengths.
    Image policies (``observation_spec.image``) see frames rendered from ``camera`` (the
    policy's own training camera when it names one) at their input resolution.
    """
    check_task(task)
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    instruction = instruction or instruction_for(task)
    batch_size = max(1, min(batch_size, n_episodes))
    envs = acquire_envs(task, batch_size)
    renderers = _Renderers(policy_fn, envs, camera)
    try:
        return _evaluate(policy_fn, task, n_episodes, seed, instruction, max_steps, envs, progress, return_details, renderers)
    finally:
        renderers.close()
        release_envs(task, envs)


def _evaluate(policy_fn, task, n_episodes, seed, instruction, max_steps, envs, progress, return_details, renderers):
    batch_size = len(envs)
    successes = np.zeros(n_episodes, dtype=bool)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    bar = _progress(n_episodes, f"eval {task}", progress)
    for start in range(0, n_episodes, batch_size):
        ids = list(range(start, min(start + batch_size, n_episodes)))
        obs = np.stack([reset_episode(envs[j], seed, i) for j, i in enumerate(ids)])
        active = np.ones(len(ids), dtype=bool)
        for step in range(max_steps):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            actions = _policy_actions(policy_fn, obs[idx], instruction, renderers.frames(idx))
            for row, j in enumerate(idx):
                o, _, _, truncated, info = envs[j].step(actions[row])
                obs[j] = o
                lengths[ids[j]] = step + 1
                if info.get("success", 0.0) >= 1.0:
                    successes[ids[j]] = True
                    active[j] = False
                elif truncated:
                    active[j] = False
        bar.update(len(ids))
    bar.close()
    rate = float(successes.mean())
    if return_details:
        return rate, {"success": successes.tolist(), "length": lengths.tolist(), "seed": seed, "task": task}
    return rate


def collect_expert_episodes(
    task: str,
    n: int,
    seed: int = 0,
    base_policy: Any = None,
    *,
    driver: str = "expert",
    max_steps: int = MAX_EPISODE_STEPS,
    only_successful: bool = True,
    batch_size: int = 10,
    progress: bool = False,
    actors: list | None = None,
) -> list[dict[str, np.ndarray]]:
    """``n`` scripted-expert episodes of ``task`` in scfl's demonstration format.

    Each episode is a dict with ``observation`` (T, obs_dim) = the base policy's observation
    embedding, ``base_action`` (T, 4) = the frozen base's action, ``expert_action`` (T, 4),
    ``timestamp`` (T,) seconds, ``task`` (the instruction), plus ``state`` (T, 39) raw
    Meta-World state and ``success``. ``base_policy`` is an object with
    ``act(obs, instruction) -> (action, embedding)``, a registry name such as
    ``"scfl-metaworld-base"``, or None: then ``observation`` is the raw state and
    ``base_action`` is zero (plain behaviour cloning data).

    ``driver="expert"`` executes the expert's action (classic demonstrations);
    ``driver="base"`` executes the base action and records the expert's correction at the
    states the base visits (DAgger-style relabelling, closer to what a residual meets).
    With ``only_successful`` (default) failed expert episodes are skipped and replaced, so
    exactly ``n`` episodes come back (an error if that takes more than ``4 n + 10`` tries).
    ``actors`` (one per episode, each with ``act(state) -> action``) replace the scripted
    expert, episode ``i`` driven by ``actors[i]`` (retargeted demonstrations replay this way).
    """
    check_task(task)
    if driver not in ("expert", "base"):
        raise ValueError(f"driver must be 'expert' or 'base', got {driver!r}")
    if isinstance(base_policy, str):
        from scfl_nodes.core.vla import load_base_policy

        base_policy = load_base_policy(base_policy)
    if driver == "base" and base_policy is None:
        raise ValueError("driver='base' needs a base_policy")
    instruction = instruction_for(task)
    if actors is not None and (len(actors) != n or only_successful):
        raise ValueError("actors needs one actor per episode and only_successful=False")
    expert = ScriptedExpert(task) if actors is None else _PerEpisode(actors)
    batch_size = max(1, min(batch_size, n))
    envs = acquire_envs(task, batch_size)
    renderers = _Renderers(base_policy, envs, "corner")
    try:
        return _collect(task, n, seed, base_policy, driver, max_steps, only_successful, envs, progress, instruction,
                        expert, renderers, actors)
    finally:
        renderers.close()
        release_envs(task, envs)


class _PerEpisode:
    """Episode-indexed actors in place of one scripted expert."""

    def __init__(self, actors: list):
        self.actors = actors

    def act_one(self, episode: int, state: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(self.actors[episode].act(state), dtype=np.float32), -1.0, 1.0)


def _collect(task, n, seed, base_policy, driver, max_steps, only_successful, envs, progress, instruction, expert, renderers,
             actors=None):
    batch_size = len(envs)
    dt = float(envs[0].dt)
    episodes: list[dict[str, np.ndarray]] = []
    max_tries = 4 * n + 10
    next_episode = 0
    bar = _progress(n, f"demos {task}", progress)
    while len(episodes) < n:
        if next_episode >= max_tries:
            raise RuntimeError(f"only {len(episodes)} of {n} successful {task} episodes in {max_tries} tries")
        ids = list(range(next_episode, next_episode + min(batch_size, n - len(episodes))))
        next_episode = ids[-1] + 1
        obs = np.stack([reset_episode(envs[j], seed, i) for j, i in enumerate(ids)])
        active = np.ones(len(ids), dtype=bool)
        rec: list[dict[str, list]] = [
            {"state": [], "observation": [], "base_action": [], "expert_action": []} for _ in ids
        ]
        success = np.zeros(len(ids), dtype=bool)
        for _step in range(max_steps):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            batch = obs[idx]
            expert_actions = expert.act(batch) if actors is None else np.stack(
                [expert.act_one(ids[j], obs[j]) for j in idx])
            if base_policy is not None:
                # an image base (scfl-metaworld-vision) sees the rendered frame, a state base the state
                if _is_base_policy(base_policy):
                    base_actions, embeddings = base_policy.predict(
                        base_policy.observation_from(instruction, image=renderers.frames(idx), state=batch))
                else:  # any (obs, instruction) -> (action, embedding) callable
                    base_actions, embeddings = base_policy(batch, instruction)
                base_actions = np.asarray(base_actions, dtype=np.float32)
                embeddings = np.asarray(embeddings, dtype=np.float32)
            else:
                base_actions = np.zeros_like(expert_actions)
                embeddings = batch.astype(np.float32)
            executed = expert_actions if driver == "expert" else np.clip(base_actions, -1, 1)
            for row, j in enumerate(idx):
                rec[j]["state"].append(batch[row].astype(np.float32))
                rec[j]["observation"].append(embeddings[row])
                rec[j]["base_action"].append(base_actions[row])
                rec[j]["expert_action"].append(expert_actions[row])
                o, _, _, truncated, info = envs[j].step(executed[row])
                obs[j] = o
                if info.get("success", 0.0) >= 1.0:
                    success[j] = True
                    active[j] = False
                elif truncated:
                    active[j] = False
        for j in range(len(ids)):
            if only_successful and driver == "expert" and not success[j]:
                continue
            if len(episodes) >= n:
                break
            T = len(rec[j]["state"])
            episodes.append(
                {
                    "observation": np.stack(rec[j]["observation"]).astype(np.float32),
                    "base_action": np.stack(rec[j]["base_action"]).astype(np.float32),
                    "expert_action": np.stack(rec[j]["expert_action"]).astype(np.float32),
                    "timestamp": np.arange(T, dtype=np.float64) * dt,
                    "task": np.array(instruction),
                    "state": np.stack(rec[j]["state"]).astype(np.float32),
                    "success": np.array(bool(success[j])),
                }
            )
            bar.update(1)
    bar.close()
    return episodes


def save_episodes(
    episodes: list[dict[str, np.ndarray]], directory: str | os.PathLike, prefix: str = "episode"
) -> list[Path]:
    """Write episodes as ``<prefix>_NNNN.npz`` into ``directory``; never overwrites a file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    index = 0
    for ep in episodes:
        while (directory / f"{prefix}_{index:04d}.npz").exists():
            index += 1
        path = directory / f"{prefix}_{index:04d}.npz"
        keys = ("observation", "base_action", "expert_action", "timestamp", "task")
        with open(path, "xb") as fh:  # "x": fail rather than overwrite a concurrent writer's file
            np.savez(fh, **{k: ep[k] for k in keys if k in ep})
        paths.append(path)
        index += 1
    return paths


__all__ = ["evaluate", "collect_expert_episodes", "save_episodes", "OBS_DIM", "ACTION_DIM"]
