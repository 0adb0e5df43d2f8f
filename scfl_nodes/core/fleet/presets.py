"""Named fleet presets on top of the ``fleet`` config section.

* ``demo`` — what `scfl demo` runs: the full pipeline (real cloud, real encryption, all
  methods) but 1 seed and 10 evaluation episodes per task, so it finishes in minutes on a
  laptop. Its numbers are noisy; the results say so.
* ``full`` — the benchmark: 5 seeds x 50 evaluation episodes per task (a standard error of
  ~3 points on a 4-task average needs 5-7 seeds: the training seed dominates the variance),
  5 rounds x 40 local epochs: on the measured convergence curve (issue 14's study, weighted
  FedAvg) 5x10 is undertrained, 5x40 matches centralized at a quarter of 20x10's upload, and
  5x80 drifts (docs/fleet.md, "Training budget"; re-measure with bench/bench_fleet_budget.py).
  Its training runs decay the lr along a cosine: with a constant lr a converged run can end
  on a loss spike (door-lock seed 4: 18 %); the demo's short 3x10 budget keeps a constant
  lr, which a cosine would undertrain (docs/fleet.md, "Training schedule").
* ``heldout`` — ``full`` on four tasks neither the base policy nor the default fleet trained
  on (button-press-topdown, drawer-open, reach, plate-slide): the second results table.
* ``vision`` — the fleet on the image-conditioned base (``scfl-metaworld-vision``): every
  demonstration and evaluation step renders a camera frame (~12-35 ms on the shared 2-core
  CPU, ~100x a physics step), so it is sized to the 30-minute budget: the three training
  tasks the vision base does not already solve (drawer-close: 100 %), base / local /
  encrypted FedAvg only, 5 seeds x 8 episodes (the training seed dominates the variance, so
  seeds buy more than episodes), no per-round curve. Its own table in docs/results.md.

All use 2 robots per task, one of which has a single demonstration -- the robots
federation is supposed to help.
"""

from __future__ import annotations

import dataclasses

from scfl_nodes.core.sim.tasks import HELD_OUT_TASKS

_FULL = dict(
    robots_per_task=2, few_demo_robots_per_task=1, demos_per_robot=10, few_demos=1,
    rounds=5, local_epochs=40, eval_episodes=50, seeds=5, max_path_length=200, lr_schedule="cosine",
)

PRESETS: dict[str, dict] = {
    "demo": dict(
        robots_per_task=2, few_demo_robots_per_task=1, demos_per_robot=5, few_demos=1,
        rounds=3, local_epochs=10, eval_episodes=10, seeds=1, max_path_length=200,
    ),
    "full": dict(_FULL),
    "heldout": dict(_FULL, tasks=HELD_OUT_TASKS),
    "vision": dict(
        _FULL, base_policy="scfl-metaworld-vision", tasks=("door-lock-v3", "sweep-into-v3", "window-open-v3"),
        methods=("base", "local", "fedavg_enc"), eval_episodes=8, seeds=5, round_curve=False,
    ),
}

PRESET_NOTES = {
    "demo": "demo preset: 1 seed and 10 evaluation episodes per task (the full benchmark uses 5 seeds x 50): "
            "differences below ~20 points are noise.",
    "full": "",
    "heldout": "held-out tasks: the frozen base policy was never trained on these four tasks.",
    "vision": "vision preset: the frozen base sees rendered 64x64 camera frames; 5 seeds x 8 evaluation episodes "
              "per task (sized for 30 minutes on 2 cores): compare methods by their 95% intervals.",
}


def preset_config(name: str, base=None, **overrides):
    """``base`` (a FleetConfig, default: config/scfl.yaml's) with the preset and ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown fleet preset {name!r}; known: {', '.join(PRESETS)}")
    if base is None:
        from scfl_nodes.core.config import load_config

        base = load_config().fleet
    return dataclasses.replace(base, **{**PRESETS[name], **overrides})
