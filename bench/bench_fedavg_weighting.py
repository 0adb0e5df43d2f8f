"""Which FedAvg is the default: sample-weighted (McMahan) or uniform? A bounded, paired fleet run.

The full preset's tasks and training on 4 tasks x 2 robots, one 10-demo and one 1-demo robot
per task (``--robots-per-task``: the full benchmark now has 3; the weighting matters most where
one data-rich robot meets one single-demo robot; the stored JSON was measured when the full
preset trained 5 rounds x 10 epochs, its ``config`` says so), with both weightings through the same FederationClient (plaintext
reference: the encrypted path equals it up to quantization, test_fleet_federation.py), fewer
evaluation episodes. Paired: same demonstrations, initialisation and evaluation episodes.
Writes bench/results/fedavg_weighting.json. ``python bench/bench_fedavg_weighting.py [--seeds 3 --episodes 10]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--robots-per-task", type=int, default=2, help="1 single-demo robot, the rest data-rich")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fedavg_weighting.json"))
    args = ap.parse_args(argv)

    from scfl_nodes.core.fleet import FleetRun, preset_config

    results = {}
    start = time.perf_counter()
    for weighting in ("uniform", "samples"):
        cfg = preset_config("full", seeds=args.seeds, eval_episodes=args.episodes, workers=args.workers,
                            robots_per_task=args.robots_per_task,
                            methods=("fedavg_plain",), weighting=weighting)
        with tempfile.TemporaryDirectory() as tmp:
            res = FleetRun(cfg, tmp, preset=f"weighting-{weighting}", progress=False, log=lambda s: None,
                           curve_methods=()).run()
        m = res["methods"]["fedavg_plain"]
        rich = [k for k, r in zip(m["per_robot"], res["meta"]["robots"]) if not r["few_demo"]]
        results[weighting] = {
            "avg": m["avg"], "few_demo_success": m["few_demo_success"],
            "data_rich_success_mean": sum(m["per_robot"][k]["mean"] for k in rich) / len(rich),
            "tasks": {t: v["mean"] for t, v in m["success"].items()},
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("methods", "tasks")},
        }
    out = {
        "what": "fedavg_plain (FederationClient, in-process plaintext sum) with federation.weighting uniform vs samples; "
                "full-benchmark fleet, fewer episodes; paired seeds",
        "seeds": args.seeds, "eval_episodes": args.episodes, "wall_s": round(time.perf_counter() - start, 1),
        "note": "measured on the shared 2-core machine under load (timings are not representative)",
        "results": results,
        "samples_minus_uniform_avg": results["samples"]["avg"]["mean"] - results["uniform"]["avg"]["mean"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("wall_s", "samples_minus_uniform_avg")}),
          {w: (round(r["avg"]["mean"], 3), round(r["data_rich_success_mean"], 3), round(r["few_demo_success"]["mean"], 3))
           for w, r in results.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
