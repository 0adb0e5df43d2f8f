"""Fleet benchmark: runtime of `scfl demo` and the full fleet experiment (the results table).

Writes bench/results/fleet.json (and the fleet run's results.json + PNGs under
bench/results/fleet_<preset>/). Run: ``python bench/bench_fleet.py`` (demo, full, heldout),
``--preset demo`` for the demo only, ``--preset vision`` for the vision fleet,
``--preset ambiguous|heterogeneous|retargeted`` for one of issue 14's ablations (never part
of ``both``). Targets
(ISSUE 8 / 12, this 2-core CPU): `scfl demo` < 10 min, the full benchmark < 60 min, the
vision preset < 30 min (the 1-minute load average is recorded beside every wall time). The demo is timed as a user runs it: the `scfl`
CLI in a subprocess, wall clock, cloud server start and all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET_S = {"demo": 600.0, "full": 3600.0, "heldout": 3600.0, "vision": 1800.0,
            "ambiguous": 900.0, "heterogeneous": 900.0, "retargeted": 900.0}  # the ablations: ~15 min on 2 idle cores
BOTH = ("demo", "full", "heldout")  # what a plain `python bench/bench_fleet.py` runs


def run_preset(preset: str, extra: list[str], progress: bool) -> dict:
    out = RESULTS / f"fleet_{preset}"
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "scfl_nodes", "demo" if preset == "demo" else "fleet"]
    if preset != "demo":
        cmd += ["--preset", preset]
    cmd += ["--out", str(out), *extra] + ([] if progress else ["--no-progress"])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    load = []  # 1-min load average every 30 s: the machine is shared, so the wall time needs its load beside it
    while proc.poll() is None:
        load.append(os.getloadavg()[0])
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    wall = time.perf_counter() - start
    entry = {"command": " ".join(["scfl"] + cmd[3:]), "returncode": proc.returncode, "wall_s": round(wall, 1),
             "target_s": TARGET_S[preset], "meets_target": proc.returncode == 0 and wall < TARGET_S[preset],
             "load_average_1min": {"mean": round(sum(load) / len(load), 2), "min": round(min(load), 2),
                                   "max": round(max(load), 2), "samples": len(load)}}
    results_path = out / "results.json"
    if results_path.exists():
        res = json.loads(results_path.read_text())
        entry["results_json"] = str(results_path.relative_to(ROOT))
        entry["meta"] = {k: res["meta"][k] for k in ("num_seeds", "eval_episodes", "timings_s", "eval_episodes_run", "eval_env_steps")}
        entry["success_avg"] = {m: v["avg"] for m, v in res["methods"].items()}
        entry["few_demo_success"] = {m: v.get("few_demo_success") for m, v in res["methods"].items()}
        if preset in ("ambiguous", "heterogeneous", "retargeted"):  # the ablations' point is per robot class
            for key in ("rich_demo_success", "mixed_task_success", "retargeted_success"):
                entry[key] = {m: v.get(key) for m, v in res["methods"].items()}
        entry["accounting"] = {m: v.get("accounting") for m, v in res["methods"].items()}
        entry["checks"] = res.get("checks", {})
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=(*TARGET_S, "both"), default="both",
                        help="both: demo, full and the held-out task set (not vision or the ablations)")
    parser.add_argument("--quick", action="store_true", help="demo preset only (what run_all --quick uses)")
    parser.add_argument("--out", default=str(RESULTS / "fleet.json"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    presets = ["demo"] if args.quick else [args.preset] if args.preset != "both" else list(BOTH)
    out = {"benchmark": "fleet", "machine": {"python": platform.python_version(), "platform": platform.platform(),
                                            "cpus": os.cpu_count()},
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "presets": {}}
    prev = Path(args.out)
    if prev.exists():  # keep presets measured earlier (e.g. the full run) when only the demo is rerun
        try:
            out["presets"].update(json.loads(prev.read_text()).get("presets", {}))
        except (ValueError, OSError):
            pass
    rc = 0
    for preset in presets:
        print(f"bench_fleet: running the {preset} preset ...", flush=True)
        entry = run_preset(preset, [], not args.no_progress)
        out["presets"][preset] = entry
        print(f"bench_fleet: {preset}: {entry['wall_s']:.0f} s (target < {entry['target_s']:.0f} s), rc={entry['returncode']}")
        rc = rc or entry["returncode"]
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
