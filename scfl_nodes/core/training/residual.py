"""Local residual-skill training (paper Appendix C): learn ``expert - base`` from demonstrations.

The frozen base policy stays untouched; the skills only learn the correction the
demonstrations show. One training loop, :func:`train_routed_skills`, fits the composed
action ``a_base + sum_i w_i s_i(o, a_base)`` (:func:`~scfl_nodes.core.skills.compose_actions`,
what skill_node runs) to the demonstrated action, over one or several data sets each routed
to its own skills (the fleet's skill bank: one set per task). :func:`train_residual_skill`
is its single-skill case as ``scfl train-skill`` runs it: seeded (init, split and
shuffling), whole episodes kept aside for validation, early stopping, best-validation weights.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..skills.composer import compose_actions
from ..skills.module import SkillModule
from .demonstrations import DemonstrationError, Episode, split_episodes, validate_episode


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Temporarily limit torch's intra-op threads (tiny MLPs run fastest on one thread,
    and on a loaded machine extra threads make them many times slower)."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


LR_SCHEDULES = ("constant", "cosine")


def scheduled_lr(lr: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    ``cosine`` decays from ``lr`` to 0 over the run. Why: with a constant lr, Adam's last
    steps still move the weights by ~lr, so the weights a run ends with are one noisy
    point of the loss landscape; a closed-loop policy can lose most of its success
    between two neighbouring points (door-lock seed 4 of the full benchmark: 90 % after
    4 rounds, 5 % after the 5th; docs/fleet.md, "Training schedule").
    """
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def _stack(episodes: Sequence[Episode]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    obs = torch.as_tensor(np.concatenate([e.observation for e in episodes]), dtype=torch.float32)
    base = torch.as_tensor(np.concatenate([e.base_action for e in episodes]), dtype=torch.float32)
    expert = torch.as_tensor(np.concatenate([e.expert_action for e in episodes]), dtype=torch.float32)
    return obs, base, expert - base


@torch.no_grad()
def residual_action_error(module: SkillModule, episodes: Sequence[Episode]) -> dict:
    """Mean squared action error against the expert: base alone vs base + skill."""
    obs, base, target = _stack(episodes)
    module.eval()
    residual = module(obs, base)
    return {
        "base_mse": float(target.pow(2).mean()),
        "skill_mse": float((target - residual).pow(2).mean()),
        "steps": int(obs.shape[0]),
    }


@dataclasses.dataclass
class RoutedData:
    """Demonstration steps routed to ``experts`` with mixing ``weights`` (one task's data)."""

    obs: torch.Tensor
    base: torch.Tensor
    expert: torch.Tensor
    experts: Sequence[int]
    weights: Sequence[float]


def train_routed_skills(
    skills: Sequence[SkillModule],
    data: Sequence[RoutedData],
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    weight_decay: float = 0.0,
    loss: str = "mse",
    on_epoch=None,
    progress: bool = False,
    proximal_mu: float = 0.0,
    lr_schedule: str = "constant",
) -> dict:
    """Train the skills ``data`` routes to (in place) on ``|| a_base + sum_i w_i s_i - a_expert ||``.

    Every mini-batch mixes one batch of each data set (so a task with few demonstrations is
    not drowned by a data-rich one); skills no data set routes to get no gradient.
    ``proximal_mu > 0`` adds FedProx's ``mu/2 ||w - w_start||^2`` (w_start = the weights
    training started from, i.e. the round's federated model): long local training cannot
    drift far from it (client drift).
    ``lr_schedule``: ``constant`` or ``cosine`` (decays to 0 over ``epochs``, so the run
    ends on a settled point instead of wherever the last lr-sized steps left it;
    :func:`scheduled_lr`).
    ``on_epoch(epoch, train_loss)`` may return True to stop. Returns loss and step counts.
    """
    if loss not in ("mse", "huber"):
        raise ValueError(f"loss must be mse or huber, got {loss!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    criterion = F.mse_loss if loss == "mse" else F.smooth_l1_loss
    data = [d for d in data if len(d.obs)]
    active = sorted({e for d in data for e in d.experts})
    params = [p for e in active for p in skills[e].parameters()]
    if not params:
        return {"loss": float("nan"), "samples": 0, "epochs_run": 0, "steps": 0, "active_experts": []}
    optimiser = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else None
    generator = torch.Generator().manual_seed(int(seed))
    weights = [torch.tensor(list(d.weights), dtype=torch.float32) for d in data]
    samples = sum(len(d.obs) for d in data)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="train skill", unit="epoch", leave=False)
    train_loss, steps, epoch = float("nan"), 0, 0
    n_batches_total = epochs * max(-(-len(d.obs) // batch_size) for d in data)
    for epoch in range(1, epochs + 1):
        for e in active:
            skills[e].train()
        perms = [torch.randperm(len(d.obs), generator=generator) for d in data]
        n_batches = max(-(-len(d.obs) // batch_size) for d in data)
        total = seen = 0.0
        for b in range(n_batches):
            batch_loss = 0.0
            for d, w, perm in zip(data, weights, perms):
                idx = perm[(b * batch_size) % len(perm):][:batch_size]
                obs, base = d.obs[idx], d.base[idx]
                residuals = torch.stack([skills[e](obs, base) for e in d.experts])
                term = criterion(compose_actions(base, residuals, w), d.expert[idx])
                batch_loss = batch_loss + term
                total += float(term.detach()) * len(idx)
                seen += len(idx)
            if anchor is not None:
                batch_loss = batch_loss + 0.5 * proximal_mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            for group in optimiser.param_groups:
                group["lr"] = scheduled_lr(lr, lr_schedule, steps, n_batches_total)
            optimiser.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimiser.step()
            steps += 1
        train_loss = total / seen
        if bar is not None:
            bar.update(1)
        if on_epoch is not None and on_epoch(epoch, train_loss, bar):
            break
    if bar is not None:
        bar.close()
    for e in active:
        skills[e].eval()
    return {"loss": train_loss, "samples": int(samples), "epochs_run": epoch, "steps": steps, "active_experts": active}


def train_residual_skill(
    episodes: Sequence[Episode],
    obs_dim: int | None = None,
    action_dim: int | None = None,
    hidden: int = 256,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 256,
    val_fraction: float = 0.2,
    patience: int = 10,
    seed: int = 0,
    weight_decay: float = 0.0,
    loss: str = "mse",
    init_module: SkillModule | None = None,
    progress: bool = True,
    num_threads: int | None = 1,
    on_epoch=None,
) -> tuple[SkillModule, dict]:
    """Train (or fine-tune, with ``init_module``) a :class:`SkillModule` on ``expert - base``.

    Returns ``(module, metrics)``; ``metrics`` holds losses, the epoch of the best
    validation loss, whether training stopped early, step counts, the base policy's own
    validation error (``val_base_mse``: what a zero residual scores) and the history.
    ``init_module`` is copied, never modified in place. ``num_threads`` caps torch's
    threads during training (None leaves the global setting alone). ``on_epoch(entry)`` is called
    after every epoch with ``{"epoch", "epochs", "train_loss", "val_loss", "samples"}``; an
    exception it raises (e.g. a cancelled ROS action) stops training and propagates.
    """
    with torch_threads(num_threads):
        return _train(episodes, obs_dim, action_dim, hidden, epochs, lr, batch_size, val_fraction, patience, seed,
                      weight_decay, loss, init_module, progress, on_epoch)


def _train(episodes, obs_dim, action_dim, hidden, epochs, lr, batch_size, val_fraction, patience, seed,
           weight_decay, loss, init_module, progress, on_epoch=None) -> tuple[SkillModule, dict]:
    episodes = [validate_episode(e) for e in episodes]  # also turns dicts into Episodes
    if not episodes:
        raise DemonstrationError("no demonstration episodes to train on")
    if epochs < 1 or batch_size < 1 or patience < 1 or lr <= 0 or not 0 <= val_fraction < 1:
        raise ValueError("epochs, batch_size and patience must be >= 1, lr > 0 and val_fraction in [0, 1)")
    if loss not in ("mse", "huber"):
        raise ValueError(f"loss must be mse or huber, got {loss!r}")
    if init_module is not None:
        obs_dim = init_module.obs_dim if obs_dim is None else obs_dim
        action_dim = init_module.action_dim if action_dim is None else action_dim
    obs_dim = episodes[0].obs_dim if obs_dim is None else obs_dim
    action_dim = episodes[0].action_dim if action_dim is None else action_dim
    episodes = [validate_episode(e, obs_dim, action_dim) for e in episodes]
    started = time.perf_counter()

    if init_module is not None:
        if init_module.dims["obs_dim"] != obs_dim or init_module.dims["action_dim"] != action_dim:
            raise ValueError(f"init_module dims {init_module.dims} do not match the data "
                             f"(obs_dim={obs_dim}, action_dim={action_dim})")
        module = copy.deepcopy(init_module)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = SkillModule(obs_dim, action_dim, hidden)

    train_eps, val_eps = split_episodes(episodes, val_fraction, seed)
    obs, base, target = _stack(train_eps)
    if not val_eps and val_fraction > 0 and len(obs) >= 10:
        # a single episode: hold out a random share of its steps instead
        perm = torch.randperm(len(obs), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(round(len(obs) * val_fraction)))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        v_obs, v_base, v_target = obs[val_idx], base[val_idx], target[val_idx]
        obs, base, target = obs[train_idx], base[train_idx], target[train_idx]
    elif val_eps:
        v_obs, v_base, v_target = _stack(val_eps)
    else:
        v_obs = v_base = v_target = None

    criterion = F.mse_loss if loss == "mse" else F.smooth_l1_loss

    def evaluate() -> float:
        module.eval()
        with torch.no_grad():
            return float(criterion(module(v_obs, v_base), v_target))

    val_base = float(criterion(torch.zeros_like(v_target), v_target)) if v_target is not None else None
    best = {"val": evaluate() if v_obs is not None else float("inf"), "epoch": 0, "stale": 0,
            "state": copy.deepcopy(module.state_dict()), "stopped_early": False}
    history: list[dict] = []

    def end_of_epoch(epoch: int, train_loss: float, bar) -> bool:
        val_loss = evaluate() if v_obs is not None else None
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if on_epoch is not None:
            on_epoch({**history[-1], "epochs": epochs, "samples": int(len(obs))})
        if bar is not None:
            bar.set_postfix(train=f"{train_loss:.4g}", val="-" if val_loss is None else f"{val_loss:.4g}")
        if val_loss is None or val_loss < best["val"]:
            best.update(epoch=epoch, stale=0, state=copy.deepcopy(module.state_dict()))
            if val_loss is not None:
                best["val"] = val_loss
            return False
        best["stale"] += 1
        best["stopped_early"] = best["stale"] >= patience
        return best["stopped_early"]

    # the single-skill case of the one training loop: route every step to this skill, weight 1
    run = train_routed_skills([module], [RoutedData(obs, base, base + target, [0], [1.0])], epochs=epochs, lr=lr,
                              batch_size=batch_size, seed=seed, weight_decay=weight_decay, loss=loss,
                              on_epoch=end_of_epoch, progress=progress)
    epoch, best_epoch, best_val, best_state = run["epochs_run"], best["epoch"], best["val"], best["state"]
    stopped_early = best["stopped_early"]
    module.load_state_dict(best_state)
    module.eval()
    metrics = {
        "loss": loss,
        "epochs_run": epoch,
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "train_loss": history[best_epoch - 1]["train_loss"] if best_epoch else None,
        "val_loss": best_val if v_obs is not None else None,
        "val_base_mse": val_base,
        "train_steps": int(len(obs)),
        "val_steps": int(len(v_obs)) if v_obs is not None else 0,
        "episodes": len(episodes),
        "val_episodes": len(val_eps),
        "obs_dim": obs_dim,
        "action_dim": action_dim,
        "hidden": module.hidden_dim,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "fine_tuned": init_module is not None,
        "duration_s": time.perf_counter() - started,
        "history": history,
    }
    return module, metrics
