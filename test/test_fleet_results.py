"""Statistics of the fleet results: sample sd and 95% Student-t intervals over seeds."""

import argparse
import math

import numpy as np
import pytest

from scfl_nodes.core.fleet.results import ci_text, mean_std, t_quantile_975


def test_t_quantiles_match_the_table():
    # Student t, two-sided 95 %: the textbook values for 1, 2, 4 and 30 degrees of freedom
    for dof, value in ((1, 12.706), (2, 4.303), (4, 2.776), (30, 2.042)):
        assert t_quantile_975(dof) == pytest.approx(value, abs=1e-3)


def test_mean_std_gives_sample_sd_and_t_interval():
    vals = [0.5, 0.6, 0.7, 0.9, 0.8]
    ms = mean_std(vals)
    assert ms["n"] == 5 and ms["mean"] == pytest.approx(0.7)
    assert ms["std"] == pytest.approx(np.std(vals, ddof=1))  # sample sd, not the population sd
    half = 2.7764451 * np.std(vals, ddof=1) / math.sqrt(5)
    assert ms["ci95"] == pytest.approx([0.7 - half, 0.7 + half], abs=1e-6)
    # the interval covers the mean of repeated draws about 95 % of the time
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        lo, hi = mean_std(rng.normal(0.3, 0.1, size=5))["ci95"]
        hits += lo <= 0.3 <= hi
    assert 0.93 <= hits / 2000 <= 0.97


def test_one_seed_and_missing_values_give_no_interval():
    assert mean_std([0.4])["ci95"] is None and mean_std([0.4])["std"] == 0.0
    assert mean_std([None, float("nan")]) == {"mean": None, "std": None, "ci95": None, "n": 0, "per_seed": []}
    assert ci_text(mean_std([0.4])) == "40.0"
    assert ci_text(mean_std([0.4, 0.6])).startswith("50.0 [")


def test_budget_choice_is_the_cheapest_point_inside_the_best_interval():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_fleet_budget.py"
    spec = importlib.util.spec_from_file_location("bench_fleet_budget", path)
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    assert budget.parse_grid("5x10,20X10") == [(5, 10), (20, 10)]
    for bad in ("5x0", "5", "ax10"):  # a usage error naming the value, not a traceback
        with pytest.raises(argparse.ArgumentTypeError, match="ROUNDSxEPOCHS"):
            budget.parse_grid(bad)

    seed_path = path.with_name("bench_fleet_seed.py")
    seed_spec = importlib.util.spec_from_file_location("bench_fleet_seed", seed_path)
    cell = importlib.util.module_from_spec(seed_spec)
    seed_spec.loader.exec_module(cell)
    assert cell.draw_list("0,3,1") == [0, 3, 1]
    for bad in ("", "1,x", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="integers >= 0"):
            cell.draw_list(bad)
    rows = [{"method": "fedavg_plain", "success": {"a": 0.8, "b": 0.8}},
            {"method": "centralized", "success": {"a": 0.9, "b": 0.9}},
            {"method": "fedavg_plain", "success": {"a": 0.9, "b": 0.7}}]
    assert cell.summary(rows) == ["fedavg_plain: 80, 80 %  (mean 80.0)", "centralized: 90 %  (mean 90.0)"]
    for r, (task, seed) in zip(rows, [("a-v3", 0), ("a-v3", 0), ("a-v3", 1)]):
        r.update(task=task, seed=seed)
    table = cell.draw_table(rows)  # --summarize: per cell the mean over draws, then the mean of the cells
    assert table[2] == "| a-v3 | 0 | 80.0 (80) | 90.0 (90) |"
    assert table[3] == "| a-v3 | 1 | 80.0 (80) | - |"
    assert table[-1] == "| **average** | | **80.0** | **90.0** |"

    def point(rounds, epochs, seeds):
        return {"rounds": rounds, "local_epochs": epochs, "total_epochs": rounds * epochs, "proximal_mu": 0.0,
                "methods": {"fedavg_enc": {"avg": mean_std(seeds), "bytes_up_per_robot": rounds * 1000}}}

    points = [point(5, 10, [0.70, 0.75, 0.72]), point(5, 40, [0.92, 0.95, 0.90]), point(5, 80, [0.93, 0.96, 0.94]),
              point(20, 10, [0.91, 0.93, 0.92])]
    chosen = budget.choose_budget(points)
    # 5x80 is best; 5x40 (200 epochs) lies inside its interval and is cheaper than 20x10 (same epochs, 4x upload)
    assert chosen["best"] == "5x80" and (chosen["rounds"], chosen["local_epochs"]) == (5, 40)
