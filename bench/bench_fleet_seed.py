"""One task, one seed of the ``full`` benchmark, on the fleet's own code path: the smallest run
that reproduces a single cell of the results table.

The full benchmark takes an hour; a bad cell (door-lock seed 4: encrypted FedAvg 18 %) needs
a run of minutes to study. This rebuilds exactly what ``scfl fleet --preset full`` builds
for that seed -- the same demonstrations (seeds per robot and task), the same learned routing
(over all four tasks), the same initial skill bank -- keeps only the robots of ``--task`` and
runs FleetRun's own methods on them (local, centralized, BC, plaintext FedAvg through the
robots' FederationClients), then evaluates each robot on the seed's evaluation episodes
(the first ``--episodes`` of the benchmark's 50). Local and BC train every robot exactly as
the benchmark does (seeds come from a robot's place in the whole fleet,
``FleetRun.fleet_index``), so with ``--episodes 50`` their cells are the benchmark's. FedAvg
is the same up to float rounding: its sample weights are normalised by the largest robot's
sample count, here among this task's robots only, and in closed loop that rounding can move
a cell by an episode (sweep-into seed 1: 90 % here, 92 % in the benchmark). Centralized pools
only this task's demonstrations (the benchmark pools all tasks'): another training draw.
``--lr-schedule`` compares schedules.
With ``--per-round`` it also reports, for ``local``, loss, learned base gain and success
after every round. ``--training-draws 0,1,2`` repeats every method with other training seeds
(the skills' mini-batch order, BC's init; same demonstrations, initial bank and evaluation
episodes; 0 is the benchmark's) and prints each method's cells and mean: how much of a cell
is the draw. Appends one JSON line per (seed, draw, method) to ``--out``.

Run: ``python bench/bench_fleet_seed.py --task door-lock-v3 --seeds 4 --lr-schedule constant``
(``--robots-per-task 2``: the 8-robot fleet that docs/fleet.md's per-cell studies used).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "fleet_seed.jsonl"

sys.path.insert(0, str(ROOT / "bench"))
from bench_fleet_budget import budget_point, positive_int  # noqa: E402  (the same argument types)


def run_seed(task: str, seed: int, episodes: int, schedule: str, methods: list[str], per_round: bool,
             robots_per_task: int | None = None, budget: tuple[int, int] | None = None,
             training_draw: int = 0) -> list[dict]:
    import numpy as np
    import torch

    from scfl_nodes.core.fleet import FleetRun, preset_config
    from scfl_nodes.core.fleet.bank import SkillBank, train_bank
    from scfl_nodes.core.fleet.policy import EvalJob, run_eval_job, skills_spec
    from scfl_nodes.core.fleet.robots import demo_seed, eval_seed
    from scfl_nodes.core.fleet.routing import build_routing
    from scfl_nodes.core.sim import collect_expert_episodes
    from scfl_nodes.core.vla import load_base_policy

    torch.set_num_threads(1)
    fleet = {} if robots_per_task is None else {"robots_per_task": robots_per_task}
    if budget:
        fleet.update(rounds=budget[0], local_epochs=budget[1])
    cfg = preset_config("full", lr_schedule=schedule, **fleet)
    run = FleetRun(cfg, ROOT / "bench" / "results" / "fleet_seed_tmp", preset="full", progress=False,
                   log=lambda _line: None, training_draw=training_draw)
    everyone = run.robots
    traffic = run._task_traffic()  # routing is trained on the whole fleet's traffic, as in the benchmark
    mine = [i for i, r in enumerate(everyone) if task in r.tasks]
    base = load_base_policy(cfg.base_policy)
    demos = {everyone[i].robot_id: {task: collect_expert_episodes(
        task, everyone[i].num_demos, seed=demo_seed(seed, i, cfg.tasks.index(task)), base_policy=base)} for i in mine}
    run.robots = [everyone[i] for i in mine]
    first = demos[run.robots[0].robot_id][task][0]
    dims = {"obs_dim": int(first["observation"].shape[1]), "action_dim": int(first["base_action"].shape[1]),
            "hidden": cfg.skill_hidden}
    init_state = SkillBank(cfg.num_experts, **dims, seed=seed).state()
    routing, _ = build_routing("learned", list(cfg.tasks), traffic, num_experts=cfg.num_experts, top_k=cfg.top_k,
                               load_balance_weight=cfg.load_balance_weight, seed=seed)
    es = eval_seed(seed)

    def success(spec) -> float:
        return run_eval_job(EvalJob("k", spec, task, episodes, es, cfg.max_path_length))[1]

    rows = []
    for method in methods:
        t0 = time.perf_counter()
        row = {"task": task, "seed": seed, "lr_schedule": schedule, "method": method, "episodes": episodes,
               "robots_per_task": cfg.robots_per_task, "budget": f"{cfg.rounds}x{cfg.local_epochs}",
               "training_draw": training_draw}
        if method == "local":
            o = run._run_local(seed, demos, routing, dims, init_state)
        elif method == "centralized":
            o = run._run_centralized(seed, demos, routing, dims, init_state)
        elif method == "bc":
            o = run._run_bc(seed, demos)
        else:
            o = run._run_federated(method, seed, demos, routing, dims, init_state, None)
        row["success"] = {rid: success(spec) for (rid, _t), spec in o.policies.items()}
        if "final_states" in o.extra:
            state = o.extra["final_states"][run.robots[0].robot_id]
            row["base_gain"] = [np.round(10 * state[f"experts.{e}.base_gain"], 3).tolist() for e in routing[task][0]]
        if per_round and method == "local":
            rid = run.robots[0].robot_id
            bank = SkillBank(cfg.num_experts, **dims).load(init_state)
            row["rounds"] = []
            for r in range(cfg.rounds):  # the data-rich robot's rounds, as _run_local trains them
                m = train_bank(bank, demos[rid], routing, epochs=cfg.local_epochs, seed=run.round_seed(seed, rid, r),
                               lr_schedule=cfg.lr_schedule)
                state = bank.state()
                row["rounds"].append({"round": r + 1, "loss": m["loss"],
                                      "base_gain": np.round(10 * state[f"experts.{routing[task][0][0]}.base_gain"], 3).tolist(),
                                      "success": success(skills_spec(state, dims, *routing[task]))})
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="door-lock-v3")
    parser.add_argument("--seeds", default="4", help="comma-separated benchmark seeds")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--lr-schedule", default="cosine", choices=("cosine", "constant"))
    parser.add_argument("--methods", default="local,fedavg_plain,centralized,bc")
    parser.add_argument("--per-round", action="store_true", help="local: loss, base gain and success after every round")
    parser.add_argument("--robots-per-task", type=positive_int,
                        help="fleet size per task (default: the full preset's; 2 rebuilds the 8-robot fleet of the "
                             "measurements in docs/fleet.md before the full preset had 3)")
    parser.add_argument("--budget", type=budget_point, help="rounds x local epochs, e.g. 10x20 (default: the full preset's)")
    parser.add_argument("--training-draws", type=draw_list, default=[0],
                        help="comma-separated training draws: 0 is the benchmark's training seeds, k > 0 shifts "
                             "every training seed (local, federated, centralized, BC) with the same "
                             "demonstrations and evaluation episodes")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--summarize", metavar="JSONL",
                        help="only print the markdown table of a results file: per task and seed, each method's "
                             "mean over its training draws, and the averages")
    args = parser.parse_args(argv)
    if args.summarize:
        try:
            rows = [json.loads(line) for line in Path(args.summarize).read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            parser.error(f"--summarize: cannot read {args.summarize}: {exc}")
        print("\n".join(draw_table(rows)))
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for draw in args.training_draws:
            rows = run_seed(args.task, seed, args.episodes, args.lr_schedule, args.methods.split(","), args.per_round,
                            args.robots_per_task, args.budget, draw)
            with out.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            done += rows
    for line in summary(done):
        print(line)
    print(f"appended to {out}")
    return 0


def draw_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (argparse type: non-negative integers, a usage error otherwise)."""
    try:
        draws = [int(x) for x in text.split(",")]
    except ValueError:
        draws = []
    if not draws or min(draws) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return draws


def draw_table(rows: list[dict]) -> list[str]:
    """Markdown: one row per (task, seed) with each method's cells over the training draws and
    their mean, then the average of those means (every cell counted once, whatever its draws)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["task"], r["seed"]), {}).setdefault(r["method"], []).append(
            100 * sum(r["success"].values()) / len(r["success"]))
    lines = ["| task | seed | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    means: dict = {m: [] for m in methods}
    for (task, seed), by_method in sorted(cells.items()):
        row = []
        for m in methods:
            v = by_method.get(m, [])
            if v:
                means[m].append(sum(v) / len(v))
            row.append(f"{sum(v) / len(v):.1f} ({', '.join(f'{x:.0f}' for x in v)})" if v else "-")
        lines.append(f"| {task} | {seed} | " + " | ".join(row) + " |")
    lines.append("| **average** | | " + " | ".join(
        f"**{sum(v) / len(v):.1f}**" if v else "-" for v in means.values()) + " |")
    return lines


def summary(rows: list[dict]) -> list[str]:
    """One line per method: the task's success (mean over the task's robots) per row, and their mean."""
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = [100 * sum(r["success"].values()) / len(r["success"]) for r in rows if r["method"] == method]
        lines.append(f"{method}: {', '.join(f'{c:.0f}' for c in cells)} %  (mean {sum(cells) / len(cells):.1f})")
    return lines


if __name__ == "__main__":
    sys.exit(main())
