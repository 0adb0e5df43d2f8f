"""The fleet's local training (SkillBank + train_bank): the base gain and the FedProx term."""

import numpy as np
import torch

from scfl_nodes.core.fleet.bank import SkillBank, train_bank
from scfl_nodes.core.skills.module import BASE_GAIN_SCALE


def _episodes(n=4, steps=60, obs_dim=8, seed=0):
    """The expert follows the observation; the base adds state-dependent noise the skill must undo."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        obs = rng.normal(size=(steps, obs_dim)).astype(np.float32)
        expert = np.tanh(obs[:, :4]).astype(np.float32)
        base = np.clip(expert + rng.normal(scale=0.6, size=expert.shape), -1, 1).astype(np.float32)
        eps.append({"observation": obs, "base_action": base, "expert_action": expert})
    return eps


def _train(mu=0.0, epochs=60, seed=0):
    bank = SkillBank(2, obs_dim=8, action_dim=4, hidden=32, seed=seed)
    start = bank.state()
    m = train_bank(bank, {"t": _episodes()}, {"t": ([0, 1], [0.5, 0.5])}, epochs=epochs, seed=seed, proximal_mu=mu)
    return bank, start, m


def test_skills_learn_to_discount_a_wrong_base():
    bank, start, m = _train()
    assert not start["experts.0.base_gain"].any()  # starts by keeping the whole base action
    gain = BASE_GAIN_SCALE * np.mean([bank.state()[f"experts.{e}.base_gain"] for e in (0, 1)])
    assert gain > 0.2, gain  # the base's noise is not predictable: the skills learn to discount it
    eps = _episodes(seed=1)
    obs = torch.from_numpy(np.concatenate([e["observation"] for e in eps]))
    base = torch.from_numpy(np.concatenate([e["base_action"] for e in eps]))
    expert = torch.from_numpy(np.concatenate([e["expert_action"] for e in eps]))
    with torch.no_grad():
        action = base + 0.5 * bank.experts[0](obs, base) + 0.5 * bank.experts[1](obs, base)
        err = ((action - expert) ** 2).mean()
    assert err < 0.5 * ((base - expert) ** 2).mean()


def test_proximal_term_keeps_local_training_near_the_round_start():
    def drift(mu):
        bank, start, _ = _train(mu=mu, epochs=30)
        end = bank.state()
        return sum(float(((end[k] - start[k]) ** 2).sum()) for k in start)

    assert drift(10.0) < 0.5 * drift(0.0)
