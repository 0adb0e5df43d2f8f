"""`scfl fleet` and `scfl demo`: simulate a robot fleet learning skills federatedly on Meta-World.

`scfl demo` is the quick preset of `scfl fleet` (the README's first command): 8 simulated
robots, a real cloud server on SQLite in a temp dir, encrypted federated rounds, every
method evaluated on the same episodes; results.json, a table and PNG plots at the end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import CliError

PRESET_CHOICES = ("demo", "full", "heldout", "vision", "ambiguous", "heterogeneous", "retargeted", "config")


def _add_common(p, default_out: str) -> None:
    p.add_argument("--out", default=default_out, help=f"output directory (default: {default_out})")
    p.add_argument("--config", default=None, help="config file (default: config/scfl.yaml)")
    p.add_argument("--seeds", type=int, help="independent repetitions (mean ± std)")
    p.add_argument("--episodes", type=int, help="evaluation episodes per task and seed")
    p.add_argument("--rounds", type=int, help="federated rounds")
    p.add_argument("--robots-per-task", type=int, help="robots doing each task")
    p.add_argument("--few-demo-robots", type=int, help="robots per task that only get --few-demos demonstrations")
    p.add_argument("--demos", type=int, help="demonstrations per (normal) robot")
    p.add_argument("--few-demos", type=int, help="demonstrations of a few-demo robot")
    p.add_argument("--mixed-task-robots", type=int, help="extra robots whose demos cover two tasks")
    p.add_argument("--retargeted-demo-robots", type=int,
                   help="data-rich robots per task whose demos are human-hand demos retargeted by IK (docs/fleet.md)")
    p.add_argument("--tasks", help="comma-separated Meta-World v3 tasks (any of the 50 MT50 tasks, e.g. reach-v3)")
    p.add_argument("--methods", help="comma-separated methods (default: all)")
    p.add_argument("--workers", type=int, help="evaluation processes (default 2)")
    p.add_argument("--encryption", choices=("rlwe", "tenseal"), help="encryption backend")
    p.add_argument("--force", action="store_true", help="overwrite an existing results.json in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--base", default=None,
                   help="frozen base: vision (scfl-metaworld-vision: robots see rendered camera frames), "
                        "state (scfl-metaworld-base), or a registry name / directory (default: fleet.base_policy)")


def register(subparsers) -> None:
    home = os.environ.get("SCFL_HOME")
    demo_out = str(Path(home) / "demo") if home else "./scfl_demo_out"
    fleet_out = str(Path(home) / "fleet") if home else "./scfl_fleet_out"
    p = subparsers.add_parser(
        "fleet", help="simulate a robot fleet: local vs federated (encrypted) skills vs baselines on Meta-World",
        description=__doc__,
    )
    # Literal (not imported from core.fleet, which pulls in torch): test_fleet_cli checks it matches PRESETS.
    p.add_argument("--preset", choices=PRESET_CHOICES, default="config",
                   help="config: the fleet section of the config file (default); demo/full: the named presets; "
                        "heldout: the full benchmark on four tasks the base policy never saw; "
                        "vision: the fleet on the image-conditioned base (rendered camera frames), sized for 30 min on 2 cores; "
                        "ambiguous / heterogeneous / retargeted: issue 14's ablations (routing, EDA vs FedAvg, "
                        "retargeted demonstrations), ~15 min each")
    _add_common(p, fleet_out)
    p.set_defaults(func=run_fleet_cmd)
    d = subparsers.add_parser("demo", help="the quick end-to-end demo (the `fleet` demo preset, a few minutes)",
                              description=__doc__)
    _add_common(d, demo_out)
    d.set_defaults(func=run_demo_cmd, preset="demo")


def run_demo_cmd(args) -> int:
    args.preset = "demo"
    return run_fleet_cmd(args)


def _overrides(args) -> dict:
    o = {}
    for attr, key in (("seeds", "seeds"), ("episodes", "eval_episodes"), ("rounds", "rounds"),
                      ("robots_per_task", "robots_per_task"), ("few_demo_robots", "few_demo_robots_per_task"),
                      ("demos", "demos_per_robot"), ("few_demos", "few_demos"),
                      ("mixed_task_robots", "mixed_task_robots"),
                      ("retargeted_demo_robots", "retargeted_demo_robots"), ("workers", "workers"), ("encryption", "encryption")):
        v = getattr(args, attr, None)
        if v is not None:
            o[key] = v
    if args.tasks:
        o["tasks"] = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if args.methods:
        o["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if getattr(args, "base", None):
        o["base_policy"] = BASE_ALIASES.get(args.base, args.base)
    return o


BASE_ALIASES = {"vision": "scfl-metaworld-vision", "state": "scfl-metaworld-base"}


def build_config(args):
    """The FleetConfig for these arguments; every value is validated (ConfigError -> CliError)."""
    import dataclasses

    from scfl_nodes.core.config import ConfigError, FleetConfig, load_config
    from scfl_nodes.core.fleet.presets import PRESETS

    try:
        base = load_config(args.config).fleet
        values = dataclasses.asdict(base)
        if args.preset in PRESETS:
            values.update(PRESETS[args.preset])
        values.update(_overrides(args))
        return FleetConfig(**values)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def run_fleet_cmd(args) -> int:
    cfg = build_config(args)
    from scfl_nodes.core.sim import UnknownTaskError, check_task

    try:
        for t in cfg.tasks:
            check_task(t)
    except UnknownTaskError as exc:
        raise CliError(str(exc)) from None
    out = Path(os.path.expanduser(args.out))
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a directory")
    if (out / "results.json").exists() and not args.force:
        raise CliError(f"{out / 'results.json'} already exists; pass --force to overwrite it or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create output directory {out}: {exc.strerror}") from None

    from scfl_nodes.core.fleet.cloud import FleetCloudError
    from scfl_nodes.core.fleet.presets import PRESET_NOTES
    from scfl_nodes.core.fleet.results import format_table
    from scfl_nodes.core.fleet.runner import FleetRun

    note = PRESET_NOTES.get(args.preset, "")
    n_robots = cfg.robots_per_task * len(cfg.tasks) + cfg.mixed_task_robots
    print(f"scfl {'demo' if args.preset == 'demo' else 'fleet'}: {n_robots} simulated robots on {', '.join(cfg.tasks)}; "
          f"{cfg.rounds} federated rounds; {cfg.seeds} seed(s) x {cfg.eval_episodes} evaluation episodes per task; "
          f"{len(cfg.methods)} methods")
    if note:
        print(note)
    start = time.perf_counter()
    run = FleetRun(cfg, out, preset=args.preset, progress=not args.no_progress, preset_note=note,
                   log=lambda s: print(s, flush=True))
    try:
        results = run.run()
    except KeyboardInterrupt:
        raise
    except ImportError as exc:
        raise CliError(f"a part of scfl is missing: {exc}") from None
    except FleetCloudError as exc:
        raise CliError(str(exc)) from None
    elapsed = time.perf_counter() - start
    print()
    print(format_table(results))
    diff = results.get("checks", {}).get("encrypted_aggregate_max_abs_error")
    if diff is not None:
        print(f"encrypted vs plaintext aggregation of the same deltas: max |difference| = {diff:.2e} (fixed-point quantization)")
    print(f"\nfinished in {elapsed / 60:.1f} min")
    print(f"results: {out / 'results.json'}")
    for p in results.get("plots", []):
        print(f"plot:    {p}")
    return 0
