"""The shipped image-conditioned base policy (scfl-metaworld-vision): one interface with the
state-based base, integrity, torch/ONNX parity, what it sees, and closed-loop success on
rendered frames."""

import json
import shutil

import numpy as np
import pytest

from scfl_nodes.core.sim import instruction_for
from scfl_nodes.core.vla import BasePolicy, ModelIntegrityError, load_base_policy
from scfl_nodes.core.vla.vision_policy import default_vision_policy_dir, preprocess_images

INSTR = instruction_for("drawer-close-v3")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy():
    return load_base_policy("scfl-metaworld-vision")


@pytest.fixture(scope="module")
def frames():
    """Frames of the sim camera source at the camera node's default 640x480, with the state."""
    from scfl_nodes.core.perception.sim_camera import MetaWorldCameraSource

    src = MetaWorldCameraSource(task="drawer-close-v3", seed=5, width=640, height=480, depth=False)
    images, states = [], []
    for i, f in enumerate(src.frames(max_frames=30)):
        if i % 6 == 0:
            images.append(f.color)
            states.append(np.asarray(src.last_state, np.float32))
    return np.stack(images), np.stack(states)


def test_one_interface_for_both_shipped_bases(policy):
    state_base = load_base_policy("scfl-metaworld-base")
    assert isinstance(policy, BasePolicy) and isinstance(state_base, BasePolicy)
    assert policy.observation_spec.image and not policy.observation_spec.needs_state
    assert policy.observation_spec.uses_state  # optional proprioception
    assert not state_base.observation_spec.image and state_base.observation_spec.needs_state
    with pytest.raises(ValueError, match="needs an RGB image"):
        policy.observation_from(INSTR, state=np.zeros((1, 39)))
    with pytest.raises(ValueError, match="needs a 39-d state"):
        state_base.observation_from(INSTR, image=np.zeros((1, 8, 8, 3), np.uint8))


def test_shipped_files_match_hashes_and_are_small(policy):
    d = default_vision_policy_dir()
    meta = json.loads((d / "config.json").read_text())
    assert policy.weights_sha256 == meta["weights_sha256"] and policy.parameter_hash() == meta["parameters_sha256"]
    assert sum(f.stat().st_size for f in d.iterdir()) < 3_000_000
    assert set(meta["success"]) == set(meta["training_config"]["tasks"])
    assert policy.obs_dim == 128 and policy.action_dim == 4


def test_predict_on_camera_frames_with_and_without_proprio(policy, frames):
    images, states = frames
    a_img, e_img = policy.predict(policy.observation_from(INSTR, image=images))
    a_st, e_st = policy.predict(policy.observation_from(INSTR, image=images, state=states))
    assert a_img.shape == (len(images), 4) and e_img.shape == (len(images), 128) and np.all(np.abs(a_img) <= 1)
    assert np.abs(a_img - a_st).max() > 1e-4  # proprioception is used when given
    np.testing.assert_allclose(e_img[:, :64], e_st[:, :64], atol=1e-6)  # image features do not depend on it
    a1, _ = policy.act(images[1], INSTR)  # single frame, no batch axis
    np.testing.assert_allclose(a1, a_img[1], atol=1e-5)
    other, _ = policy.predict(policy.observation_from(instruction_for("window-open-v3"), image=images))
    assert np.abs(other - a_img).max() > 1e-3  # language-conditioned
    # a 640x480 frame is centre-cropped: the same view as a square render of the crop
    x = preprocess_images(images[:1], 64)
    assert x.shape == (1, 3, 64, 64) and 0 <= x.min() and x.max() <= 1


def test_torch_and_onnx_agree(policy, frames, tmp_path):
    assert policy.onnx_parity(default_vision_policy_dir() / "model.onnx") <= 1e-4
    ort = load_base_policy("scfl-metaworld-vision", backend="onnxruntime")
    images, states = frames
    obs = policy.observation_from(INSTR, image=images, state=states)
    for a, b in zip(policy.predict(obs), ort.predict(obs)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    path = policy.export_onnx(tmp_path / "vision.onnx")
    assert policy.onnx_parity(path) <= 1e-4


def test_frozen_and_tampering_detected(policy, frames, tmp_path):
    before = policy.parameter_hash()
    for _ in range(20):
        policy.predict(policy.observation_from(INSTR, image=frames[0]))
    assert policy.parameter_hash() == before
    policy.verify_unchanged()
    copy = tmp_path / "vision"
    shutil.copytree(default_vision_policy_dir(), copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        load_base_policy(str(copy))


@pytest.mark.timeout(240)
def test_closed_loop_on_rendered_frames(policy):
    from scfl_nodes.core.sim import evaluate

    # the rollout renders the policy's own camera at its input size (drawer-close: 1.00 when shipped)
    rate = evaluate(policy, "drawer-close-v3", n_episodes=3, seed=12345, max_steps=200)
    assert rate >= 2 / 3


def test_gpu_backends_skip_without_a_gpu(policy):
    import torch

    from scfl_nodes.core.vla import tensorrt_available

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine (no device lent to this task): torch CUDA / TensorRT untested")
    ok, why = tensorrt_available()
    cuda = load_base_policy("scfl-metaworld-vision", device="cuda")
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    obs = policy.observation_from(INSTR, image=images)
    np.testing.assert_allclose(cuda.predict(obs)[0], policy.predict(obs)[0], atol=2e-2)
    if ok:
        trt = load_base_policy("scfl-metaworld-vision", backend="tensorrt")
        np.testing.assert_allclose(trt.predict(obs)[0], policy.predict(obs)[0], atol=2e-2)


@pytest.mark.timeout(240)
def test_demonstrations_carry_the_vision_embedding(policy):
    """Residual skills train on what the vision base sees: its embedding of the rendered frame."""
    from scfl_nodes.core.sim import collect_expert_episodes

    (ep,) = collect_expert_episodes("drawer-close-v3", 1, seed=77, base_policy=policy)
    T = len(ep["state"])
    assert ep["observation"].shape == (T, 128) and ep["base_action"].shape == (T, 4)
    assert np.abs(np.diff(ep["observation"][:, :64], axis=0)).max() > 1e-4  # image features follow the scene
