"""The fleet's skill bank: K residual skills (ISSUE 2's SkillModule) mixed per task by a router.

``a = a_base + sum_i w_i s_i(o, a_base)`` over the top-k skills the router picks for the
task (:func:`~scfl_nodes.core.skills.compose_actions`, the composition skill_node runs).
Local training is :func:`~scfl_nodes.core.training.residual.train_routed_skills`, the loop
``scfl train-skill`` runs too; it updates only the routed skills of the robot's tasks, whose
flat numpy state is what gets encrypted and federated. Behaviour cloning (the honest
baseline, no base policy) is here too because it trains on exactly the same demonstrations.
"""

from __future__ import annotations

import time
from typing import Iterable

import numpy as np
import torch
from torch import nn

from scfl_nodes.core.skills import SkillModule, compose_actions, load_numpy_state, skill_state_to_numpy
from scfl_nodes.core.training.residual import RoutedData, scheduled_lr, train_routed_skills

Routing = dict[str, tuple[list[int], list[float]]]  # task -> (expert indices, weights)


class SkillBank(nn.Module):
    """``num_experts`` SkillModules of identical shape; deterministic init from ``seed``."""

    def __init__(self, num_experts: int, obs_dim: int, action_dim: int, hidden: int, seed: int = 0):
        super().__init__()
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(int(seed))
        self.experts = nn.ModuleList(SkillModule(obs_dim, action_dim, hidden) for _ in range(num_experts))
        torch.random.set_rng_state(gen_state)
        self.dims = {"obs_dim": obs_dim, "action_dim": action_dim, "hidden": hidden}

    def act(self, obs: torch.Tensor, base: torch.Tensor, experts: list[int], weights: list[float]) -> torch.Tensor:
        """``a_base + sum_i w_i s_i(o, a_base)`` over ``experts``."""
        residuals = torch.stack([self.experts[e](obs, base) for e in experts])
        return compose_actions(base, residuals, torch.tensor(list(weights), dtype=base.dtype))

    def state(self) -> dict[str, np.ndarray]:
        """Flat ``{"experts.<i>.<param>": float32}`` (the tensors that get federated)."""
        return skill_state_to_numpy(self)

    def load(self, state: dict[str, np.ndarray]) -> "SkillBank":
        load_numpy_state(self, state)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def expert_parameters(self) -> int:
        return self.experts[0].num_parameters()


def _episode_arrays(episodes: Iterable[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    eps = list(episodes)
    obs = np.concatenate([e["observation"] for e in eps]).astype(np.float32)
    base = np.concatenate([e["base_action"] for e in eps]).astype(np.float32)
    expert = np.concatenate([e["expert_action"] for e in eps]).astype(np.float32)
    state = np.concatenate([e["state"] for e in eps]).astype(np.float32) if "state" in eps[0] else obs
    return obs, base, expert, state


def train_bank(
    bank: SkillBank,
    episodes_by_task: dict[str, list[dict]],
    routing: Routing,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    proximal_mu: float = 0.0,
    lr_schedule: str = "constant",
) -> dict:
    """Train the routed skills of ``bank`` in place on the demos of each task.

    Loss: ``|| a_base + sum_i w_i s_i(o, a_base) - a_expert ||^2``, mini-batches mixed over
    the robot's tasks. Skills not routed to any of these tasks get no gradient, hence a
    zero delta. ``proximal_mu > 0`` adds FedProx's ``mu/2 ||w - w_start||^2`` (w_start =
    the weights the round started from): long local training then cannot drift far from
    the federated model (client drift). ``lr_schedule``: ``constant`` or ``cosine`` over
    these ``epochs`` (:func:`~scfl_nodes.core.training.residual.scheduled_lr`). Returns timing and loss metrics
    (``train_seconds`` = edge training time).
    """
    start = time.perf_counter()
    data = []
    for task, eps in episodes_by_task.items():
        if eps:
            obs, base, expert, _ = _episode_arrays(eps)
            idx, w = routing[task]
            data.append(RoutedData(torch.from_numpy(obs), torch.from_numpy(base), torch.from_numpy(expert), idx, w))
    m = train_routed_skills(bank.experts, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            proximal_mu=proximal_mu, lr_schedule=lr_schedule)
    return {"train_seconds": time.perf_counter() - start, "loss": m["loss"], "samples": m["samples"],
            "epochs": int(epochs), "steps": m["steps"], "active_experts": m["active_experts"]}


class BCPolicy(nn.Module):
    """Behaviour cloning MLP on the raw Meta-World state: the baseline with no base policy."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int):
        super().__init__()
        # Meta-World states mix metres and quaternions: standardise with the demos' statistics.
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.net = nn.Sequential(
            nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, action_dim)
        )
        self.dims = {"state_dim": state_dim, "action_dim": action_dim, "hidden": hidden}

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net((state - self.state_mean) / self.state_std)


def train_bc(episodes: list[dict], *, hidden: int, epochs: int, seed: int, lr: float = 1e-3, batch_size: int = 64,
             lr_schedule: str = "constant"):
    """Behaviour cloning on the same demonstrations (state -> expert action); returns (policy, metrics).

    ``lr_schedule`` as for the skills; the fleet keeps BC at ``constant``, which measured
    better for BC than ``cosine`` (docs/fleet.md, "Training schedule")."""
    start = time.perf_counter()
    _, _, expert, state = _episode_arrays(episodes)
    torch.manual_seed(int(seed))
    policy = BCPolicy(state.shape[1], expert.shape[1], hidden)
    policy.state_mean.copy_(torch.from_numpy(state.mean(0)))
    policy.state_std.copy_(torch.from_numpy(state.std(0)).clamp_min(1e-2))
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    x, y = torch.from_numpy(state), torch.from_numpy(expert)
    loss_value = float("nan")
    total_steps, step = epochs * -(-len(x) // batch_size), 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for b in range(0, len(x), batch_size):
            sel = perm[b : b + batch_size]
            for group in opt.param_groups:
                group["lr"] = scheduled_lr(lr, lr_schedule, step, total_steps)
            step += 1
            opt.zero_grad()
            loss = ((policy(x[sel]) - y[sel]) ** 2).mean()
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
    return policy, {"train_seconds": time.perf_counter() - start, "loss": loss_value, "samples": int(len(x))}
