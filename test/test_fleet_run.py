"""Small but real fleet runs: Meta-World, the frozen base policy, real cloud + encryption.

* the table is reproducible from a seed (two runs, identical numbers);
* results.json, the three PNG plots and the terminal table are produced, with the scripted
  expert that made the demonstrations as a reference row;
* federated skills beat local-only skills on robots with a single demonstration.
"""

import json
import os

import numpy as np
import pytest

from scfl_nodes.core.config import FleetConfig
from scfl_nodes.core.fleet import FleetRun
from scfl_nodes.core.fleet.results import format_table

BASE = os.environ.get("SCFL_FLEET_TEST_BASE", "scfl-metaworld-base")


def _small(**kw):
    return FleetConfig(**{**dict(
        tasks=("drawer-close-v3",), robots_per_task=2, few_demo_robots_per_task=1, demos_per_robot=3, few_demos=1,
        rounds=2, local_epochs=5, eval_episodes=4, seeds=1, max_path_length=150, num_experts=2, top_k=1,
        skill_hidden=32, workers=1, methods=("expert", "base", "local", "bc", "fedavg_plain", "fedavg_enc"), base_policy=BASE,
    ), **kw})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    cfg = _small()
    a = FleetRun(cfg, tmp_path_factory.mktemp("a"), progress=False, log=lambda s: None).run()
    b = FleetRun(cfg, tmp_path_factory.mktemp("b"), progress=False, log=lambda s: None).run()
    return a, b


def _numbers(res):
    return {m: {"success": v["success"], "per_robot": v["per_robot"], "curve": v.get("curve")} for m, v in res["methods"].items()}


@pytest.mark.timeout(600)
def test_table_is_reproducible_from_the_seed(two_runs):
    a, b = two_runs
    assert _numbers(a) == _numbers(b)
    # the comparison is not vacuous: trained skills changed the policy's behaviour somewhere
    ep = a["meta"]["eval_episodes_run"]
    assert ep >= 4 * 4 and a["meta"]["eval_env_steps"] > 0


@pytest.mark.timeout(600)
def test_run_writes_results_plots_and_accounting(two_runs):
    a, _ = two_runs
    out = {os.path.basename(p) for p in a["plots"]}
    assert {"success_per_task.png", "success_vs_round.png", "expert_utilisation.png"} <= out
    for p in a["plots"]:
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(open(os.path.join(os.path.dirname(a["plots"][0]), "results.json")).read())
    assert saved["methods"].keys() == a["methods"].keys()
    acc = a["methods"]["fedavg_enc"]["accounting"]
    plain = a["methods"]["fedavg_plain"]["accounting"]
    # ciphertexts are real and bigger than the float32 plaintext of the same delta
    assert acc["bytes_per_robot_per_round"] > plain["bytes_per_robot_per_round"] > 0
    assert acc["trainable_params"] > 0 and acc["base_params"] > 0 and acc["edge_train_seconds_per_robot"] > 0
    # what robots install from the encrypted cloud sum vs from the plaintext sum of the same updates
    # (sample-weighted FedAvg: half a step per upload over sum_k w_k, see the runner's bound)
    bound = a["checks"]["encrypted_aggregate_quantization_bound"]
    assert 0 < a["checks"]["encrypted_aggregate_max_abs_error"] <= bound <= 16 * 2.0**-15
    assert len(a["methods"]["fedavg_enc"]["curve"]) == 2
    table = format_table(a)
    assert "FedAvg encrypted" in table and "few-demo robots" in table and "data-rich robots" in table
    # per robot class, for every method: the 1-demo robot and the 3-demo robot of drawer-close
    for name, m in a["methods"].items():
        few, rich = m["few_demo_success"], m["rich_demo_success"]
        per_robot = {k: v["mean"] for k, v in m["per_robot"].items()}
        assert few["mean"] == per_robot["robot-01-drawer-close:drawer-close-v3"], name
        assert rich["mean"] == per_robot["robot-00-drawer-close:drawer-close-v3"], name
        assert m["mixed_task_success"]["mean"] is None and few["n"] == 1 and few["ci95"] is None
    # the demonstrator is evaluated on the same episodes: Meta-World's scripted drawer-close policy
    # solves every one of them, the frozen base does not, and nothing was trained or uploaded for it
    expert = a["methods"]["expert"]
    assert expert["avg"]["mean"] == 1.0 > a["methods"]["base"]["avg"]["mean"]
    assert not expert["accounting"].get("bytes_per_robot_per_round") and not expert["accounting"].get("trainable_params")
    assert "scripted expert" in table


@pytest.mark.timeout(900)
def test_federated_skills_beat_local_skills_on_few_demo_robots(tmp_path):
    """Two robots per task, one with 10 demonstrations and one with a single one.

    Local-only, the single-demo robot's skill overfits one trajectory; per-skill FedAvg
    shares the other robot's data through the skill. Measured on 2 tasks x 10 episodes.
    """
    cfg = FleetConfig(
        tasks=("sweep-into-v3", "window-open-v3"), robots_per_task=2, few_demo_robots_per_task=1, demos_per_robot=10,
        few_demos=1, rounds=3, local_epochs=10, eval_episodes=10, seeds=1, max_path_length=150,
        methods=("local", "fedavg_plain"), workers=2, base_policy=BASE,
    )
    res = FleetRun(cfg, tmp_path, progress=False, log=lambda s: None, curve_methods=()).run()
    local = res["methods"]["local"]["few_demo_success"]["mean"]
    fed = res["methods"]["fedavg_plain"]["few_demo_success"]["mean"]
    assert fed >= local + 0.2, (local, fed)
    # and federation does not hurt the robots that have plenty of data
    rich = [k for k, r in zip(res["methods"]["local"]["per_robot"], [1, 0, 1, 0]) if r]
    assert np.mean([res["methods"]["fedavg_plain"]["per_robot"][k]["mean"] for k in rich]) >= \
        np.mean([res["methods"]["local"]["per_robot"][k]["mean"] for k in rich]) - 0.2


@pytest.mark.timeout(600)
def test_a_subset_of_the_fleet_trains_each_robot_as_the_whole_fleet_does(tmp_path):
    """bench/bench_fleet_seed.py studies one task's robots alone: their demonstrations and
    training seeds must come from their place in the whole fleet, not in the subset."""
    from scfl_nodes.core.fleet.bank import SkillBank
    from scfl_nodes.core.fleet.routing import build_routing
    from scfl_nodes.core.vla import load_base_policy

    cfg = _small(tasks=("drawer-close-v3", "window-open-v3"), methods=("local", "bc"))
    run = FleetRun(cfg, tmp_path, progress=False, log=lambda s: None)
    demos = run._collect_demos(0, load_base_policy(BASE))
    first = next(iter(demos[run.robots[0].robot_id].values()))[0]
    dims = {"obs_dim": int(first["observation"].shape[1]), "action_dim": int(first["base_action"].shape[1]),
            "hidden": cfg.skill_hidden}
    init = SkillBank(cfg.num_experts, **dims, seed=0).state()
    routing, _ = build_routing("learned", list(cfg.tasks), run._task_traffic(), num_experts=cfg.num_experts,
                               top_k=cfg.top_k, load_balance_weight=cfg.load_balance_weight, seed=0)
    whole = {"local": run._run_local(0, demos, routing, dims, init), "bc": run._run_bc(0, demos)}
    later = [r for r in run.robots if r.tasks == ("window-open-v3",)]
    run.robots = later  # what bench_fleet_seed does
    alone = {"local": run._run_local(0, demos, routing, dims, init), "bc": run._run_bc(0, demos)}
    for method in whole:
        assert alone[method].policies.keys() == {(r.robot_id, "window-open-v3") for r in later}
        for key, spec in alone[method].policies.items():
            assert spec.fingerprint(key[1]) == whole[method].policies[key].fingerprint(key[1]), (method, key)
    # another training draw (bench_fleet_seed --training-draws): same demonstrations, other training seeds
    redrawn = FleetRun(cfg, tmp_path, progress=False, log=lambda s: None, training_draw=1)
    redrawn.robots = [r for r in redrawn.robots if r.tasks == ("window-open-v3",)]
    other = {"local": redrawn._run_local(0, demos, routing, dims, init), "bc": redrawn._run_bc(0, demos)}
    for method in whole:
        for key, spec in other[method].policies.items():
            assert spec.fingerprint(key[1]) != whole[method].policies[key].fingerprint(key[1]), (method, key)
