"""Meta-World wrapper: real simulator, real scripted experts, demonstration format."""

import numpy as np
import pytest

from scfl_nodes.core.sim import (
    ACTION_DIM,
    ALL_TASKS,
    HELD_OUT_TASKS,
    OBS_DIM,
    TASK_INSTRUCTIONS,
    TASKS,
    ScriptedExpert,
    UnknownTaskError,
    collect_expert_episodes,
    evaluate,
    make_env,
    reset_episode,
    save_episodes,
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("task", TASKS)
def test_scripted_expert_solves_task(task):
    expert = ScriptedExpert(task)
    rate, details = evaluate(lambda obs, _instr: expert.act(obs), task, n_episodes=6, seed=3, return_details=True)
    # Meta-World's experts succeed 92-100 % on these tasks; 5 of 6 leaves room for sweep-into.
    assert rate >= 5 / 6, details
    assert all(length <= 500 for length in details["length"])


@pytest.mark.timeout(60)
def test_random_policy_fails_and_evaluation_is_deterministic():
    rng = np.random.default_rng(0)
    zero = lambda obs, _instr: np.zeros((len(obs), ACTION_DIM), np.float32)  # noqa: E731
    assert evaluate(zero, "window-open-v3", n_episodes=3, seed=0, max_steps=100) == 0.0
    expert = ScriptedExpert("drawer-close-v3")
    a = evaluate(lambda o, _i: expert.act(o), "drawer-close-v3", 4, seed=7, batch_size=4, return_details=True)
    b = evaluate(lambda o, _i: expert.act(o), "drawer-close-v3", 4, seed=7, batch_size=1, return_details=True)
    assert a == b  # batching does not change which episode gets which start state
    noisy = lambda o, _i: expert.act(o) + rng.normal(0, 3.0, (len(o), ACTION_DIM))  # noqa: E731
    assert evaluate(noisy, "drawer-close-v3", 4, seed=7, max_steps=60) < 1.0


@pytest.mark.timeout(60)
def test_episodes_have_the_demonstration_format(tmp_path):
    episodes = collect_expert_episodes("door-lock-v3", 3, seed=11)
    assert len(episodes) == 3
    starts = set()
    for ep in episodes:
        T = len(ep["observation"])
        assert 10 < T <= 500
        assert ep["observation"].shape == (T, OBS_DIM) and ep["observation"].dtype == np.float32
        assert ep["base_action"].shape == (T, ACTION_DIM) and not ep["base_action"].any()
        assert ep["expert_action"].shape == (T, ACTION_DIM)
        assert np.all(np.abs(ep["expert_action"]) <= 1.0)
        assert ep["timestamp"].dtype == np.float64 and np.all(np.diff(ep["timestamp"]) > 0)
        assert str(ep["task"]) == "lock the door by turning the lock knob down"
        assert bool(ep["success"])
        starts.add(tuple(np.round(ep["state"][0, 4:7], 5)))
    assert len(starts) == 3  # every episode starts from a new object position

    # Replaying the recorded expert actions from the same seed reproduces the success.
    env = make_env("door-lock-v3", seed=11)
    obs = reset_episode(env, 11, 0)
    np.testing.assert_allclose(obs.astype(np.float32), episodes[0]["state"][0], atol=1e-6)
    for action in episodes[0]["expert_action"]:
        obs, _, _, _, info = env.step(action)
    assert info["success"] >= 1.0

    paths = save_episodes(episodes, tmp_path)
    paths2 = save_episodes(episodes[:1], tmp_path)
    assert len({*paths, *paths2}) == 4  # a second save never overwrites the first
    with np.load(paths[0]) as data:
        assert set(data.files) == {"observation", "base_action", "expert_action", "timestamp", "task"}
        np.testing.assert_array_equal(data["expert_action"], episodes[0]["expert_action"])


def test_unknown_task_is_a_clear_error():
    with pytest.raises(UnknownTaskError, match="unknown Meta-World task 'door-unlock-v2'; did you mean door-unlock-v3"):
        make_env("door-unlock-v2")
    with pytest.raises(UnknownTaskError, match="known: the 50 Meta-World MT50 v3 tasks, e.g. door-lock-v3"):
        make_env("open-fridge")


def test_every_mt50_task_has_an_instruction_and_a_scripted_expert():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    assert set(ALL_TASKS) == set(ALL_V3_ENVIRONMENTS) and len(ALL_TASKS) == 50
    assert len(set(TASK_INSTRUCTIONS.values())) == 50  # the router tells tasks apart by their text
    assert set(TASKS) | set(HELD_OUT_TASKS) <= set(ALL_TASKS) and not set(TASKS) & set(HELD_OUT_TASKS)
    for task in ALL_TASKS:
        obs = reset_episode(make_env(task, 0), 0, 0)
        action = ScriptedExpert(task).act(obs)
        assert action.shape == (ACTION_DIM,) and np.all(np.abs(action) <= 1), task


@pytest.mark.timeout(300)
@pytest.mark.parametrize("task", HELD_OUT_TASKS)
def test_held_out_task_demonstrations_through_the_base_policy(task):
    """A task the base never saw: its instruction is embedded on the fly, demos and evaluation run."""
    eps = collect_expert_episodes(task, 1, seed=5, base_policy="scfl-metaworld-base")
    assert eps[0]["success"] and eps[0]["observation"].shape[1] == 128 and eps[0]["base_action"].shape[1] == ACTION_DIM
    expert = ScriptedExpert(task)
    assert evaluate(lambda obs, _instr: expert.act(obs), task, n_episodes=2, seed=1) == 1.0
