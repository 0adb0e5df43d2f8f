"""config/scfl.yaml is validated on load: paper 6.3 values, clear errors, no unknown keys."""

import pytest

from scfl_nodes.core.config import (
    ConfigError,
    MoERouterConfig,
    ScflConfig,
    TrainingConfig,
    config_from_dict,
    default_config_path,
    expand_path,
    load_config,
)


def test_default_file_holds_paper_6_3_settings():
    cfg = load_config()
    assert default_config_path().name == "scfl.yaml"
    assert cfg.moe_router.num_experts == 16
    assert cfg.moe_router.top_k == 3
    assert cfg.moe_router.load_balance_weight == pytest.approx(0.01)
    assert cfg.skill_library.max_skills == 100
    assert cfg.tflops_budget.total_fp16 == pytest.approx(137.0)
    assert cfg.tflops_budget.vla_inference == pytest.approx(45.0)
    assert cfg.tflops_budget.skill_inference == pytest.approx(5.0)
    assert cfg.tflops_budget.training_reserve == pytest.approx(30.0)
    assert cfg.moe_router.gating in ("topk", "dgmoe")
    assert cfg.moe_router.dgmoe_lambda == pytest.approx(0.5)
    assert isinstance(cfg.training, TrainingConfig)


def test_empty_mapping_gives_defaults():
    assert config_from_dict({}) == ScflConfig()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"moe_router": {"top_k": 20}}, "moe_router.top_k: must be between 1 and num_experts (16), got 20"),
        ({"moe_router": {"num_experts": 0}}, "moe_router.num_experts: must be >= 1"),
        ({"moe_router": {"load_balance_weight": -0.1}}, "moe_router.load_balance_weight: must be >= 0"),
        ({"moe_router": {"gating": "random"}}, "moe_router.gating: must be topk or dgmoe"),
        ({"moe_router": {"dgmoe_lambda": 1.5}}, "moe_router.dgmoe_lambda: must be in [0, 1]"),
        ({"moe_router": {"cold_start_threshold": 2.0}}, "moe_router.cold_start_threshold"),
        ({"moe_router": {"top_k": "three"}}, "moe_router.top_k: must be an integer, got 'three'"),
        ({"moe_router": {"topk": 3}}, "moe_router: unknown key(s) topk"),
        ({"skill_library": {"max_skills": 0}}, "skill_library.max_skills: must be > 0"),
        ({"skill_library": {"encryption": "rot13"}}, "skill_library.encryption"),
        ({"tflops_budget": {"total_fp16": 50.0}}, "tflops_budget: vla_inference + skill_inference + training_reserve"),
        ({"tflops_budget": {"vla_inference": -1.0}}, "tflops_budget.vla_inference: must be >= 0"),
        ({"skill": {"obs_dim": 0}}, "skill.obs_dim: must be >= 1"),
        ({"skill": {"obs_dim": 4096, "hidden": 256}}, "skills must stay below 1,000,000"),
        ({"system": {"simulation_mode": "yes"}}, "system.simulation_mode: must be true or false"),
        ({"system": {"seed": -1}}, "system.seed: must be >= 0"),
        ({"training": {"val_fraction": 1.0}}, "training.val_fraction: must be in [0, 1)"),
        ({"training": {"epochs": 0}}, "training.epochs: must be >= 1"),
        ({"training": {"lr": 0}}, "training.lr: must be > 0"),
        ({"training": {"patience": 0}}, "training.patience: must be >= 1"),
        ({"training": {"learning_rate": 0.1}}, "training: unknown key(s) learning_rate"),
        ({"fleet": {"lr_schedule": "step"}}, "fleet.lr_schedule: must be cosine or constant, got 'step'"),
        ({"moe_routr": {}}, "config: unknown key(s) moe_routr"),
        ({"moe_router": [1, 2]}, "moe_router: must be a mapping"),
    ],
)
def test_bad_values_are_rejected_with_the_key_named(data, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_load_config_names_the_file_and_applies_overrides(tmp_path):
    path = tmp_path / "scfl.yaml"
    path.write_text("moe_router:\n  num_experts: 4\n  top_k: 2\ntraining:\n  epochs: 7\n")
    cfg = load_config(path, overrides={"moe_router": {"gating": "dgmoe"}})
    assert (cfg.moe_router.num_experts, cfg.moe_router.top_k, cfg.moe_router.gating) == (4, 2, "dgmoe")
    assert cfg.training.epochs == 7
    path.write_text("moe_router:\n  top_k: 9\n  num_experts: 4\n")
    with pytest.raises(ConfigError, match=rf"^{path}: moe_router.top_k"):
        load_config(path)
    path.write_text("moe_router: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_dataclasses_validate_directly_and_paths_expand(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="top_k"):
        MoERouterConfig(num_experts=2, top_k=3)
    monkeypatch.setenv("SCFL_HOME", str(tmp_path))
    assert expand_path("${SCFL_HOME}/skills") == tmp_path / "skills"
    assert load_config().skill_library.path == tmp_path / "skills"
