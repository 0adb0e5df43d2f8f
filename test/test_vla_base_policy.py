"""The shipped frozen Meta-World base policy: registry, integrity, backends, imperfection."""

import json
import shutil

import numpy as np
import pytest

from scfl_nodes.core.sim import OBS_DIM, collect_expert_episodes, evaluate, instruction_for, make_env, reset_episode
from scfl_nodes.core.vla import (
    ModelIntegrityError,
    default_base_policy_dir,
    load_base_policy,
)

INSTR = instruction_for("drawer-close-v3")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy():
    return load_base_policy("scfl-metaworld-base")


def test_shipped_files_match_their_recorded_hashes(policy):
    meta = json.loads((default_base_policy_dir() / "config.json").read_text())
    assert policy.weights_sha256 == meta["weights_sha256"]
    assert policy.parameter_hash() == meta["parameters_sha256"]
    assert sum(f.stat().st_size for f in default_base_policy_dir().iterdir()) < 2_000_000
    assert set(meta["success"]) == set(meta["training_config"]["tasks"])
    assert meta["success_eval"]["episodes_per_task"] >= 50


def _real_states(n, task="drawer-close-v3"):
    env = make_env(task, seed=0)
    return np.stack([reset_episode(env, 0, i) for i in range(n)])


def test_act_is_batched_and_gradient_free(policy):
    obs = _real_states(5)
    action, emb = policy.act(obs, INSTR)
    assert action.shape == (5, 4) and emb.shape == (5, policy.obs_dim) and policy.obs_dim == 128
    assert np.all(np.abs(action) <= 1.0)
    a1, e1 = policy.act(obs[2], INSTR)
    np.testing.assert_allclose(a1, action[2], atol=1e-6)
    # Different instructions for the same state give different actions (language-conditioned).
    a_other, _ = policy.act(obs, [instruction_for("window-open-v3")] * 5)
    assert np.abs(a_other - action).max() > 1e-3
    assert not any(p.requires_grad for p in policy._net.parameters())
    with pytest.raises(ValueError, match="observation must have shape"):
        policy.act(np.zeros(12), INSTR)


def test_hash_unchanged_after_100_inferences(policy):
    before = policy.parameter_hash()
    rng = np.random.default_rng(1)
    for _ in range(100):
        policy.act(rng.normal(size=(8, 39)), INSTR)
    assert policy.parameter_hash() == before
    policy.verify_unchanged()


def test_torch_and_onnxruntime_agree(policy):
    ort_policy = load_base_policy("scfl-metaworld-base", backend="onnxruntime")
    assert ort_policy.backend == "onnxruntime"
    obs = _real_states(16) + np.random.default_rng(2).normal(size=(16, 39)) * 0.01
    a_t, e_t = policy.act(obs, INSTR)
    a_o, e_o = ort_policy.act(obs, INSTR)
    np.testing.assert_allclose(a_o, a_t, atol=1e-4)
    np.testing.assert_allclose(e_o, e_t, atol=1e-4)


def test_tampered_weights_are_refused(tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(default_base_policy_dir(), copy)
    load_base_policy(str(copy))  # an untouched copy loads by path
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-5] ^= 0x01
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 does not match"):
        load_base_policy(str(copy))


def test_unknown_backend_and_tensorrt_reasons():
    from scfl_nodes.core.vla import BackendUnavailableError, tensorrt_available

    with pytest.raises(ValueError, match="unknown backend"):
        load_base_policy("scfl-metaworld-base", backend="tflite")
    ok, why = tensorrt_available()
    if not ok:  # here: no tensorrt package / no GPU -> one clear error with the reason
        with pytest.raises(BackendUnavailableError, match="tensorrt backend unavailable"):
            load_base_policy("scfl-metaworld-base", backend="tensorrt")
    else:
        trt = load_base_policy("scfl-metaworld-base", backend="tensorrt")
        obs = _real_states(4)
        np.testing.assert_allclose(trt.act(obs, INSTR)[0], load_base_policy().act(obs, INSTR)[0], atol=2e-2)


@pytest.mark.timeout(120)
def test_base_is_imperfect_but_competent(policy):
    rate = evaluate(policy, "drawer-close-v3", n_episodes=12, seed=12345, max_steps=200)
    assert 0.0 < rate < 1.0  # shipped at 56 % on 50 episodes: residual skills have room


@pytest.mark.timeout(60)
def test_expert_episodes_carry_the_base_embedding(policy):
    (ep,) = collect_expert_episodes("window-open-v3", 1, seed=5, base_policy=policy)
    T = len(ep["state"])
    assert ep["observation"].shape == (T, policy.obs_dim) and ep["state"].shape == (T, OBS_DIM)
    base, emb = policy.act(ep["state"], instruction_for("window-open-v3"))
    np.testing.assert_allclose(ep["base_action"], base, atol=1e-5)
    np.testing.assert_allclose(ep["observation"], emb, atol=1e-5)
    assert np.abs(ep["expert_action"] - ep["base_action"]).mean() > 1e-3  # something left to learn
    (dagger,) = collect_expert_episodes("window-open-v3", 1, seed=5, base_policy=policy, driver="base", max_steps=80)
    np.testing.assert_allclose(dagger["base_action"][0], base[0], atol=1e-5)  # same start state
    assert len(dagger["state"]) <= 80


def test_cli_export_onnx_checks_parity_and_never_overwrites(tmp_path, capsys):
    from scfl_nodes.cli import main

    out = tmp_path / "base.onnx"
    assert main(["vla", "export-onnx", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["parity"] and report["max_abs_diff"] <= 1e-4 and out.is_file()
    assert main(["vla", "export-onnx", "--out", str(out)]) == 2
    assert "not overwriting" in capsys.readouterr().err
    assert main(["vla", "export-onnx", "openvla-7b", "--out", str(tmp_path / "x"), "--cache-dir", str(tmp_path)]) == 2
    assert "not in the local cache" in capsys.readouterr().err


def test_async_policy_never_blocks_the_control_loop(policy):
    import time

    from scfl_nodes.core.vla import AsyncBasePolicy

    class Slow:
        def act(self, obs, instruction):
            time.sleep(0.2)
            return policy.act(obs, instruction)

    obs = _real_states(2)
    with AsyncBasePolicy(Slow()) as runner:
        assert runner.latest() is None
        t0 = time.monotonic()
        for i in range(20):  # a 100 Hz control loop keeps submitting
            runner.submit(obs[i % 2], INSTR)
        assert time.monotonic() - t0 < 0.1  # submit never waits for inference
        first = runner.wait_for(1, timeout=5)
        assert first is not None and first.inference_s >= 0.2 and first.age() >= 0.2
        time.sleep(0.5)  # let the worker finish whatever is pending
        last = runner.latest()
        # Stale observations were dropped: at most the one in flight plus the newest ran.
        assert last.sequence <= 2
        np.testing.assert_allclose(last.action, policy.act(obs[1], INSTR)[0], atol=1e-6)

    class Broken:
        def act(self, obs, instruction):
            raise ValueError("bad input")

    with AsyncBasePolicy(Broken()) as runner:
        runner.submit(obs[0], INSTR)
        runner.wait_for(1, timeout=2)
        with pytest.raises(RuntimeError, match="bad input"):
            runner.latest()
