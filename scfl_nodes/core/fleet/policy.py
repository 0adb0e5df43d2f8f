"""Evaluation policies as small picklable specs, run in a pool of worker processes.

Evaluation dominates the fleet's run time (Meta-World physics, ~1-4k steps/s per core),
so every (method, robot, task) policy is described by a plain-data :class:`PolicySpec`
(numpy weights, routing) that a worker process rebuilds next to its own copy of the
frozen base policy. Identical specs (e.g. all robots holding the same FedAvg model) are
evaluated once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np

from scfl_nodes.core.vla.interface import ObservingPolicy

BASE_POLICY_NAME = "scfl-metaworld-base"


@dataclasses.dataclass
class PolicySpec:
    """What to run: ``base`` only, ``skills`` (base + routed residual skills), ``bc``, or
    ``expert`` (Meta-World's scripted policy that made the demonstrations: the reference
    a learner that imitates it is measured against)."""

    kind: str
    base_name: str = BASE_POLICY_NAME
    experts: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    state: dict[str, np.ndarray] | None = None  # only the routed experts' tensors / the BC net
    dims: dict[str, int] | None = None

    def fingerprint(self, task: str) -> str:
        """Content hash: specs with equal weights and routing evaluate to the same numbers."""
        h = hashlib.sha256()
        h.update(f"{self.kind}|{self.base_name}|{task}|{self.experts}|{np.round(self.weights, 8).tolist()}|{self.dims}".encode())
        for name in sorted(self.state or {}):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.state[name], dtype=np.float32).tobytes())
        return h.hexdigest()


def skills_spec(bank_state: dict[str, np.ndarray], dims: dict, experts: list[int], weights: list[float], base_name: str = BASE_POLICY_NAME) -> PolicySpec:
    """A spec holding only the routed experts' tensors (renumbered 0..k-1)."""
    state = {}
    for new, e in enumerate(experts):
        prefix = f"experts.{e}."
        for name, value in bank_state.items():
            if name.startswith(prefix):
                state[f"experts.{new}.{name[len(prefix):]}"] = value
    return PolicySpec("skills", base_name, tuple(range(len(experts))), tuple(float(w) for w in weights), state, dict(dims))


_BASE_CACHE: dict[str, Any] = {}


def _base_policy(name: str):
    if name not in _BASE_CACHE:
        from scfl_nodes.core.vla import load_base_policy

        _BASE_CACHE[name] = load_base_policy(name)
    return _BASE_CACHE[name]


def build_policy_fn(spec: PolicySpec, task: str | None = None):
    """A policy for :func:`scfl_nodes.core.sim.evaluate`: BC and the scripted expert (of ``task``) as
    ``fn(state_batch, instruction)``, base / base + skills as an ObservingPolicy (an image base
    gets rendered frames)."""
    import torch

    if spec.kind == "expert":
        from scfl_nodes.core.sim import scripted_expert

        if task is None:
            raise ValueError("an expert PolicySpec needs the task whose scripted policy to run")
        expert = scripted_expert(task)
        return lambda obs, instruction: expert.act(np.atleast_2d(obs))

    if spec.kind == "bc":
        from .bank import BCPolicy

        net = BCPolicy(**spec.dims)
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in spec.state.items()})
        net.eval()

        def bc_fn(obs, instruction):
            with torch.no_grad():
                return np.clip(net(torch.as_tensor(obs, dtype=torch.float32)).numpy(), -1, 1)

        return bc_fn

    base = _base_policy(spec.base_name)
    if spec.kind == "base":
        return ComposedPolicy(base)
    if spec.kind != "skills":
        raise ValueError(f"unknown policy kind {spec.kind!r}")
    from scfl_nodes.core.skills import SkillComposer

    from .bank import SkillBank

    bank = SkillBank(len(spec.experts), spec.dims["obs_dim"], spec.dims["action_dim"], spec.dims["hidden"])
    bank.load(spec.state)
    bank.eval()
    # skill_node's composer: the simulated robot acts with the code a ROS robot acts with
    composer = SkillComposer([bank.experts[e] for e in spec.experts])
    return ComposedPolicy(base, composer, list(spec.weights))


class ComposedPolicy(ObservingPolicy):
    """base + sum_i w_i skill_i(embedding, base), clipped to [-1, 1], with skill_node's
    ``SkillComposer``. It observes what the base observes (rendered frames for an image base),
    so rollouts feed it exactly like the base."""

    def __init__(self, base, composer=None, weights=()):
        self.base, self.composer = base, composer
        self.weights = np.asarray(weights, dtype=np.float32)
        self.name = f"{base.name}+skills" if composer is not None else base.name

    @property
    def observation_spec(self):
        return self.base.observation_spec

    def predict(self, observation):
        action, embedding = self.base.predict(observation)
        action = np.asarray(action, dtype=np.float32)
        if self.composer is None:
            return np.clip(action, -1, 1), embedding
        out = self.composer.compose_numpy(np.asarray(embedding, dtype=np.float32), action, self.weights)
        return np.clip(out, -1, 1), embedding


@dataclasses.dataclass
class EvalJob:
    key: str
    spec: PolicySpec
    task: str
    episodes: int
    seed: int
    max_steps: int


def run_eval_job(job: EvalJob) -> tuple[str, float, dict]:
    """Worker entry point: success rate of one policy on one task (seeded episodes)."""
    import torch

    torch.set_num_threads(1)
    from scfl_nodes.core.sim import evaluate

    fn = build_policy_fn(job.spec, job.task)
    # A few envs in lock-step: building a Meta-World env costs ~0.25 s, as much as ~300
    # physics steps, so a small batch beats one env per episode.
    rate, details = evaluate(fn, job.task, job.episodes, job.seed, max_steps=job.max_steps, return_details=True,
                             batch_size=min(job.episodes, 4))
    return job.key, float(rate), {"length": details["length"]}


class Evaluator:
    """Runs :class:`EvalJob` s in ``workers`` spawned processes (or inline when 1), deduplicating."""

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))
        self._pool = None
        self.cache: dict[str, float] = {}
        self.episodes_run = 0
        self.steps_run = 0

    def __enter__(self):
        if self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            os.environ.setdefault("OMP_NUM_THREADS", "1")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def run(self, jobs: list[EvalJob], progress=None) -> dict[str, float]:
        """Success rate per job key; jobs whose key was already evaluated are not rerun."""
        todo: dict[str, EvalJob] = {}
        for job in jobs:
            if job.key not in self.cache and job.key not in todo:
                todo[job.key] = job
        if self._pool is None:
            results = map(run_eval_job, todo.values())
        else:
            # Longest-first would need lengths we do not know; interleave tasks instead.
            results = self._pool.map(run_eval_job, todo.values())
        for key, rate, info in results:
            self.cache[key] = rate
            self.episodes_run += todo[key].episodes
            self.steps_run += int(sum(info["length"]))
            if progress is not None:
                progress.update(1)
        return {job.key: self.cache[job.key] for job in jobs}
