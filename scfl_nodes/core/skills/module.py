"""Residual skill MLP (paper 3.3) and the flat parameter dict used by federation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Paper 3.3: a skill is a small MLP with fewer than 1M parameters.
MAX_SKILL_PARAMS = 1_000_000


#: The base gain is stored divided by this: Adam moves a parameter by ~lr per step, and the
#: gain must be able to travel from 0 (keep the base) to ~1 (replace it) within one
#: training budget of a few hundred steps, which a raw parameter at lr 1e-3 cannot.
BASE_GAIN_SCALE = 10.0


def skill_param_count(obs_dim: int, action_dim: int, hidden: int, base_gain: bool = True) -> int:
    """Parameters of a SkillModule with these dims (without building it)."""
    return ((obs_dim + action_dim) * hidden + hidden + hidden * hidden + hidden + hidden * action_dim + action_dim
            + (action_dim if base_gain else 0))


class SkillModule(nn.Module):
    """``s(o, a_base) -> residual``: a 3-layer MLP on the observation embedding and base action,
    minus a learned per-dimension share of the base action.

    Skills refine a frozen base policy instead of replacing it, so they stay small
    (< 1M parameters) and cheap to train, encrypt and aggregate.

    ``s = MLP(o, a_base) - g * a_base`` with ``g`` (``base_gain``, one value per action
    dimension) starting at 0: an untrained skill leaves the base untouched. Where the base
    is wrong in a state-dependent way, ``expert - a_base`` is a harder function than the
    expert action itself (it must also cancel the base's errors); ``g -> 1`` lets the skill
    discount the base instead (docs/fleet.md, "The residual-skill ceiling").
    """

    def __init__(self, obs_dim: int = 512, action_dim: int = 7, hidden: int = 256, base_gain: bool = True):
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("action_dim", action_dim), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SkillModule: {name} must be a positive integer, got {value!r}")
        count = skill_param_count(obs_dim, action_dim, hidden, base_gain)
        if count >= MAX_SKILL_PARAMS:
            raise ValueError(
                f"SkillModule: obs_dim={obs_dim}, action_dim={action_dim}, hidden={hidden} gives {count:,} "
                f"parameters; skills must stay below {MAX_SKILL_PARAMS:,} (reduce hidden)"
            )
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.hidden_dim = hidden
        self.encoder = nn.Linear(obs_dim + action_dim, hidden)
        self.hidden = nn.Linear(hidden, hidden)
        self.decoder = nn.Linear(hidden, action_dim)
        # g / BASE_GAIN_SCALE; base_gain=False is the paper's plain residual MLP (and what
        # packages saved before the gain load as: the same function as g = 0)
        if base_gain:
            self.base_gain = nn.Parameter(torch.zeros(action_dim))
        else:
            self.register_parameter("base_gain", None)

    @property
    def dims(self) -> dict:
        return {"obs_dim": self.obs_dim, "action_dim": self.action_dim, "hidden": self.hidden_dim}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, obs_embedding: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs_embedding, base_action], dim=-1)
        x = F.relu(self.encoder(x))
        x = F.relu(self.hidden(x))
        out = self.decoder(x)
        return out if self.base_gain is None else out - BASE_GAIN_SCALE * self.base_gain * base_action


def skill_state_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    """Flat ``{parameter name: float32 array}`` copy of a module's state (what federation encrypts)."""
    return {
        name: tensor.detach().cpu().to(torch.float32).numpy().copy()
        for name, tensor in module.state_dict().items()
    }


def with_default_base_gain(current: dict, state: dict) -> dict:
    """Skills saved before ``base_gain`` existed had gain 0 (the same function): fill it in."""
    missing = [k for k in current if (k == "base_gain" or k.endswith(".base_gain")) and k not in state]
    if not missing:
        return state
    state = dict(state)
    for k in missing:
        state[k] = np.zeros(tuple(current[k].shape), dtype=np.float32)
    return state


def load_numpy_state(module: nn.Module, state: dict[str, np.ndarray]) -> nn.Module:
    """Load a flat numpy dict into ``module`` in place; names and shapes must match exactly.

    A mismatch raises ``ValueError`` naming the first offending tensor, because a silently
    partial load would corrupt a skill after a federated round.
    """
    current = module.state_dict()
    state = with_default_base_gain(current, state)
    missing = sorted(set(current) - set(state))
    extra = sorted(set(state) - set(current))
    if missing or extra:
        raise ValueError(f"load_numpy_state: missing tensors {missing}, unexpected tensors {extra}")
    new_state = {}
    for name, target in current.items():
        value = np.asarray(state[name])
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"load_numpy_state: {name} has shape {tuple(value.shape)}, module expects {tuple(target.shape)}"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"load_numpy_state: {name} contains NaN or inf")
        new_state[name] = torch.as_tensor(np.array(value, dtype=np.float32, copy=True)).to(target.dtype)
    module.load_state_dict(new_state)
    return module
