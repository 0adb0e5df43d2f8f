"""Generate docs/results.md from the fleet benchmark (and bench/results/all.json if present).

Usage: ``python scripts/make_results_doc.py [--results bench/results/fleet_full/results.json]``.
Falls back to the demo run when the full benchmark has not been run, and says so. Issue 14's
ablation presets (ambiguous, heterogeneous, retargeted) get one section each when
bench/results/fleet_<preset>/results.json exists.
The published FedVLA numbers are printed beside ours, labelled as a different base model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEDVLA = {  # FedVLA (ICCV 2025, arXiv 2508.02190), Meta-World simulation, success %
    "Centralized": {"door-lock-v3": 86.7, "drawer-close-v3": 73.3, "sweep-into-v3": 53.3, "window-open-v3": 46.7, "avg": 65.0},
    "FedAvg": {"door-lock-v3": 66.7, "drawer-close-v3": 73.3, "sweep-into-v3": 40.0, "window-open-v3": 26.7, "avg": 51.7},
    "FedVLA (EDA + DGMoE + IOSP)": {"door-lock-v3": 80.0, "drawer-close-v3": 80.0, "sweep-into-v3": 53.3, "window-open-v3": 40.0, "avg": 63.3},
}
OURS_VS_FEDVLA = [("centralized", "Centralized"), ("fedavg_enc", "FedAvg"), ("eda_enc", "FedVLA (EDA + DGMoE + IOSP)")]


def _pct(ms):
    if not ms or ms.get("mean") is None:
        return "-"
    s = f"{100 * ms['mean']:.1f}"
    return s + (f" ± {100 * ms['std']:.1f}" if len(ms.get("per_seed", [])) > 1 else "")


def _separated(a, b) -> str:
    """Whether two methods' 95% intervals overlap (the claim the table can support)."""
    if not a or not b or not a.get("ci95") or not b.get("ci95"):
        return "one seed: no interval"
    if a["ci95"][0] > b["ci95"][1]:
        return "higher, intervals do not overlap"
    if a["ci95"][1] < b["ci95"][0]:
        return "lower, intervals do not overlap"
    return "intervals overlap: not distinguishable at this number of seeds"


def demonstrator_line(res: dict) -> list[str]:
    """What the `expert` row is and where it fails: learners are partly measured on episodes
    their own demonstrator does not solve (demonstrations keep only its successful episodes)."""
    expert = res["methods"].get("expert")
    if not expert:
        return []
    fails = [f"{t.removesuffix('-v3')} {100 * (1 - m['mean']):.1f} %" for t, m in expert["success"].items()
             if m and m.get("mean") is not None and m["mean"] < 1]
    return [f"* `scripted expert (the demonstrator)`: Meta-World's scripted policy that made every demonstration, on the "
            f"same episodes (a reference, not a learner): {_pct(expert['avg'])} %. "
            + (f"It fails {', '.join(fails)} of the episodes, so there a learner is measured partly on episodes its demonstrator "
               "does not solve (the demonstrations keep only the expert's successful episodes)."
               if fails else "It solves every episode.")]


def comparisons(res: dict) -> list[str]:
    """The headline comparisons, each with its 95% intervals and whether they separate."""
    from scfl_nodes.core.fleet.results import ci_text

    ms = res["methods"]
    pairs = [("fedavg_enc", "centralized", "avg"), ("fedavg_enc", "local", "few_demo_success"),
             ("fedavg_enc", "local", "rich_demo_success"), ("fedavg_enc", "bc", "few_demo_success"),
             ("fedavg_enc", "bc", "rich_demo_success"), ("eda_enc", "fedavg_enc", "avg"),
             ("centralized", "local", "rich_demo_success")]
    names = {"avg": "all robots", "few_demo_success": "few-demo robots", "rich_demo_success": "data-rich robots"}
    out = []
    for a, b, key in pairs:
        if a in ms and b in ms and (ms[a].get(key) or {}).get("mean") is not None and (ms[b].get(key) or {}).get("mean") is not None:
            diff = 100 * (ms[a][key]["mean"] - ms[b][key]["mean"])
            d = paired_difference(res, a, b, key)
            paired = ""
            if d and d.get("ci95") and len(d["per_seed"]) > 1:  # same demos and episodes per seed: the sharper test
                paired = (f"; paired per seed {100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"
                          " (" + ", ".join(f"{100 * x:+.1f}" for x in d["per_seed"]) + ")")
            out.append(f"* {names[key]}: {a} {ci_text(ms[a][key])} vs {b} {ci_text(ms[b][key])} "
                       f"({diff:+.1f} points; {_separated(ms[a][key], ms[b][key])}{paired}).")
    return out


def restat(node):
    """Recompute every ``{mean, std, per_seed}`` from its per-seed values (results.json files
    written before the sample sd and the t-intervals existed get them too)."""
    from scfl_nodes.core.fleet.results import mean_std

    if isinstance(node, dict):
        if "per_seed" in node and "mean" in node:
            return mean_std(node["per_seed"])
        return {k: restat(v) for k, v in node.items()}
    if isinstance(node, list):
        return [restat(v) for v in node]
    return node


def add_class_columns(res: dict) -> dict:
    """Per-robot-class averages for results.json files written before they were recorded
    (derived from the stored per-robot, per-seed success and the robot list)."""
    from scfl_nodes.core.fleet.robots import RobotSpec, robot_class

    robots = {r["robot_id"]: robot_class(RobotSpec(r["robot_id"], tuple(r["tasks"]), tuple(r["demos_per_task"]), r["few_demo"],
                                                         r.get("retargeted", False)))
              for r in res["meta"]["robots"]}
    keys = {"few": "few_demo_success", "rich": "rich_demo_success", "mixed": "mixed_task_success",
            "retargeted": "retargeted_success"}
    for m in res["methods"].values():
        for cls, key in keys.items():
            if key in m:
                continue
            cols = [v["per_seed"] for k, v in m.get("per_robot", {}).items() if robots.get(k.split(":")[0]) == cls]
            m[key] = {"mean": None, "per_seed": [sum(c[i] for c in cols) / len(cols) for i in range(len(cols[0]))]} if cols else None
    return res


def paired_difference(res: dict, a: str, b: str, key: str) -> dict | None:
    """``a - b`` per seed (the same demos and evaluation episodes), with its 95% t-interval."""
    from scfl_nodes.core.fleet.results import mean_std

    ms = res["methods"]
    if a not in ms or b not in ms or not (ms[a].get(key) or {}).get("per_seed") or not (ms[b].get(key) or {}).get("per_seed"):
        return None
    return mean_std([x - y for x, y in zip(ms[a][key]["per_seed"], ms[b][key]["per_seed"])])


def render_vision(vres: dict, source: str, bench: dict | None) -> list[str]:
    """The vision fleet's own section: setup, tables, noise level, wall time + load, the command."""
    from scfl_nodes.core.fleet.results import format_interval_table, format_markdown_table

    vres = add_class_columns(vres)
    vres = {**vres, "methods": restat(vres["methods"])}
    m, c = vres["meta"], vres["meta"]["config"]
    tasks, eps, seeds = m["tasks"], m["eval_episodes"], m["num_seeds"]
    robots = m["robots"]
    few = sum(1 for r in robots if r["few_demo"])
    binom_cell = 100 * 0.5 / eps ** 0.5
    binom_class = 100 * 0.5 / (eps * max(1, few)) ** 0.5  # the few-demo class: `few` robots, eps episodes each
    lines = ["## Vision fleet (`scfl fleet --preset vision`): robots see rendered camera frames", "",
             f"From `{source}`. The frozen base is `{m['base_policy']}` (docs/vla.md): every demonstration and "
             "evaluation step renders the corner camera at 64×64 and the base acts on the frame, the instruction "
             "and proprioception; residual skills train on its 128-d embedding and federate encrypted through the "
             "real cloud, as in the state table above (which stays the reference for the state base).", "",
             f"* {len(robots)} robots on {', '.join(tasks)} (the vision base's training tasks except drawer-close, "
             f"which it already solves); {few} of them have {c['few_demos']} demonstration(s), the others "
             f"{c['demos_per_robot']}.",
             f"* {c['rounds']} rounds × {c['local_epochs']} local epochs, {c['num_experts']} skills, top-{c['top_k']} "
             f"routing, {c['encryption']} encryption; methods {', '.join(vres['methods'])} (rendering is the cost: "
             "centralized, BC and the ablations are in the state table).",
             f"* {seeds} seed(s) × {eps} evaluation episodes per task, horizon {m['max_path_length']} steps, the same "
             "seeded episodes for every method.",
             f"* **Noise level.** One task cell of one seed is a rate over {eps} episodes: binomial sd up to "
             f"±{binom_cell:.1f} points; the few-demo class average ({few} robots × {eps} episodes): up to "
             f"±{binom_class:.1f} points per seed. Training seeds add to that; "
             + (f"the measured sd over seeds and the 95% Student-t intervals (t(0.975, {seeds - 1}) = {t975(seeds - 1):.2f}) "
                "are below. A difference is claimed only where the intervals do not overlap." if seeds > 1 else
                "one seed gives no interval: no difference is claimed.")]
    if bench and bench.get("wall_s"):
        load = bench.get("load_average_1min") or {}
        shared = ("i.e. shared with other jobs" if load and load["max"] > 4.0
                  else "i.e. the run itself and little else")  # the run alone keeps ~2 cores busy
        load_txt = (f"1-min load average {load['mean']:.1f} (min {load['min']:.1f}, max {load['max']:.1f}) on the 2 cores, "
                    f"{shared}" if load else "load not recorded")
        lines.append(f"* **Wall time {bench['wall_s'] / 60:.1f} min** (`bench/results/fleet.json`, preset `vision`; "
                     f"target < {bench.get('target_s', 1800) / 60:.0f} min on 2 cores), run under nice 10 with "
                     f"{load_txt}. Time split: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in m["timings_s"].items())
                     + f"; {m['eval_episodes_run']} evaluation episodes, {m['eval_env_steps']:,} rendered evaluation steps.")
    lines += ["* Reproduce: `python bench/bench_fleet.py --preset vision` (or `scfl fleet --preset vision --out DIR`), "
              "then `python scripts/make_results_doc.py`.", "",
              format_markdown_table(vres), "", format_interval_table(vres), ""]
    comp = comparisons(vres)
    d = paired_difference(vres, "fedavg_enc", "local", "few_demo_success")
    if d and d.get("ci95"):
        comp.append(f"* few-demo robots, paired per seed: fedavg_enc − local = {100 * d['mean']:+.1f} points, 95% "
                    f"interval [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] (per seed: "
                    + ", ".join(f"{100 * x:+.0f}" for x in d["per_seed"]) + ").")
    if comp:
        lines += ["**Comparisons:**", ""] + comp + [""]
    lines += ["Skills on the vision base's embedding gain far less than on the state base's: an offline probe "
              "(docs/fleet.md, \"The vision variant\") finds that embedding missing object/goal position the expert's "
              "action depends on, and single-demonstration skills worse than the base on held-out demonstrations.", ""]
    if vres.get("plots"):
        lines += [f"![vision {Path(p).stem}]({_rel(p)})" for p in vres["plots"]] + [""]
    return lines


#: issue 14's ablation presets, and the full benchmark's earlier 8-robot fleet (bench/results/fleet_<name>/):
#: (heading, what the fleet is, the comparisons its sentence is about)
ABLATIONS = {
    "full_5x40": ("The full benchmark at 5 rounds × 40 local epochs (the budget before 10 × 20)",
                  "the same 12 robots, code, seeds and episodes as the table above, the same 200 local epochs in 5 "
                  "rounds of 40 (measured 2026-12-02, 43.3 min at a 1-minute load of 1.2): between averages the two "
                  "data-rich robots of a task drift apart; centralized and BC train their 200 epochs at once and "
                  "score the same as above, local skills (which restart their cosine every round too) change",
                  [("fedavg_enc", "centralized"), ("fedavg_enc", "local"), ("fedavg_enc", "bc")]),
    "full_2per_task": ("The full benchmark on the earlier 8-robot fleet (one data-rich robot per task)",
                       "per task one 10-demo and one 1-demo robot, the `full` preset before it had 3 robots per task "
                       "(measured 2026-12-02 with the fleet code of the table above, 26.7 min at a 1-minute load of 1.3; "
                       "`bench/bench_fleet_seed.py --robots-per-task 2` rebuilds its cells): federation can add only one "
                       "demonstration to a data-rich robot's ten",
                       [("fedavg_enc", "centralized"), ("fedavg_enc", "local"), ("fedavg_enc", "bc")]),
    "ambiguous": ("Ablation: routing where it is ambiguous (`--preset ambiguous`)",
                  "tasks that share objects and motions (drawer-open / drawer-close, window-open / window-close), "
                  "more skills than tasks, and mixed-task robots; the router variants run the same encrypted per-skill "
                  "FedAvg as `fedavg_enc` (learned gate with load balancing)",
                  [("router_no_lb", "fedavg_enc"), ("router_similarity", "fedavg_enc"), ("router_random", "fedavg_enc")]),
    "heterogeneous": ("Ablation: EDA vs per-skill FedAvg on a heterogeneous fleet (`--preset heterogeneous`)",
                      "per task two 10-demo robots and a 1-demo robot, plus mixed-task robots with 5 + 5 demonstrations (one per pair of tasks), "
                      "so EDA's activation-similarity weights and per-skill sample-weighted FedAvg average differently",
                      [("eda_enc", "fedavg_enc"), ("fedavg_enc", "local")]),
    "retargeted": ("Retargeted demonstrations in the loop (`--preset retargeted`)",
                   "per task one robot learning from human-hand demonstrations retargeted onto a Panda by IK and replayed "
                   "(`core/fleet/retargeted_demos.py`, the `scfl retarget` path), one data-rich and one single-demo robot "
                   "learning from the scripted expert",
                   [("fedavg_enc", "local"), ("centralized", "local")]),
}
CLASS_NAMES = {"avg": "all robots", "few_demo_success": "few-demo robots", "rich_demo_success": "data-rich robots",
               "mixed_task_success": "mixed-task robots", "retargeted_success": "retargeted-demo robots"}


def _shared_skills(routing: dict) -> str:
    """Which tasks a router variant sends through common skills (seed 0's routing)."""
    tasks = list(routing.get("routing", {}))
    pairs = [f"{a.removesuffix('-v3')} + {b.removesuffix('-v3')}" for i, a in enumerate(tasks) for b in tasks[i + 1:]
             if set(routing["routing"][a]["experts"]) & set(routing["routing"][b]["experts"])]
    return ", ".join(pairs) if pairs else "none"


def render_ablation(name: str, res: dict, source: str, bench: dict | None) -> list[str]:
    """One ablation preset's section: the fleet, the interval table, each comparison's paired
    difference with its interval, and a sentence that says what (if anything) separates."""
    from scfl_nodes.core.fleet.results import format_interval_table

    heading, fleet, pairs = ABLATIONS[name]
    res = {**res, "methods": restat(res["methods"])}
    m, c = res["meta"], res["meta"]["config"]
    lines = [f"## {heading}", "",
             f"From `{source}`: {len(m['robots'])} robots on {', '.join(t.removesuffix('-v3') for t in m['tasks'])}; {fleet}. "
             f"{c['num_experts']} skills, top-{c['top_k']}, {c['rounds']} rounds × {c['local_epochs']} local epochs; "
             f"{m['num_seeds']} seeds × {m['eval_episodes']} evaluation episodes per task "
             + (f"(the full benchmark's 200 local epochs, fewer seeds and episodes: t(0.975, {m['num_seeds'] - 1}) = "
                f"{t975(m['num_seeds'] - 1):.2f}, so only large differences separate)."
                if m["num_seeds"] < 5 or m["eval_episodes"] < 50 else "(the full benchmark's 200 local epochs, seeds and episodes).")]
    if bench and bench.get("wall_s"):
        load = bench.get("load_average_1min") or {}
        lines[-1] += (f" Wall time {bench['wall_s'] / 60:.1f} min under nice 10"
                      + (f", 1-min load average {load['mean']:.1f} on the 2 shared cores." if load else "."))
    lines += ["", format_interval_table(res), ""]
    ms, found, consistent = res["methods"], [], []
    for a, b in pairs:
        cells = []
        for key in ("avg", "few_demo_success", "rich_demo_success", "mixed_task_success", "retargeted_success"):
            d = paired_difference(res, a, b, key)
            if not d or d.get("mean") is None:
                continue
            sep = bool(d.get("ci95")) and (d["ci95"][0] > 0 or d["ci95"][1] < 0)
            interval = (f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" if d.get("ci95") else "no interval")
            cells.append(f"{CLASS_NAMES[key]} {100 * d['mean']:+.1f} {interval}" + (" **(separates from 0)**" if sep else "")
                         + (" (per seed " + ", ".join(f"{100 * x:+.0f}" for x in d["per_seed"]) + ")" if key == "avg" else ""))
            if sep:
                found.append(f"{a} {'above' if d['mean'] > 0 else 'below'} {b} on {CLASS_NAMES[key]} "
                             f"({100 * d['mean']:+.1f} points)")
            elif key == "avg" and len(d["per_seed"]) > 1 and (all(x > 0 for x in d["per_seed"]) or all(x < 0 for x in d["per_seed"])):
                consistent.append(f"{a} is {'above' if d['mean'] > 0 else 'below'} {b} in every seed "
                                  f"({100 * d['mean']:+.1f} points on average) but its interval still includes 0")
        if cells:
            gaps = [(abs(ms[a]["success"][t]["mean"] - ms[b]["success"][t]["mean"]), t) for t in m["tasks"]
                    if (ms[a]["success"].get(t) or {}).get("mean") is not None and (ms[b]["success"].get(t) or {}).get("mean") is not None]
            gap, task = max(gaps) if gaps else (0.0, None)
            worst = (f"; largest per-task gap: {task.removesuffix('-v3')} {_pct(ms[a]['success'][task])} vs "
                     f"{_pct(ms[b]['success'][task])}" if task and gap > 0 else "")
            lines.append(f"* {a} − {b}, paired over seeds (points, 95% interval): " + "; ".join(cells) + worst + ".")
    if name == "ambiguous":
        variants = {"fedavg_enc": "learned", "router_no_lb": "no_lb", "router_similarity": "similarity", "router_random": "random"}
        shared = [f"{k} ({_shared_skills(res['routing'][v])})" for k, v in variants.items() if v in res.get("routing", {})]
        lines.append("* Tasks routed through a common skill (seed 0): " + "; ".join(shared) + ".")
        same = [k for k, v in variants.items() if k != "fedavg_enc" and v in res.get("routing", {}) and "learned" in res["routing"]
                and res["routing"][v]["routing"] == res["routing"]["learned"]["routing"]]
        if same:
            lines.append(f"* {', '.join(same)} routed exactly as the learned gate with load balancing (seed 0).")
    if m.get("demo_success"):
        lines.append("* Share of successful demonstrations per robot class (mean over seeds): " + ", ".join(
            f"{cls} {100 * v['mean']:.0f} %" for cls, v in m["demo_success"].items() if v.get("mean") is not None) + ".")
    checks = res.get("checks", {})
    if "eda_vs_fedavg_weight_max_abs_diff" in checks:
        lines.append(f"* EDA's weights differ from per-skill FedAvg's: the largest difference in the weight a robot's delta "
                     f"gets, over every receiver, skill and contributor, is {checks['eda_vs_fedavg_weight_max_abs_diff']:.2f} "
                     "(`checks.eda_vs_fedavg_weight_max_abs_diff`; seed 0's tables in `aggregation_weights`).")
    if found:
        verdict = "; ".join(found) + "; every other difference above lies within its interval"
    else:
        verdict = "no difference above separates from zero at this number of seeds"
    if consistent:
        verdict += "; " + "; ".join(consistent)
    lines += ["", f"**What it shows:** {verdict}.", ""]
    return lines


def t975(dof: int) -> float:
    from scfl_nodes.core.fleet.results import t_quantile_975

    return t_quantile_975(dof)


def render(res: dict, source: str, all_json: dict | None, heldout: tuple[dict, str] | None = None, note: str = "",
           vision: tuple[dict, str, dict | None] | None = None,
           ablations: dict[str, tuple[dict, str, dict | None]] | None = None) -> str:
    from scfl_nodes.core.fleet.results import METHOD_LABELS, format_interval_table, format_markdown_table

    res = add_class_columns(res)
    res = {**res, "methods": restat(res["methods"])}
    if heldout:
        h = add_class_columns(heldout[0])
        heldout = ({**h, "methods": restat(h["methods"])}, heldout[1])
    meta = res["meta"]
    tasks = meta["tasks"]
    lines = ["# Results: federated skill learning on Meta-World v3", "",
             f"Generated by `scripts/make_results_doc.py` from `{source}` — do not edit by hand.", ""]
    if note:
        lines += [f"> **Note:** {note}", ""]
    if meta.get("preset") != "full":
        lines += [f"> **Note:** these numbers come from the `{meta.get('preset')}` preset "
                  f"({meta['num_seeds']} seed(s) × {meta['eval_episodes']} evaluation episodes per task), not the full "
                  "benchmark (5 seeds × 50 episodes). Run `python bench/bench_fleet.py --preset full` and regenerate.", ""]
    robots = meta["robots"]
    few = sum(1 for r in robots if r["few_demo"])
    lines += ["## Setup", "",
              f"* {len(robots)} simulated robots on {', '.join(tasks)}; {few} of them have only "
              f"{meta['config']['few_demos']} demonstration(s), the others {meta['config']['demos_per_robot']}.",
              f"* Frozen base policy `{meta['base_policy']}` (scfl's own small language-conditioned BC policy), "
              f"{meta['config']['num_experts']} residual skills, top-{meta['config']['top_k']} routing.",
              f"* {meta['config']['rounds']} federated rounds × {meta['config']['local_epochs']} local epochs; encrypted "
              f"methods upload {meta['config']['encryption']} ciphertexts to the real cloud service (FastAPI + SQLite) over HTTP.",
              f"* Every method is evaluated on the same seeded episodes: {meta['eval_episodes']} per task and seed, "
              f"{meta['num_seeds']} seed(s), horizon {meta['max_path_length']} steps; mean ± sd over seeds "
              "(sample sd), and 95% Student-t intervals of each average below.",
              f"* Run time {meta['runtime_s'] / 60:.1f} min on {meta['machine']['cpus']} CPU cores.", *demonstrator_line(res), "",
              "## Success rate (%) and cost per method", "", format_markdown_table(res), ""]
    ms = res["methods"]
    lines += ["## Averages with 95% intervals, per robot class", "",
              f"Mean over {meta['num_seeds']} seed(s) [95% t-interval of the mean: mean ± t(0.975, n-1) · sd / √n]. "
              "Few-demo robots have "
              f"{meta['config']['few_demos']} demonstration(s), data-rich robots {meta['config']['demos_per_robot']}; "
              "every method is reported on both, so a cost of federation to either class shows.", "",
              format_interval_table(res), ""]
    comp = comparisons(res)
    if comp:
        lines += ["**Headline comparisons** (a difference is claimed only where the intervals do not overlap):", ""] + comp + [""]
    lines += ["## Next to the published FedVLA numbers", "",
              "**Different base models — not a like-for-like comparison.** FedVLA fine-tunes an HPT-based VLA "
              "(vision, 1000 rounds; its rates are multiples of 6.7 %, i.e. ~15 evaluation episodes per task); scfl trains small residual skills on top of a "
              "frozen state-based policy. Only the tasks and the simulator are shared.", "",
              "| method | " + " | ".join(t.removesuffix("-v3") for t in tasks) + " | avg |",
              "|" + "---|" * (len(tasks) + 2)]
    for ours, theirs in OURS_VS_FEDVLA:
        if ours in res["methods"]:
            m = res["methods"][ours]
            lines.append(f"| scfl: {METHOD_LABELS[ours]} | " + " | ".join(_pct(m["success"].get(t)) for t in tasks)
                         + f" | {_pct(m['avg'])} |")
        lines.append(f"| FedVLA paper: {theirs} | " + " | ".join(f"{FEDVLA[theirs].get(t, '-')}" for t in tasks)
                     + f" | {FEDVLA[theirs]['avg']} |")
    lines.append("")
    if heldout:
        hres, hsource = heldout
        hm = hres["meta"]
        lines += ["## Held-out task set (tasks the base policy never saw)", "",
                  f"From `{hsource}`: {', '.join(hm['tasks'])}; same fleet, methods and budget, "
                  f"{hm['num_seeds']} seed(s) × {hm['eval_episodes']} episodes per task.", "",
                  format_markdown_table(hres), "", format_interval_table(hres), ""]
        hc = comparisons(hres)
        if hc:
            lines += hc + [""]
    if vision:
        lines += render_vision(*vision)
    for name, (ares, asource, abench) in (ablations or {}).items():
        lines += render_ablation(name, add_class_columns(ares), asource, abench)
    checks = res.get("checks", {})
    if "encrypted_aggregate_max_abs_error" in checks:
        lines += ["## Encryption changes nothing but quantization", "",
                  f"Largest difference between the decrypted cloud average and the plaintext average of the same clipped "
                  f"deltas, over all rounds: **{checks['encrypted_aggregate_max_abs_error']:.2e}** (quantization step "
                  f"2^-15 ≈ 3.1e-05).", ""]
    acc = {m: v.get("accounting", {}) for m, v in res["methods"].items()}
    a = acc.get("fedavg_enc") or next((v for v in acc.values() if v.get("trainable_params")), {})
    if a.get("trainable_params") and a.get("base_params"):
        lines += ["## Trainable parameters vs the base model (measured)", "",
                  f"* a robot trains {a['trainable_params']:,} skill parameters; the frozen base policy network has "
                  f"{a['base_params']:,} ({a.get('base_params_with_text_encoder', 0):,} with the frozen MiniLM instruction encoder).",
                  f"* ratio: {a['trainable_vs_base']:.2f}× the base network, "
                  f"{100 * a.get('trainable_vs_base_with_text_encoder', 0):.2f}% of base + encoder.",
                  "* The paper's \"73% less compute\" compares 0.5M-parameter skills with a 7B VLA; scfl's base is tiny, "
                  "so here the skills are not smaller than the base network — the saving only appears with a large base.", ""]
    if res.get("plots"):
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({_rel(p)})" for p in res["plots"]] + [""]
    if all_json:
        lines += ["## Other benchmarks (bench/results/all.json)", "", "| benchmark | exit code | wall time (s) |", "|---|---|---|"]
        for topic, e in all_json.get("benchmarks", {}).items():
            lines.append(f"| {topic} | {e.get('returncode')} | {e.get('wall_s')} |")
        lines.append("")
    return "\n".join(lines)


def _rel(p: str) -> str:
    try:
        return str(Path("..") / Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", help="a fleet results.json (default: full benchmark, else demo)")
    parser.add_argument("--heldout", help="results.json of the held-out task set (default: bench/results/fleet_heldout/, if present)")
    parser.add_argument("--vision", help="results.json of the vision fleet (default: bench/results/fleet_vision/, if present)")
    parser.add_argument("--note", default="", help="a sentence printed under the title (e.g. which code produced the numbers)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args(argv)
    candidates = [Path(args.results)] if args.results else [ROOT / "bench/results/fleet_full/results.json",
                                                              ROOT / "bench/results/fleet_demo/results.json"]
    source = next((p for p in candidates if p.exists()), None)
    if source is None:
        print(f"make_results_doc: error: no fleet results found ({', '.join(map(str, candidates))}); "
              "run `python bench/bench_fleet.py` first", file=sys.stderr)
        return 2
    res = json.loads(source.read_text())
    all_path = ROOT / "bench/results/all.json"
    all_json = json.loads(all_path.read_text()) if all_path.exists() else None
    heldout = None
    hpath = Path(args.heldout) if args.heldout else ROOT / "bench/results/fleet_heldout/results.json"
    if hpath.exists():
        heldout = (json.loads(hpath.read_text()), str(hpath.relative_to(ROOT) if hpath.is_relative_to(ROOT) else hpath))
    vision = None
    vpath = Path(args.vision) if args.vision else ROOT / "bench/results/fleet_vision/results.json"
    if vpath.exists():
        fleet_json = ROOT / "bench/results/fleet.json"
        bench = json.loads(fleet_json.read_text()).get("presets", {}).get("vision") if fleet_json.exists() else None
        vision = (json.loads(vpath.read_text()), str(vpath.relative_to(ROOT) if vpath.is_relative_to(ROOT) else vpath), bench)
    ablations = {}
    fleet_json = ROOT / "bench/results/fleet.json"
    presets = json.loads(fleet_json.read_text()).get("presets", {}) if fleet_json.exists() else {}
    for name in ABLATIONS:  # each ablation preset's section, when it has been run
        apath = ROOT / f"bench/results/fleet_{name}/results.json"
        if apath.exists():
            ablations[name] = (json.loads(apath.read_text()), str(apath.relative_to(ROOT)), presets.get(name))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(res, str(source.relative_to(ROOT) if source.is_relative_to(ROOT) else source), all_json, heldout,
                          args.note, vision, ablations) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
