"""Scripted experts from ``metaworld.policies`` for the scfl tasks (every MT50 v3 task has one)."""

from __future__ import annotations

import numpy as np

from .tasks import check_task


class ScriptedExpert:
    """Meta-World's hand-written controller for one task; ``act(obs) -> action`` in [-1, 1]."""

    def __init__(self, task: str):
        import warnings

        import metaworld.policies as policies

        self.task = check_task(task)
        # Meta-World's own task -> scripted policy table (all 50 v3 tasks).
        self._policy = policies.ENV_POLICY_MAP[task]()
        # The scripted policies warn on every call that their gains may saturate; the env
        # clips anyway, so the warning carries no information for us.
        warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high", category=UserWarning)

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim == 2:
            return np.stack([self.act(o) for o in obs])
        return np.clip(np.asarray(self._policy.get_action(obs), dtype=np.float32), -1.0, 1.0)

    __call__ = act


def scripted_expert(task: str) -> ScriptedExpert:
    return ScriptedExpert(task)
