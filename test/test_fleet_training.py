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


def _last_epoch_move(schedule: str, epochs: int = 20) -> tuple[float, float]:
    """How far the weights move in the last epoch, and in the first (same data, same seed)."""
    from scfl_nodes.core.training.residual import RoutedData, train_routed_skills

    bank = SkillBank(2, obs_dim=8, action_dim=4, hidden=32, seed=0)
    eps = _episodes()
    data = [RoutedData(*(torch.from_numpy(np.concatenate([e[k] for e in eps]))
                         for k in ("observation", "base_action", "expert_action")), [0, 1], [0.5, 0.5])]
    snaps = [bank.state()]
    train_routed_skills(bank.experts, data, epochs=epochs, seed=0, lr_schedule=schedule,
                        on_epoch=lambda *_: snaps.append(bank.state()) and False)

    def move(a, b):
        return sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5

    return move(snaps[-1], snaps[-2]), move(snaps[1], snaps[0])


def test_cosine_schedule_ends_training_on_a_settled_point():
    last_cos, first_cos = _last_epoch_move("cosine")
    last_const, first_const = _last_epoch_move("constant")
    assert abs(first_cos - first_const) < 0.05 * first_const  # same start: the lr decays only later
    assert last_cos < 0.1 * last_const, (last_cos, last_const)  # a constant lr keeps moving the end point


def test_scheduled_lr_and_bad_schedule():
    import pytest

    from scfl_nodes.core.fleet.bank import train_bc
    from scfl_nodes.core.training.residual import scheduled_lr

    assert scheduled_lr(1e-3, "constant", 99, 100) == 1e-3
    assert scheduled_lr(1e-3, "cosine", 0, 100) == 1e-3
    assert abs(scheduled_lr(1e-3, "cosine", 50, 100) - 5e-4) < 1e-12
    assert scheduled_lr(1e-3, "cosine", 100, 100) < 1e-12
    with pytest.raises(ValueError, match="lr_schedule"):
        train_bank(SkillBank(2, obs_dim=8, action_dim=4, hidden=32), {"t": _episodes()}, {"t": ([0], [1.0])},
                   epochs=1, seed=0, lr_schedule="step")
    eps = [dict(e, state=e["observation"]) for e in _episodes()]
    _, m = train_bc(eps, hidden=16, epochs=3, seed=0, lr_schedule="cosine")
    assert np.isfinite(m["loss"])
