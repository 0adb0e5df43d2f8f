"""The vision fleet variant at CI size: robots see rendered camera frames through the image-
conditioned frozen base (scfl-metaworld-vision), train residual skills on its embeddings and
federate them encrypted, end to end (`scfl fleet --base vision`)."""

import pytest

from scfl_nodes.core.config import FleetConfig
from scfl_nodes.core.fleet import FleetRun


@pytest.mark.timeout(900)
def test_vision_fleet_runs_end_to_end(tmp_path):
    cfg = FleetConfig(
        tasks=("drawer-close-v3",), robots_per_task=2, few_demo_robots_per_task=1, demos_per_robot=2, few_demos=1,
        rounds=2, local_epochs=3, eval_episodes=2, seeds=1, max_path_length=60, num_experts=2, top_k=1,
        skill_hidden=16, workers=1, methods=("base", "local", "fedavg_enc"), base_policy="scfl-metaworld-vision",
        round_curve=False,  # as the vision preset: only the final round is evaluated (rendering is the cost)
    )
    res = FleetRun(cfg, tmp_path, progress=False, log=lambda s: None).run()
    assert set(res["methods"]) == {"base", "local", "fedavg_enc"}
    assert not any("curve" in m for m in res["methods"].values())
    # final policies only: base, 2 local robots, 1 shared FedAvg model, 2 episodes each (round 1 would add 5 per curve)
    assert res["meta"]["eval_episodes_run"] <= 2 * (1 + 2 + 1)
    for m in res["methods"].values():
        assert 0.0 <= m["success"]["drawer-close-v3"]["mean"] <= 1.0
    acc = res["methods"]["fedavg_enc"]["accounting"]
    assert acc["bytes_per_robot_per_round"] > 0 and acc["trainable_params"] > 0
    assert 0 < res["checks"]["encrypted_aggregate_max_abs_error"] <= 2.0**-15
    assert res["meta"]["eval_env_steps"] > 0


def test_cli_base_alias():
    import argparse

    from scfl_nodes.cli.fleet import _overrides

    args = argparse.Namespace(tasks=None, methods=None, base="vision")
    assert _overrides(args)["base_policy"] == "scfl-metaworld-vision"


def test_vision_preset_is_what_the_cli_runs():
    """`scfl fleet --preset vision` runs the vision base with the preset's budget (docs/results.md's vision table)."""
    import argparse

    from scfl_nodes.cli.fleet import build_config
    from scfl_nodes.core.fleet import preset_config

    cfg = preset_config("vision", base=FleetConfig())
    assert cfg.base_policy == "scfl-metaworld-vision" and not cfg.round_curve
    assert {"local", "fedavg_enc"} <= set(cfg.methods) and cfg.few_demo_robots_per_task >= 1 and cfg.seeds >= 3
    args = argparse.Namespace(preset="vision", config=None, tasks=None, methods=None, base=None)
    cli = build_config(args)
    for key in ("base_policy", "tasks", "methods", "seeds", "eval_episodes", "rounds", "local_epochs", "demos_per_robot",
                "few_demos", "robots_per_task", "few_demo_robots_per_task", "max_path_length", "round_curve"):
        assert getattr(cli, key) == getattr(cfg, key), key
