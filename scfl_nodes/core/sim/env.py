"""Creating Meta-World v3 environments by task name and seed, without the gym wrapper stack.

``gym.make('Meta-World/MT1', ...)`` stacks six wrappers and draws tasks from a fixed list
of 50 goal positions. scfl instead wants: a fresh random object/goal position for every
episode, reproducible from ``(seed, episode index)``, and no rendering unless asked (state
based rollouts run at ~1,500 steps/s). This module configures the raw Meta-World class
the same way Meta-World's own "goal observable" variant does.
"""

from __future__ import annotations

import numpy as np

from .tasks import check_task


def _episode_seed(seed: int, episode: int) -> int:
    """Independent, reproducible seed for episode ``episode`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0])


def make_env(
    task: str,
    seed: int = 0,
    *,
    render_mode: str | None = None,
    width: int = 224,
    height: int = 224,
    camera_name: str | None = None,
):
    """A Meta-World v3 env for ``task`` whose resets draw new positions from ``seed``.

    ``render_mode`` is None (state only, fast), ``"rgb_array"`` or ``"depth_array"``.
    """
    check_task(task)
    # Import here: metaworld pulls in mujoco + gymnasium (~1 s) and most callers of the
    # package only want the task table.
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    kwargs = {"render_mode": render_mode, "width": width, "height": height}
    if camera_name is not None:
        kwargs["camera_name"] = camera_name
    env = ALL_V3_ENVIRONMENTS[task](**kwargs)
    env._partially_observable = False  # goal position is part of the observation
    try:
        del env.sawyer_observation_space  # cached property: recompute with the goal visible
    except AttributeError:
        pass
    env._set_task_called = True
    env._freeze_rand_vec = False  # every reset draws new object / goal positions ...
    env.seeded_rand_vec = True  # ... from env.np_random, so a seed reproduces them
    env.seed(int(seed))
    env.scfl_task = task
    return env


def reset_episode(env, seed: int, episode: int) -> np.ndarray:
    """Reset ``env`` to episode ``episode`` of the run seeded ``seed``; returns the first observation.

    Each episode is seeded on its own so that results do not depend on how episodes are
    batched or ordered.
    """
    env.seed(_episode_seed(seed, episode))
    obs, _ = env.reset()
    return np.asarray(obs, dtype=np.float64)


# Building a Meta-World env parses its MuJoCo XML (~0.2 s). Evaluations and demo collection
# re-seed every episode (reset_episode), so an env's history never leaks into a result and
# state-only envs can be re-used across calls: a small per-process pool saves ~2 s per call.
_POOL: dict[str, list] = {}
_POOL_LOCK = __import__("threading").Lock()
_POOL_MAX_PER_TASK = 16


def acquire_envs(task: str, n: int) -> list:
    """``n`` render-free envs for ``task`` (from the pool when possible); give them back with release_envs."""
    check_task(task)
    with _POOL_LOCK:
        free = _POOL.setdefault(task, [])
        envs = [free.pop() for _ in range(min(n, len(free)))]
    envs += [make_env(task, 0) for _ in range(n - len(envs))]
    return envs


def release_envs(task: str, envs: list) -> None:
    with _POOL_LOCK:
        free = _POOL.setdefault(task, [])
        for env in envs:
            if len(free) < _POOL_MAX_PER_TASK:
                free.append(env)
            else:
                env.close()
