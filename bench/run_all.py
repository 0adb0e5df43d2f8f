"""Run every benchmark (bench/bench_*.py) and combine their JSON into bench/results/all.json.

Each bench script writes bench/results/<topic>.json itself; this runner executes them one
after another (never in parallel: they time things on a shared 2-core CPU), records exit
code and wall time, and merges whatever JSON each produced. ``--quick`` passes ``--quick``
to scripts that accept it; ``--only a,b`` restricts to some topics; ``--skip`` the reverse.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"


def topics() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH.glob("bench_*.py"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to the benchmarks that support it")
    parser.add_argument("--only", help="comma-separated topics to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated topics to skip")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    parser.add_argument("--out", default=str(RESULTS / "all.json"))
    args = parser.parse_args(argv)
    available = topics()
    chosen = [t.strip() for t in args.only.split(",")] if args.only else available
    unknown = [t for t in chosen if t not in available]
    if unknown:
        print(f"run_all: error: unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    skip = {t.strip() for t in args.skip.split(",") if t.strip()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    combined = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
                "quick": args.quick, "benchmarks": {}}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    failed = 0
    for topic in [t for t in chosen if t not in skip]:
        script = BENCH / f"bench_{topic}.py"
        cmd = [sys.executable, str(script)]
        if args.quick and "--quick" in script.read_text():
            cmd.append("--quick")
        print(f"run_all: {topic}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        wall = time.perf_counter() - start
        entry = {"returncode": rc, "wall_s": round(wall, 1)}
        result_file = RESULTS / f"{topic}.json"
        if result_file.exists() and result_file.stat().st_mtime >= time.time() - wall - 1:
            try:
                entry["results"] = json.loads(result_file.read_text())
            except ValueError as exc:
                entry["error"] = f"{result_file.name} is not valid JSON: {exc}"
        else:
            entry["error"] = f"did not write {result_file.relative_to(ROOT)}"
        failed += rc != 0 or "error" in entry
        combined["benchmarks"][topic] = entry
        print(f"run_all: {topic}: rc={rc} in {wall:.0f} s", flush=True)
        tmp = Path(args.out).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(combined, indent=2) + "\n")
        os.replace(tmp, args.out)
    combined["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).write_text(json.dumps(combined, indent=2) + "\n")
    print(f"run_all: wrote {args.out} ({len(combined['benchmarks'])} benchmarks, {failed} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
