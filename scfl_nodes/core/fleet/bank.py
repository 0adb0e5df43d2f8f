"""The fleet's skill bank: K residual skills (ISSUE 2's SkillModule) mixed per task by a router.

``a = a_base + sum_i w_i s_i(o, a_base)`` over the top-k skills the router picks for the
task. Local training updates only the routed skills of the robot's tasks; their flat numpy
state is what gets encrypted and federated. Behaviour cloning (the honest baseline, no
base policy) is here too because it trains on exactly the same demonstrations.
"""

from __future__ import annotations

import time
from typing import Iterable

import numpy as np
import torch
from torch import nn

from scfl_nodes.core.skills import SkillModule, load_numpy_state, skill_state_to_numpy

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

    def residual(self, obs: torch.Tensor, base: torch.Tensor, experts: list[int], weights: list[float]) -> torch.Tensor:
        out = torch.zeros_like(base)
        for e, w in zip(experts, weights):
            out = out + float(w) * self.experts[e](obs, base)
        return out

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
) -> dict:
    """Train the routed skills of ``bank`` in place on the demos of each task.

    Loss: ``|| a_base + sum_i w_i s_i(o, a_base) - a_expert ||^2``, mini-batches mixed over
    the robot's tasks. Skills not routed to any of these tasks get no gradient, hence a
    zero delta. ``proximal_mu > 0`` adds FedProx's ``mu/2 ||w - w_start||^2`` (w_start =
    the weights the round started from): long local training then cannot drift far from
    the federated model (client drift). Returns timing and loss metrics
    (``train_seconds`` = edge training time).
    """
    start = time.perf_counter()
    data = []
    for task, eps in episodes_by_task.items():
        if not eps:
            continue
        obs, base, expert, _ = _episode_arrays(eps)
        idx, w = routing[task]
        data.append((torch.from_numpy(obs), torch.from_numpy(base), torch.from_numpy(expert), idx, w))
    active = sorted({e for *_, idx, _ in data for e in idx})
    params = [p for e in active for p in bank.experts[e].parameters()]
    if not params or not data:
        return {"train_seconds": 0.0, "loss": float("nan"), "samples": 0, "active_experts": []}
    opt = torch.optim.Adam(params, lr=lr)
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else None
    gen = torch.Generator().manual_seed(int(seed))
    samples = sum(len(d[0]) for d in data)
    loss_value = float("nan")
    steps = 0
    for _ in range(epochs):
        perms = [torch.randperm(len(d[0]), generator=gen) for d in data]
        n_batches = max(1, max(-(-len(d[0]) // batch_size) for d in data))
        for b in range(n_batches):
            opt.zero_grad()
            total = 0.0
            for d, perm in zip(data, perms):
                sel = perm[(b * batch_size) % len(perm):][:batch_size]
                obs, base, expert, idx, w = d[0][sel], d[1][sel], d[2][sel], d[3], d[4]
                pred = base + bank.residual(obs, base, idx, w)
                total = total + ((pred - expert) ** 2).mean()
            loss_value = float(total.detach()) / len(data)
            if anchor is not None:
                total = total + 0.5 * proximal_mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            total.backward()
            opt.step()
            steps += 1
    return {
        "train_seconds": time.perf_counter() - start,
        "loss": loss_value,
        "samples": int(samples),
        "epochs": int(epochs),
        "steps": steps,
        "active_experts": active,
    }


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


def train_bc(episodes: list[dict], *, hidden: int, epochs: int, seed: int, lr: float = 1e-3, batch_size: int = 64):
    """Behaviour cloning on the same demonstrations (state -> expert action); returns (policy, metrics)."""
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
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for b in range(0, len(x), batch_size):
            sel = perm[b : b + batch_size]
            opt.zero_grad()
            loss = ((policy(x[sel]) - y[sel]) ** 2).mean()
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
    return policy, {"train_seconds": time.perf_counter() - start, "loss": loss_value, "samples": int(len(x))}
