"""Composition of active skills: ``a = a_base + sum_i w_i * s_i(o, a_base)`` (paper 3.3).

The K active skills are evaluated in one batched pass: their layer weights are stacked
into ``(K, in, out)`` tensors once, and each layer is a single ``baddbmm`` (torch) or
``matmul`` (numpy) over all skills, so the hot path has no Python loop per skill.
Skills with different hidden sizes are zero-padded to the largest one, which is exact
for ReLU MLPs (padded units stay 0 and have zero outgoing weights).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .module import BASE_GAIN_SCALE, SkillModule


def _as_weight_tensor(weights, k: int, like: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if w.shape[-1] != k or w.dim() not in (1, 2):
        raise ValueError(f"weights must have shape (K,) or (B, K) with K={k}, got {tuple(w.shape)}")
    return w


def compose_actions(base_action, residuals, weights):
    """``base + sum_i w_i r_i`` for precomputed residuals, vectorised over skills.

    ``residuals`` is ``(K, B, A)`` (or a sequence of K ``(B, A)`` arrays), ``weights`` is
    ``(K,)`` (same weights for the whole batch) or ``(B, K)`` (per-sample routing).
    Works on torch tensors or numpy arrays (returns the same kind as ``base_action``).
    """
    if isinstance(base_action, np.ndarray):
        r = np.asarray(residuals, dtype=base_action.dtype) if not isinstance(residuals, np.ndarray) else residuals
        w = np.asarray(weights, dtype=base_action.dtype)
        if w.ndim not in (1, 2) or w.shape[-1] != r.shape[0]:
            raise ValueError(f"weights must have shape (K,) or (B, K) with K={r.shape[0]}, got {w.shape}")
        if w.ndim == 1:
            return base_action + np.tensordot(w, r, axes=1)
        return base_action + np.einsum("kba,bk->ba", r, w)
    r = residuals if isinstance(residuals, torch.Tensor) else torch.stack(list(residuals))
    w = _as_weight_tensor(weights, r.shape[0], r)
    if w.dim() == 1:
        return base_action + torch.tensordot(w, r, dims=1)
    return base_action + torch.einsum("kba,bk->ba", r, w)


class SkillComposer:
    """Evaluates K skills at once and composes them with routing weights.

    Build it once per set of active skills (the router changes skills per task, not per
    control step) and call it every step: ``composer(obs, base_action, weights)``.
    """

    def __init__(self, modules: Sequence[SkillModule]):
        modules = list(modules)
        if not modules:
            raise ValueError("SkillComposer needs at least one skill")
        obs_dims = {m.obs_dim for m in modules}
        act_dims = {m.action_dim for m in modules}
        if len(obs_dims) != 1 or len(act_dims) != 1:
            raise ValueError(f"all skills must share obs_dim and action_dim, got {sorted(obs_dims)} / {sorted(act_dims)}")
        self.obs_dim = obs_dims.pop()
        self.action_dim = act_dims.pop()
        self.num_skills = len(modules)
        h = max(m.hidden_dim for m in modules)
        k, d_in, a = self.num_skills, self.obs_dim + self.action_dim, self.action_dim
        w1 = torch.zeros(k, d_in, h)
        b1 = torch.zeros(k, 1, h)
        w2 = torch.zeros(k, h, h)
        b2 = torch.zeros(k, 1, h)
        w3 = torch.zeros(k, h, a)
        b3 = torch.zeros(k, 1, a)
        gain = torch.zeros(k, 1, a)  # BASE_GAIN_SCALE * base_gain: the share of a_base each skill removes
        with torch.no_grad():
            for i, m in enumerate(modules):  # once, at build time
                hi = m.hidden_dim
                w1[i, :, :hi] = m.encoder.weight.T
                b1[i, 0, :hi] = m.encoder.bias
                w2[i, :hi, :hi] = m.hidden.weight.T
                b2[i, 0, :hi] = m.hidden.bias
                w3[i, :hi, :] = m.decoder.weight.T
                b3[i, 0, :] = m.decoder.bias
                if m.base_gain is not None:
                    gain[i, 0, :] = BASE_GAIN_SCALE * m.base_gain
        self._torch = tuple(t.contiguous() for t in (w1, b1, w2, b2, w3, b3, gain))
        self._numpy = tuple(t.numpy() for t in self._torch)

    def residuals(self, obs_embedding: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        """``(K, B, A)`` residuals of all skills for a ``(B, obs_dim)`` / ``(B, A)`` batch."""
        w1, b1, w2, b2, w3, b3, gain = self._torch
        x = torch.cat([obs_embedding, base_action], dim=-1)
        x = x.unsqueeze(0).expand(self.num_skills, *x.shape)
        h = torch.baddbmm(b1, x, w1).relu_()
        h = torch.baddbmm(b2, h, w2).relu_()
        return torch.baddbmm(b3, h, w3) - gain * base_action.unsqueeze(0)

    @torch.inference_mode()
    def compose(self, obs_embedding, base_action, weights) -> torch.Tensor:
        """Final action ``a_base + sum_i w_i s_i(o, a_base)``; 1-D inputs give a 1-D result."""
        obs = torch.as_tensor(obs_embedding, dtype=torch.float32)
        base = torch.as_tensor(base_action, dtype=torch.float32)
        single = base.dim() == 1
        if single:
            obs, base = obs.unsqueeze(0), base.unsqueeze(0)
        self._check(obs.shape[-1], base.shape[-1])
        out = compose_actions(base, self.residuals(obs, base), weights)
        return out[0] if single else out

    __call__ = compose

    def compose_numpy(self, obs_embedding: np.ndarray, base_action: np.ndarray, weights) -> np.ndarray:
        """Same as :meth:`compose` in numpy float32 (lower per-call overhead at batch 1)."""
        w1, b1, w2, b2, w3, b3, gain = self._numpy
        obs = np.asarray(obs_embedding, dtype=np.float32)
        base = np.asarray(base_action, dtype=np.float32)
        single = base.ndim == 1
        if single:
            obs, base = obs[None], base[None]
        self._check(obs.shape[-1], base.shape[-1])
        x = np.concatenate([obs, base], axis=-1)
        h = np.matmul(x, w1)
        h += b1
        np.maximum(h, 0.0, out=h)
        h2 = np.matmul(h, w2)
        h2 += b2
        np.maximum(h2, 0.0, out=h2)
        r = np.matmul(h2, w3)
        r += b3
        r -= gain * base[None]
        out = compose_actions(base, r, np.asarray(weights, dtype=np.float32))
        return out[0] if single else out

    def _check(self, obs_dim: int, action_dim: int) -> None:
        if obs_dim != self.obs_dim or action_dim != self.action_dim:
            raise ValueError(
                f"SkillComposer expects obs_dim={self.obs_dim}, action_dim={self.action_dim}; "
                f"got {obs_dim}, {action_dim}"
            )
