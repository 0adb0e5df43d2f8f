"""Training budget from a measured convergence curve: success vs rounds x local epochs and vs upload.

Runs the fleet (same robots, seeds and evaluation episodes as the ``full`` preset unless
overridden) for a grid of ``(rounds, local_epochs)`` budgets with the methods whose cost
depends on it (centralized, local, encrypted FedAvg; optionally FedProx), and writes
``bench/results/fleet_budget/budget.json`` and ``budget.png`` (average success with 95%
intervals against total local epochs and against bytes uploaded per robot). The preset's
budget is the cheapest point whose federated average is within the interval of the best.

Run: ``python bench/bench_fleet_budget.py`` (long: one fleet run per grid point), or e.g.
``--grid 5x10,5x40 --seeds 2 --episodes 20 --tasks door-lock-v3`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "fleet_budget"
DEFAULT_GRID = "5x10,5x20,5x40,5x80,10x20,20x10"
FEDERATED = ("fedavg_plain", "fedavg_enc", "eda_enc")


def positive_int(text: str) -> int:
    """An argparse type: a usage error, not a traceback, for 0, negatives and non-numbers."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def budget_point(text: str) -> tuple[int, int]:
    """One ``ROUNDSxEPOCHS`` budget (an argparse type: a usage error, not a traceback)."""
    try:
        rounds, epochs = (int(x) for x in text.strip().lower().split("x"))
    except ValueError:
        rounds = epochs = 0
    if rounds < 1 or epochs < 1:
        raise argparse.ArgumentTypeError(f"expected ROUNDSxEPOCHS such as 10x20, got {text!r}")
    return rounds, epochs


def parse_grid(text: str) -> list[tuple[int, int]]:
    return [budget_point(item) for item in text.split(",")]


def run_grid(grid, overrides: dict, methods, out_dir: Path, proximal_mu: float, progress: bool) -> dict:
    from scfl_nodes.core.fleet import FleetRun, preset_config

    points = []
    for rounds, epochs in grid:
        for mu in sorted({0.0, proximal_mu}):
            # FedProx changes only federated local training: the other methods' points would repeat
            run_methods = tuple(methods) if not mu else tuple(m for m in methods if m in FEDERATED)
            if not run_methods:
                continue
            cfg = preset_config("full", rounds=rounds, local_epochs=epochs, methods=run_methods, proximal_mu=mu, **overrides)
            tag = f"{rounds}x{epochs}" + (f"_prox{mu:g}" if mu else "")
            start = time.perf_counter()
            res = FleetRun(cfg, out_dir / tag, preset="budget", progress=progress, log=lambda s: None, curve_methods=()).run()
            point = {"rounds": rounds, "local_epochs": epochs, "total_epochs": rounds * epochs, "proximal_mu": mu,
                     "wall_s": round(time.perf_counter() - start, 1), "methods": {}}
            for name, m in res["methods"].items():
                acc = m.get("accounting", {})
                per_round = acc.get("bytes_per_robot_per_round")
                point["methods"][name] = {
                    "avg": m["avg"], "few_demo_success": m.get("few_demo_success"), "rich_demo_success": m.get("rich_demo_success"),
                    "bytes_up_per_robot": per_round * rounds if per_round is not None else acc.get("upload_total_per_robot"),
                }
            points.append(point)
            print(f"budget {tag}: " + ", ".join(f"{n} {100 * v['avg']['mean']:.1f}" for n, v in point["methods"].items()), flush=True)
    return {"grid": [f"{r}x{e}" for r, e in grid], "overrides": overrides, "points": points,
            "chosen": choose_budget(points), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def choose_budget(points: list[dict], method: str = "fedavg_enc") -> dict | None:
    """The cheapest (fewest total epochs, then fewest bytes) point whose federated mean lies inside the best point's 95% interval."""
    cands = [p for p in points if method in p["methods"] and p["methods"][method]["avg"]["mean"] is not None]
    if not cands:
        return None
    best = max(cands, key=lambda p: p["methods"][method]["avg"]["mean"])
    ci = best["methods"][method]["avg"].get("ci95") or [best["methods"][method]["avg"]["mean"]] * 2
    ok = [p for p in cands if p["methods"][method]["avg"]["mean"] >= ci[0]]
    pick = min(ok, key=lambda p: (p["total_epochs"], p["methods"][method]["bytes_up_per_robot"] or 0))
    return {"rounds": pick["rounds"], "local_epochs": pick["local_epochs"], "proximal_mu": pick["proximal_mu"],
            "method": method, "best": f"{best['rounds']}x{best['local_epochs']}"}


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = sorted({n for p in result["points"] for n in p["methods"]})
    for name in names:
        for mu in sorted({p["proximal_mu"] for p in result["points"]}):
            pts = sorted((p for p in result["points"] if p["proximal_mu"] == mu and name in p["methods"]),
                         key=lambda p: p["total_epochs"])
            if not pts or (mu and name not in ("fedavg_enc", "fedavg_plain")):
                continue
            label = name + (f" (FedProx mu={mu:g})" if mu else "")
            ys = [100 * p["methods"][name]["avg"]["mean"] for p in pts]
            err = [[100 * (p["methods"][name]["avg"]["mean"] - (p["methods"][name]["avg"].get("ci95") or [p["methods"][name]["avg"]["mean"]] * 2)[0])
                    for p in pts],
                   [100 * ((p["methods"][name]["avg"].get("ci95") or [p["methods"][name]["avg"]["mean"]] * 2)[1] - p["methods"][name]["avg"]["mean"])
                    for p in pts]]
            xs = [f"{p['rounds']}x{p['local_epochs']}" for p in pts]
            axes[0].errorbar(range(len(xs)), ys, yerr=err, marker="o", capsize=3, label=label)
            axes[0].set_xticks(range(len(xs)), xs)
            b = [p["methods"][name]["bytes_up_per_robot"] for p in pts]
            if all(v is not None for v in b):
                axes[1].errorbar([v / 1e6 for v in b], ys, yerr=err, marker="o", capsize=3, label=label)
    axes[0].set_xlabel("rounds x local epochs")
    axes[1].set_xlabel("MB uploaded per robot (whole training)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("average success (%), 95% interval")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=7)
    fig.suptitle("Fleet training budget: convergence vs local epochs and upload")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default=DEFAULT_GRID, type=parse_grid, help=f"rounds x local epochs, comma-separated (default {DEFAULT_GRID})")
    parser.add_argument("--methods", default="centralized,local,fedavg_enc")
    parser.add_argument("--proximal-mu", type=float, default=0.0, help="also run each point with this FedProx mu")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--episodes", type=int)
    parser.add_argument("--tasks", help="comma-separated tasks (default: the full preset's)")
    parser.add_argument("--robots-per-task", type=positive_int,
                        help="default: the full preset's; 2 is the 8-robot fleet docs/fleet.md's grid was measured on")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {}
    if args.seeds:
        overrides["seeds"] = args.seeds
    if args.episodes:
        overrides["eval_episodes"] = args.episodes
    if args.robots_per_task:
        overrides["robots_per_task"] = args.robots_per_task
    if args.tasks:
        overrides["tasks"] = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_grid(args.grid, overrides, [m.strip() for m in args.methods.split(",")], out,
                      args.proximal_mu, not args.no_progress)
    result["plot"] = str(plot(result, out / "budget.png"))
    (out / "budget.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"chosen budget: {result['chosen']}; wrote {out / 'budget.json'} and {result['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
