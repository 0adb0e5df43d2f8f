"""`scfl fleet` / `scfl demo` user errors and the fleet config section (no simulation needed)."""

import subprocess
import sys

import pytest

from scfl_nodes.core.config import ConfigError, FleetConfig, config_from_dict
from scfl_nodes.core.fleet import build_fleet, preset_config
from scfl_nodes.core.fleet.robots import demo_seed, eval_seed


def scfl(*args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "scfl_nodes", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["fleet", "--episodes", "0"], "fleet.eval_episodes: must be >= 1"),
        (["fleet", "--tasks", "door-lock-v3,open-fridge-v3"], "unknown Meta-World task 'open-fridge-v3'"),
        (["demo", "--methods", "base,magic"], "unknown method(s) ['magic']"),
        (["fleet", "--robots-per-task", "1", "--few-demo-robots", "2"], "few_demo_robots_per_task: must be between 0 and robots_per_task"),
    ],
)
def test_bad_arguments_give_one_line_errors(args, message, tmp_path):
    proc = scfl(*args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_existing_results_are_never_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"keep": true}')
    proc = scfl("demo", "--out", str(out))
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (out / "results.json").read_text() == '{"keep": true}'


def test_out_must_be_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    proc = scfl("demo", "--out", str(f))
    assert proc.returncode == 2 and "not a directory" in proc.stderr


def test_fleet_config_validation():
    with pytest.raises(ConfigError, match="fleet.top_k"):
        config_from_dict({"fleet": {"num_experts": 2, "top_k": 3}})
    with pytest.raises(ConfigError, match="fleet: unknown key"):
        config_from_dict({"fleet": {"robots": 4}})
    with pytest.raises(ConfigError, match="max_path_length"):
        FleetConfig(max_path_length=501)
    assert config_from_dict({}).fleet == FleetConfig()


def test_heterogeneous_fleet_layout():
    cfg = preset_config("demo", base=FleetConfig(), mixed_task_robots=1)
    robots = build_fleet(cfg)
    assert len(robots) == 2 * len(cfg.tasks) + 1
    few = [r for r in robots if r.few_demo]
    assert len(few) == len(cfg.tasks) and all(r.num_demos == cfg.few_demos for r in few)
    assert robots[-1].tasks == (cfg.tasks[0], cfg.tasks[1])
    assert len({r.robot_id for r in robots}) == len(robots)
    seeds = {demo_seed(0, i, t) for i in range(len(robots)) for t in range(len(cfg.tasks))}
    assert len(seeds) == len(robots) * len(cfg.tasks) and eval_seed(0) not in seeds


def test_preset_choices_match_the_presets():
    from scfl_nodes.cli.fleet import PRESET_CHOICES
    from scfl_nodes.core.fleet import PRESETS
    from scfl_nodes.core.sim import HELD_OUT_TASKS

    assert set(PRESET_CHOICES) == set(PRESETS) | {"config"}
    held = preset_config("heldout", base=FleetConfig())
    assert held.tasks == HELD_OUT_TASKS and held.seeds >= 5
    assert preset_config("full", base=FleetConfig()).seeds >= 5
    # the converged 10 x 20 budget decays its lr (the end-point fix); the demo's short budget does not
    assert held.lr_schedule == preset_config("full", base=FleetConfig()).lr_schedule == "cosine"
    assert preset_config("demo", base=FleetConfig()).lr_schedule == FleetConfig().lr_schedule == "constant"


def test_benchmark_fleets_give_every_data_rich_robot_a_peer_on_its_task():
    """The full and held-out fleets: per task one single-demo robot and two 10-demo robots, so
    federation can add data to a data-rich robot too (with one per task it adds one demonstration
    to ten); the 15-minute ablations and the vision preset keep their smaller fleets."""
    from collections import Counter

    from scfl_nodes.core.fleet.robots import build_fleet

    for name in ("full", "heldout"):
        cfg = preset_config(name, base=FleetConfig())
        robots = build_fleet(cfg)
        assert len(robots) == 3 * len(cfg.tasks)
        for task in cfg.tasks:
            demos = Counter(r.demos_per_task[0] for r in robots if r.tasks == (task,))
            assert demos == Counter({10: 2, 1: 1}), (name, task, demos)
    for name in ("vision", "ambiguous"):
        assert preset_config(name, base=FleetConfig()).robots_per_task == 2


@pytest.mark.timeout(600)
def test_fleet_accepts_any_mt50_task(tmp_path):
    """A task outside the four FedVLA ones runs end to end through the CLI (real simulator, tiny sizes)."""
    import json

    out = tmp_path / "out"
    proc = scfl("fleet", "--tasks", "reach-v3", "--methods", "base,local", "--robots-per-task", "1", "--demos", "1",
                "--rounds", "1", "--episodes", "2", "--seeds", "1", "--workers", "1", "--no-progress", "--out", str(out),
                timeout=540)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["meta"]["tasks"] == ["reach-v3"]
    assert set(res["methods"]) == {"base", "local"}
    assert all(m["success"]["reach-v3"]["mean"] is not None for m in res["methods"].values())
