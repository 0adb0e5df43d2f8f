"""Synthetic demonstrations of a systematically biased base policy.

Used by the tests, the bundled quick-start demonstrations (``test/data/demos``) and the
benchmarks: the "expert" is a fixed nonlinear policy of the observation, the "base"
policy is the expert plus a calibration-like error (constant offset + a term linear in
the observation) and a little noise. A residual skill should learn to cancel the error.
"""

from __future__ import annotations

import numpy as np

from .demonstrations import Episode


def synthetic_episodes(
    n_episodes: int,
    steps: int = 50,
    obs_dim: int = 32,
    action_dim: int = 7,
    *,
    task: str | None = None,
    task_seed: int = 0,
    seed: int = 0,
    bias_scale: float = 0.5,
    noise: float = 0.01,
) -> list[Episode]:
    """``n_episodes`` episodes of one task; ``task_seed`` fixes expert and bias, ``seed`` the rollouts."""
    task_rng = np.random.default_rng(task_seed)
    expert_w = task_rng.normal(size=(obs_dim, action_dim)) / np.sqrt(obs_dim)
    bias_const = bias_scale * task_rng.uniform(-1, 1, size=action_dim)
    bias_w = bias_scale * task_rng.normal(size=(obs_dim, action_dim)) / np.sqrt(obs_dim)
    rng = np.random.default_rng(seed)
    episodes = []
    for n in range(n_episodes):
        # a smooth AR(1) trajectory with unit stationary variance, like a robot moving through a scene
        obs = np.empty((steps, obs_dim))
        obs[0] = rng.normal(size=obs_dim)
        for t in range(1, steps):
            obs[t] = 0.8 * obs[t - 1] + 0.6 * rng.normal(size=obs_dim)
        expert = np.tanh(obs @ expert_w)
        base = expert + bias_const + obs @ bias_w + rng.normal(scale=noise, size=expert.shape)
        episodes.append(Episode(
            observation=obs.astype(np.float32),
            base_action=base.astype(np.float32),
            expert_action=expert.astype(np.float32),
            timestamp=np.arange(steps, dtype=np.float64) * 0.05,
            task=task,
            source=f"synthetic[{task_seed}:{seed}:{n}]",
        ))
    return episodes


def skewed_multitask_episodes(seed: int = 0, counts=(14, 14, 14, 2, 2, 2, 2, 2), steps: int = 20, obs_dim: int = 8,
                              action_dim: int = 2, embedding_dim: int = 16) -> tuple[list[Episode], np.ndarray]:
    """Episodes of ``len(counts)`` tasks with skewed traffic plus a task embedding per episode.

    The default gives 3 of 8 tasks 84 % of the episodes: the setting of the paper's 7.4
    load-balancing ablation (``train_skills_with_router`` with and without the loss).
    """
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(counts), embedding_dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    episodes, task_emb = [], []
    for task, n in enumerate(counts):
        for ep in synthetic_episodes(n, steps=steps, obs_dim=obs_dim, action_dim=action_dim, task_seed=task,
                                     seed=100 + task, bias_scale=1.0):
            episodes.append(ep)
            task_emb.append(emb[task])
    return episodes, np.stack(task_emb).astype(np.float32)
