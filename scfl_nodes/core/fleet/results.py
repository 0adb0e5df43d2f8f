"""results.json, the terminal table and the PNG plots of a fleet run.

Everything here reads the plain ``results`` dict that :func:`scfl_nodes.core.fleet.run_fleet`
returns (and writes to ``results.json``), so plots and tables can be regenerated from a
saved file without rerunning anything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

METHOD_LABELS = {
    "expert": "scripted expert (the demonstrator)",
    "base": "base only (frozen)",
    "local": "local skills (no federation)",
    "centralized": "centralized skills (pooled demos)",
    "bc": "behaviour cloning (same demos)",
    "fedavg_plain": "FedAvg plaintext",
    "fedavg_enc": "FedAvg encrypted (SCFL)",
    "eda_enc": "EDA encrypted (FedVLA aggr.)",
    "router_random": "router: random top-k",
    "router_similarity": "router: similarity",
    "router_no_lb": "router: learned, no load bal.",
}


def mean_std(values) -> dict:
    """Mean, sample sd (ddof=1) and a 95% Student-t interval of the mean over seeds.

    ``ci95 = mean ± t(0.975, n-1) · sd / sqrt(n)``: with 3-5 seeds the t quantile (4.30 for
    n=3, 2.78 for n=5) is much wider than 1.96, which is the point -- a comparison is only
    claimed when the intervals say so. One seed gives no interval (None).
    """
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "ci95": None, "n": 0, "per_seed": []}
    n = len(vals)
    mean = float(np.mean(vals))
    sd = float(np.std(vals, ddof=1)) if n > 1 else 0.0
    ci = None
    if n > 1:
        half = t_quantile_975(n - 1) * sd / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"mean": mean, "std": sd, "ci95": ci, "n": n, "per_seed": vals}


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, int(dof)))


def write_json(results: dict, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename): an interrupted run never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _pct(ms: dict | None) -> str:
    if not ms or ms.get("mean") is None:
        return "-"
    if len(ms.get("per_seed", [])) > 1:
        return f"{100 * ms['mean']:.1f}±{100 * ms['std']:.1f}"
    return f"{100 * ms['mean']:.1f}"


def _bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def _upload_cell(acc: dict) -> str:
    if acc.get("bytes_per_robot_per_round") is not None:
        return _bytes(acc["bytes_per_robot_per_round"])
    if acc.get("upload_total_per_robot") is not None:
        return f"{_bytes(acc['upload_total_per_robot'])} raw demos, once"
    return "-"


def _train_cell(acc: dict) -> str:
    if acc.get("edge_train_seconds_per_robot") is not None:
        return f"{acc['edge_train_seconds_per_robot']:.1f}"
    if acc.get("cloud_train_seconds") is not None:
        return f"(cloud {acc['cloud_train_seconds']:.1f})"
    return "-"


#: Per-robot-class columns (results.json keys) and their headers: every method's success on
#: the robots with a single demonstration *and* on the data-rich ones, so that a cost of
#: federation to anyone shows.
CLASS_COLUMNS = (("few_demo_success", "few-demo robots"), ("rich_demo_success", "data-rich robots"),
                 ("mixed_task_success", "mixed-task robots"), ("retargeted_success", "retargeted-demo robots"))


def class_columns(results: dict) -> list[tuple[str, str]]:
    """The class columns this run has data for (a fleet without few-demo robots has none)."""
    return [(key, head) for key, head in CLASS_COLUMNS
            if any((m.get(key) or {}).get("mean") is not None for m in results["methods"].values())]


def ci_text(ms: dict | None) -> str:
    """``"mean [lo, hi]"`` in % (95% t-interval over seeds); just the mean for one seed."""
    if not ms or ms.get("mean") is None:
        return "-"
    if not ms.get("ci95"):
        return f"{100 * ms['mean']:.1f}"
    lo, hi = max(0.0, ms["ci95"][0]), min(1.0, ms["ci95"][1])  # a success rate lies in [0, 1]
    return f"{100 * ms['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def format_table(results: dict) -> str:
    """Success (%) per task and method, mean ± std over seeds, plus communication/compute."""
    tasks = results["meta"]["tasks"]
    short = [t.removesuffix("-v3") for t in tasks]
    classes = class_columns(results)
    header = ["method"] + short + ["avg"] + [h for _, h in classes] + ["up/robot/round", "edge train s", "trainable params"]
    rows = []
    for name, m in results["methods"].items():
        acc = m.get("accounting", {})
        row = [METHOD_LABELS.get(name, name)]
        row += [_pct(m["success"].get(t)) for t in tasks]
        row.append(_pct(m.get("avg")))
        row += [_pct(m.get(k)) for k, _ in classes]
        row.append(_upload_cell(acc))
        row.append(_train_cell(acc))
        tp = acc.get("trainable_params")
        row.append("-" if not tp else f"{tp:,}")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    meta = results["meta"]
    title = (
        f"Success rate (%) on Meta-World v3, {meta['eval_episodes']} evaluation episodes per task and seed, "
        f"{meta['num_seeds']} seed(s){' (mean ± std over seeds)' if meta['num_seeds'] > 1 else ''}"
    )
    out = [title, line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    if meta.get("preset_note"):
        out.append(meta["preset_note"])
    return "\n".join(out)


def format_markdown_table(results: dict) -> str:
    tasks = results["meta"]["tasks"]
    classes = class_columns(results)
    head = ["method"] + [t.removesuffix("-v3") for t in tasks] + ["avg"] + [h for _, h in classes] + ["upload / robot / round", "edge train s / robot", "trainable params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results["methods"].items():
        acc = m.get("accounting", {})
        cells = [METHOD_LABELS.get(name, name)] + [_pct(m["success"].get(t)) for t in tasks] + [_pct(m.get("avg"))]
        cells += [_pct(m.get(k)) for k, _ in classes]
        tp = acc.get("trainable_params")
        cells += [_upload_cell(acc), _train_cell(acc), "-" if not tp else f"{tp:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_interval_table(results: dict) -> str:
    """Markdown: each method's averages (all robots and per robot class) with 95% t-intervals over seeds."""
    classes = class_columns(results)
    head = ["method", "avg, all robots"] + [h for _, h in classes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results["methods"].items():
        cells = [METHOD_LABELS.get(name, name), ci_text(m.get("avg"))] + [ci_text(m.get(k)) for k, _ in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_plots(results: dict, out_dir: str | os.PathLike) -> list[Path]:
    """success_per_task.png, success_vs_round.png, expert_utilisation.png (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    meta = results["meta"]
    tasks = meta["tasks"]
    methods = list(results["methods"])
    note = f"{meta['eval_episodes']} eval episodes/task/seed, {meta['num_seeds']} seed(s)"

    # 1. success per task per method (grouped bars, error bars = std over seeds)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * (len(tasks) + 1) + 2), 4.8))
    groups = tasks + ["average"]
    width = 0.8 / max(1, len(methods))
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    for i, name in enumerate(methods):
        m = results["methods"][name]
        cells = [m["success"].get(t) or {} for t in tasks] + [m.get("avg") or {}]
        means = [100 * (c.get("mean") or 0.0) for c in cells]
        stds = [100 * (c.get("std") or 0.0) for c in cells]
        x = np.arange(len(groups)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds if meta["num_seeds"] > 1 else None, capsize=2, label=METHOD_LABELS.get(name, name), color=cmap(i))
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([g.removesuffix("-v3") for g in groups])
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Success per task and method ({note})")
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    paths.append(out_dir / "success_per_task.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. success vs round (federated methods and local training of the same length)
    curves = {n: m["curve"] for n, m in results["methods"].items() if m.get("curve")}
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (name, curve) in enumerate(curves.items()):
            xs = [c["round"] for c in curve]
            ys = np.array([100 * (c["mean"] or 0.0) for c in curve])
            sd = np.array([100 * (c["std"] or 0.0) for c in curve])
            ax.plot(xs, ys, marker="o", label=METHOD_LABELS.get(name, name), color=cmap(methods.index(name) if name in methods else i))
            if meta["num_seeds"] > 1:
                ax.fill_between(xs, ys - sd, ys + sd, alpha=0.15, color=cmap(methods.index(name) if name in methods else i))
        for name, style in (("base", ":"), ("centralized", "--")):
            if name in results["methods"] and results["methods"][name]["avg"].get("mean") is not None:
                ax.axhline(100 * results["methods"][name]["avg"]["mean"], ls=style, color="gray", label=METHOD_LABELS[name])
        ax.set_xlabel("federated round (local: same number of local epochs)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("average success (%)")
        ax.set_ylim(0, 105)
        ax.set_title(f"Success vs round ({meta.get('curve_episodes', meta['eval_episodes'])} episodes/task/seed per point, "
                     f"last round {meta['eval_episodes']})", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / "success_vs_round.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    # 3. expert utilisation per router variant
    util = {n: m["utilisation"] for n, m in results["methods"].items() if m.get("utilisation")}
    if util:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        k = len(next(iter(util.values())))
        width = 0.8 / len(util)
        for i, (name, shares) in enumerate(util.items()):
            x = np.arange(k) + (i - (len(util) - 1) / 2) * width
            label = "learned top-k + load balancing (main methods)" if name == "fedavg_enc" else METHOD_LABELS.get(name, name)
            ax.bar(x, 100 * np.asarray(shares), width, label=label, color=cmap(methods.index(name) if name in methods else i))
        ax.axhline(100 / k, ls=":", color="gray", label="uniform")
        ax.set_xticks(np.arange(k))
        ax.set_xlabel("skill (expert) index")
        ax.set_ylabel("share of routing weight (%)")
        ax.set_title("Expert utilisation over the fleet's tasks")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / "expert_utilisation.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
