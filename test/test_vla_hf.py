"""Real VLA loading code on tiny random Llava / PaliGemma checkpoints built offline by the test."""

import json

import numpy as np
import pytest

from scfl_nodes.core.vla import ModelIntegrityError, ModelNotFoundError, load_base_policy, tensorrt_available
from scfl_nodes.core.vla.hf_vla import ActionTokenizer, unnormalize_actions, write_hash_manifest
from scfl_nodes.core.vla.tiny import build_tiny_vla

FAMILIES = ("llava", "paligemma")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("vla")
    return {fam: build_tiny_vla(root / fam, fam, seed=1) for fam in FAMILIES}


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 64, 3), dtype=np.uint8)


def test_action_tokenizer_matches_openvla_binning():
    tok = ActionTokenizer(vocab_size=32000)
    actions = np.linspace(-0.99, 0.99, 50)
    ids = tok.encode(actions)
    assert ids.min() >= 32000 - 256 and ids.max() < 32000
    np.testing.assert_allclose(tok.decode(ids), actions, atol=2 / 255)  # within one bin
    assert tok.decode(np.array([0]))[0] == pytest.approx(tok.bin_centers[-1])  # out of range -> clipped
    stats = {"q01": [-1.0, 0.0], "q99": [1.0, 2.0], "mask": [True, False]}
    np.testing.assert_allclose(unnormalize_actions(np.array([[0.0, 0.5]]), stats), [[0.0, 0.5]])
    np.testing.assert_allclose(unnormalize_actions(np.array([[1.0, -1.0]]), {"q01": [0, 0], "q99": [4, 2]}), [[4.0, 0.0]])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_vla_loads_through_registry_and_acts(checkpoints, family):
    policy = load_base_policy(str(checkpoints[family]))
    assert not any(p.requires_grad for p in policy.model.parameters())
    actions, emb = policy.act(_images(3), "pick up the cup")
    assert actions.shape == (3, 7) and emb.shape == (3, policy.obs_dim) and actions.dtype == np.float32
    stats = json.loads((checkpoints[family] / "config.json").read_text())["norm_stats"]["scfl_synthetic"]["action"]
    assert np.all(actions[:, :6] >= np.array(stats["q01"])[:6] - 1e-6)
    assert np.all(actions[:, :6] <= np.array(stats["q99"])[:6] + 1e-6)
    assert np.all(np.abs(actions[:, 6]) <= 1.0)  # masked gripper dim stays normalised
    single, single_emb = policy.act(_images(1)[0], "pick up the cup")
    assert single.shape == (7,) and single_emb.shape == (policy.obs_dim,)
    np.testing.assert_allclose(single, actions[0], atol=1e-6)


@pytest.mark.timeout(180)
def test_parameters_unchanged_after_100_inferences(checkpoints):
    policy = load_base_policy(str(checkpoints["llava"]))
    before = policy.parameter_hash()
    assert before == policy.load_sha256
    state = {k: v.clone() for k, v in policy.model.state_dict().items()}
    rng = np.random.default_rng(3)
    # 100 forward passes (one decoding step each: ~40 ms) plus 5 full 7-token decodes keep
    # this under 10 s on a busy CPU; every one runs the frozen model end to end.
    for i in range(100):
        inputs = policy.prepare(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), f"open the door {i}")
        policy.step_outputs(inputs)
    for i in range(5):
        policy.act(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), "push the puck")
    assert policy.parameter_hash() == before
    for k, v in policy.model.state_dict().items():
        assert (v == state[k]).all(), k
    policy.verify_unchanged()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_and_onnxruntime_agree(checkpoints, family, tmp_path):
    torch_policy = load_base_policy(str(checkpoints[family]))
    ort_policy = load_base_policy(str(checkpoints[family]), backend="onnxruntime", onnx_dir=tmp_path)
    images = _images(2, seed=5)
    inputs = torch_policy.prepare(images, "close the drawer")
    logits_t, hidden_t = torch_policy.step_outputs(inputs)
    logits_o, hidden_o = ort_policy.step_outputs(inputs)
    np.testing.assert_allclose(logits_o, logits_t, atol=1e-4)
    np.testing.assert_allclose(hidden_o, hidden_t, atol=1e-4)
    a_t, e_t = torch_policy.act(images, "close the drawer")
    a_o, e_o = ort_policy.act(images, "close the drawer")
    np.testing.assert_allclose(a_o, a_t, atol=1e-4)
    np.testing.assert_allclose(e_o, e_t, atol=1e-4)


def test_registered_models_need_the_local_cache(tmp_path):
    for name in ("openvla-7b", "pi0-base"):
        with pytest.raises(ModelNotFoundError, match=str(tmp_path)) as err:
            load_base_policy(name, cache_dir=tmp_path)
        assert "never downloads" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        load_base_policy("no-such-model")


@pytest.mark.timeout(120)
def test_registry_name_resolves_from_cache_and_hash_manifest_is_enforced(tmp_path):
    ckpt = build_tiny_vla(tmp_path / "openvla-7b", "llava", seed=2)
    policy = load_base_policy("openvla-7b", cache_dir=tmp_path, unnorm_key="scfl_synthetic")
    assert policy.name == "openvla-7b" and policy.act(_images(1), "push the puck")[0].shape == (1, 7)
    write_hash_manifest(policy)
    load_base_policy("openvla-7b", cache_dir=tmp_path)  # matches the manifest
    manifest = json.loads((ckpt / "scfl_sha256.json").read_text())
    manifest["parameters_sha256"] = "0" * 64
    (ckpt / "scfl_sha256.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="recorded"):
        load_base_policy("openvla-7b", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no action statistics"):
        (ckpt / "scfl_sha256.json").unlink()
        load_base_policy("openvla-7b", cache_dir=tmp_path, unnorm_key="bridge_orig")


@pytest.mark.timeout(300)
def test_tensorrt_backend(checkpoints, tmp_path):
    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f"TensorRT backend not testable here: {why}")
    trt_policy = load_base_policy(str(checkpoints["llava"]), backend="tensorrt", device="cuda", onnx_dir=tmp_path)
    torch_policy = load_base_policy(str(checkpoints["llava"]))
    inputs = torch_policy.prepare(_images(1), "pick up the cup")
    np.testing.assert_allclose(trt_policy.step_outputs(inputs)[0], torch_policy.step_outputs(inputs)[0], atol=5e-2)


@pytest.mark.timeout(120)
def test_bfloat16_torch_backend(checkpoints):
    import torch

    policy = load_base_policy(str(checkpoints["paligemma"]), dtype="bfloat16")
    assert policy.dtype == torch.bfloat16 and next(policy.model.parameters()).dtype == torch.bfloat16
    actions, emb = policy.act(_images(2), "open the window")
    assert actions.shape == (2, 7) and np.isfinite(actions).all() and emb.dtype == np.float32
    policy.verify_unchanged()
    with pytest.raises(ValueError, match="unknown dtype"):
        load_base_policy(str(checkpoints["paligemma"]), dtype="int4")
    import torch as _torch

    if not _torch.cuda.is_available():
        from scfl_nodes.core.vla import BackendUnavailableError

        with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
            load_base_policy("scfl-metaworld-base", device="cuda")


@pytest.mark.timeout(120)
def test_camera_frames_drive_a_vla(checkpoints):
    """Meta-World renderer -> frozen VLA: the data path of the vla_node without ROS."""
    from scfl_nodes.core.perception import open_camera

    policy = load_base_policy(str(checkpoints["llava"]))
    camera = open_camera("metaworld", task="window-open-v3", width=64, height=64, depth=False)
    actions = [policy.act(frame.color, "open the window")[0] for frame in camera.frames(max_frames=3)]
    assert len(actions) == 3 and all(a.shape == (7,) and np.isfinite(a).all() for a in actions)
    policy.verify_unchanged()
