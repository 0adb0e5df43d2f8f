"""Local residual-skill training (paper Appendix C): learn ``expert - base`` from demonstrations.

The frozen base policy stays untouched; the skill only learns the correction the
demonstrations show. Training is seeded (init, split and shuffling), keeps whole
episodes aside for validation, stops early when the validation loss stops improving
and returns the best-validation weights.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

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
    optimiser = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)

    def evaluate() -> float:
        module.eval()
        with torch.no_grad():
            return float(criterion(module(v_obs, v_base), v_target))

    val_base = float(criterion(torch.zeros_like(v_target), v_target)) if v_target is not None else None
    best_val = evaluate() if v_obs is not None else float("inf")
    best_state = copy.deepcopy(module.state_dict())
    best_epoch, stale, history, stopped_early = 0, 0, [], False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="train skill", unit="epoch", leave=False)
    epoch = 0
    for epoch in range(1, epochs + 1):
        module.train()
        perm = torch.randperm(len(obs), generator=generator)
        total = 0.0
        for start in range(0, len(obs), batch_size):
            idx = perm[start:start + batch_size]
            batch_loss = criterion(module(obs[idx], base[idx]), target[idx])
            optimiser.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimiser.step()
            total += float(batch_loss.detach()) * len(idx)
        train_loss = total / len(obs)
        val_loss = evaluate() if v_obs is not None else None
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if on_epoch is not None:
            on_epoch({**history[-1], "epochs": epochs, "samples": int(len(obs))})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{train_loss:.4g}", val="-" if val_loss is None else f"{val_loss:.4g}")
        if val_loss is None:
            best_state, best_epoch = copy.deepcopy(module.state_dict()), epoch
            continue
        if val_loss < best_val:
            best_val, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if stale >= patience:
                stopped_early = True
                break
    if bar is not None:
        bar.close()
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
