"""Skills: module size, batched composition, flat numpy state, packages and the library."""

import json
import os

import numpy as np
import pytest
import torch

from scfl_nodes.core.skills import (
    MAX_SKILL_PARAMS,
    SkillComposer,
    SkillLibrary,
    SkillLibraryFullError,
    SkillModule,
    SkillNotFoundError,
    SkillPackage,
    SkillPackageError,
    SkillVersionExistsError,
    TamperedSkillError,
    compose_actions,
    load_numpy_state,
    skill_param_count,
    skill_state_to_numpy,
)
from scfl_nodes.core.skills.module import BASE_GAIN_SCALE


def _module(obs=12, act=4, hidden=16, seed=0):
    torch.manual_seed(seed)
    return SkillModule(obs, act, hidden)


def test_paper_default_skill_is_below_one_million_params_and_outputs_residual():
    m = SkillModule()  # paper 3.3: obs 512, action 7, hidden 256
    assert m.num_parameters() == skill_param_count(512, 7, 256) < MAX_SKILL_PARAMS
    out = m(torch.randn(5, 512), torch.randn(5, 7))
    assert out.shape == (5, 7)
    # s = MLP(o, a) - g * a: with g = 1 (stored as g / BASE_GAIN_SCALE) the skill removes the whole base action
    obs, base = torch.randn(5, 512), torch.randn(5, 7)
    with torch.no_grad():
        before = m(obs, base)
        m.base_gain.fill_(1.0 / BASE_GAIN_SCALE)
        torch.testing.assert_close(m(obs, base), before - base)
    with pytest.raises(ValueError, match="below 1,000,000"):
        SkillModule(4096, 7, 256)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        SkillModule(8, 2, 0)


def _reference(modules, obs, base, weights):
    out = base.clone()
    for i, m in enumerate(modules):
        w = weights[i] if weights.dim() == 1 else weights[:, i:i + 1]
        out = out + w * m(obs, base)
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_composer_matches_per_skill_sum_for_shared_and_per_sample_weights(k):
    modules = [_module(hidden=h, seed=i) for i, h in enumerate([16, 8, 24][:k])]  # mixed hidden sizes
    with torch.no_grad():
        for m in modules:  # trained skills discount part of the base action: the composer must too
            m.base_gain.uniform_(0.0, 0.1)
    composer = SkillComposer(modules)
    obs, base = torch.randn(6, 12), torch.randn(6, 4)
    w_shared = torch.softmax(torch.randn(k), 0)
    w_sample = torch.softmax(torch.randn(6, k), 1)
    with torch.no_grad():
        for w in (w_shared, w_sample):
            expected = _reference(modules, obs, base, w)
            torch.testing.assert_close(composer(obs, base, w), expected, rtol=1e-5, atol=1e-6)
            got_np = composer.compose_numpy(obs.numpy(), base.numpy(), w.numpy())
            np.testing.assert_allclose(got_np, expected.numpy(), rtol=1e-5, atol=1e-6)
        single = composer(obs[0], base[0], w_shared)
        assert single.shape == (4,)
        torch.testing.assert_close(single, _reference(modules, obs[:1], base[:1], w_shared)[0], rtol=1e-5, atol=1e-6)


def test_composer_rejects_mismatched_inputs():
    composer = SkillComposer([_module(), _module(seed=1)])
    with pytest.raises(ValueError, match="obs_dim=12"):
        composer(torch.randn(2, 11), torch.randn(2, 4), [0.5, 0.5])
    with pytest.raises(ValueError, match="K=2"):
        composer(torch.randn(2, 12), torch.randn(2, 4), [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="K=2"):
        composer.compose_numpy(np.zeros(12, np.float32), np.zeros(4, np.float32), [1.0])
    with pytest.raises(ValueError, match="share obs_dim"):
        SkillComposer([_module(), _module(obs=10)])


def test_compose_actions_formula_torch_and_numpy():
    base = np.array([[1.0, 2.0]], dtype=np.float32)
    residuals = np.array([[[1.0, 0.0]], [[0.0, 4.0]]], dtype=np.float32)  # (K=2, B=1, A=2)
    got = compose_actions(base, residuals, [0.25, 0.75])
    np.testing.assert_allclose(got, [[1.25, 5.0]])
    got_t = compose_actions(torch.tensor(base), [torch.tensor(r) for r in residuals], torch.tensor([0.25, 0.75]))
    np.testing.assert_allclose(got_t.numpy(), [[1.25, 5.0]])


def test_numpy_state_round_trip_and_mismatch():
    a, b = _module(seed=0), _module(seed=1)
    state = skill_state_to_numpy(a)
    assert all(v.dtype == np.float32 for v in state.values())
    assert set(state) == {"encoder.weight", "encoder.bias", "hidden.weight", "hidden.bias",
                          "decoder.weight", "decoder.bias", "base_gain"}
    assert not state["base_gain"].any()  # a new skill keeps the whole base action
    state["encoder.bias"][0] += 0  # a copy: editing it must not touch the module
    load_numpy_state(b, state)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    bad = dict(state, **{"decoder.bias": np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match=r"decoder.bias has shape \(5,\)"):
        load_numpy_state(b, bad)
    with pytest.raises(ValueError, match="missing tensors"):
        load_numpy_state(b, {k: v for k, v in state.items() if k != "hidden.bias"})
    # a state saved before the base gain existed loads as gain 0 (the same function it had)
    with torch.no_grad():
        b.base_gain.fill_(0.3)
    load_numpy_state(b, {k: v for k, v in state.items() if k != "base_gain"})
    assert not b.base_gain.detach().any()
    nan = dict(state, **{"hidden.bias": np.full_like(state["hidden.bias"], np.nan)})
    with pytest.raises(ValueError, match="NaN"):
        load_numpy_state(b, nan)


def _package(name="Grasp cube", **kw):
    return SkillPackage.create(_module(), name, ["grasp the cube", "pick up the cube"],
                               training={"epochs": 3, "val_loss": 0.1}, **kw)


def test_package_without_base_gain_loads_as_the_plain_residual_mlp(tmp_path):
    """Packages written before the base gain existed (no ``base_gain`` tensor) load and act as before."""
    torch.manual_seed(0)
    plain = SkillModule(12, 4, 16, base_gain=False)
    assert "base_gain" not in plain.state_dict()
    assert plain.num_parameters() == skill_param_count(12, 4, 16, base_gain=False) == skill_param_count(12, 4, 16) - 4
    SkillPackage.create(plain, "Old skill", ["do the old thing"]).save(tmp_path / "old")
    loaded = SkillPackage.load(tmp_path / "old").module
    assert loaded.base_gain is None
    obs, base = torch.randn(3, 12), torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(obs, base), plain(obs, base))
        torch.testing.assert_close(SkillComposer([loaded])(obs, base, [1.0]), base + plain(obs, base))


def test_package_round_trips_bit_exactly(tmp_path):
    pkg = _package()
    pkg.save(tmp_path / "p")
    loaded = SkillPackage.load(tmp_path / "p")
    assert loaded.manifest == pkg.manifest
    assert loaded.skill_id == "grasp_cube" and loaded.version == 1 and loaded.manifest.parent_version is None
    for (name, x), y in zip(pkg.module.state_dict().items(), loaded.module.state_dict().values()):
        assert x.dtype == y.dtype and torch.equal(x, y), name
    # saving the loaded package again produces byte-identical weights
    SkillPackage(loaded.module, loaded.manifest).save(tmp_path / "q")
    assert (tmp_path / "p/weights.safetensors").read_bytes() == (tmp_path / "q/weights.safetensors").read_bytes()
    manifest = json.loads((tmp_path / "p/manifest.json").read_text())
    assert {"skill_id", "name", "task_descriptions", "obs_dim", "action_dim", "hidden", "version",
            "parent_version", "training", "weights_sha256", "manifest_sha256"} <= set(manifest)
    with pytest.raises(SkillVersionExistsError):
        pkg.save(tmp_path / "p")


def test_tampered_weights_are_rejected(tmp_path):
    _package().save(tmp_path / "p")
    weights = tmp_path / "p/weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one float
    weights.write_bytes(bytes(data))
    with pytest.raises(TamperedSkillError, match="SHA-256 does not match"):
        SkillPackage.load(tmp_path / "p")


def test_tampered_manifest_is_rejected(tmp_path):
    _package().save(tmp_path / "p")
    path = tmp_path / "p/manifest.json"
    original = path.read_text()
    path.write_text(original.replace('"Grasp cube"', '"Grasp knife"'))
    with pytest.raises(TamperedSkillError, match="does not match its manifest_sha256"):
        SkillPackage.load(tmp_path / "p")
    path.write_text(original[:-20])
    with pytest.raises(TamperedSkillError, match="not valid JSON"):
        SkillPackage.load(tmp_path / "p")


def test_manifest_dims_must_fit_the_weights(tmp_path):
    import hashlib

    _package().save(tmp_path / "p")
    path = tmp_path / "p/manifest.json"
    data = json.loads(path.read_text())
    data.pop("manifest_sha256")
    data["hidden"] = 32  # consistent hash, inconsistent tensors
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    data["manifest_sha256"] = hashlib.sha256(canonical).hexdigest()
    path.write_text(json.dumps(data))
    with pytest.raises(SkillPackageError, match="do not fit the manifest dims"):
        SkillPackage.load(tmp_path / "p")


def test_library_versions_lookup_and_never_overwrites(tmp_path):
    lib = SkillLibrary(tmp_path / "lib")
    assert lib.list() == [] and lib.find("Grasp cube") is None
    v1 = _package()
    path = lib.add(v1)
    assert path == tmp_path / "lib/grasp_cube/v1"
    before = (path / "weights.safetensors").read_bytes()
    with pytest.raises(SkillVersionExistsError, match="refusing to overwrite"):
        lib.add(_package())
    assert (path / "weights.safetensors").read_bytes() == before

    v2 = lib.get("grasp_cube").derive(_module(seed=5), training={"round": 1})
    lib.add(v2)
    assert lib.versions("grasp_cube") == [1, 2]
    latest = lib.get("grasp_cube")
    assert latest.version == 2 and latest.manifest.parent_version == 1
    assert lib.get("grasp_cube", 1).manifest.weights_sha256 == v1.manifest.weights_sha256
    assert lib.find("grasp CUBE").version == 2  # by name, case-insensitive fallback
    lib.add(SkillPackage.create(_module(), "Open drawer", ["open the drawer"]))
    assert [m.skill_id for m in lib.list()] == ["grasp_cube", "open_drawer"]
    assert len(lib.list(all_versions=True)) == 3 and len(lib) == 2 and "open_drawer" in lib
    with pytest.raises(SkillNotFoundError, match="no skill 'pour_tea'"):
        lib.get("pour_tea")
    with pytest.raises(SkillNotFoundError, match="invalid skill id"):
        lib.get("../etc")
    with pytest.raises(SkillNotFoundError):
        lib.get("grasp_cube", 7)
    # another skill cannot take over an existing id
    with pytest.raises(SkillPackageError, match="already belongs"):
        lib.add(SkillPackage.create(_module(), "grasp-cube", [], version=3))
    assert not [p for p in (tmp_path / "lib/grasp_cube").iterdir() if p.name.startswith(".")]  # no staging left


def test_library_respects_max_skills_and_rejects_bad_ids(tmp_path):
    lib = SkillLibrary(tmp_path, max_skills=1)
    lib.add(_package())
    with pytest.raises(SkillLibraryFullError):
        lib.add(_package(name="Other skill"))
    with pytest.raises(SkillPackageError, match="skill_id"):
        _package(skill_id="../../escape")
    with pytest.raises(SkillPackageError, match="parent_version"):
        _package(version=2, parent_version=2)


def test_tampered_package_in_library_is_reported(tmp_path):
    lib = SkillLibrary(tmp_path)
    path = lib.add(_package())
    weights = path / "weights.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(TamperedSkillError):
        lib.get("grasp_cube")
