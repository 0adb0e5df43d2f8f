"""Named fleet presets on top of the ``fleet`` config section.

* ``demo`` — what `scfl demo` runs: the full pipeline (real cloud, real encryption, all
  methods) but 1 seed and 10 evaluation episodes per task, so it finishes in minutes on a
  laptop. Its numbers are noisy; the results say so.
* ``full`` — the benchmark: 12 robots, per task one with a single demonstration and two with
  ten (with one data-rich robot per task, federation adds one demonstration to its ten, so
  it can at best tie that robot's local skill; the 8-robot run: docs/results.md),
  5 seeds x 50 evaluation episodes per task (a standard error of
  ~3 points on a 4-task average needs 5-7 seeds: the training seed dominates the variance),
  10 rounds x 20 local epochs: on the measured convergence curve 200 local epochs converge
  (5x10 is undertrained); the 8-robot grid could not tell 5x40 from 10x20, but with two
  data-rich robots per task 40 epochs between averages cost FedAvg where their skills differ
  (docs/fleet.md, "Training budget"; bench/bench_fleet_budget.py, bench/bench_fleet_seed.py).
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

The ablations of issue 14 (items 5 and 6), each sized for ~15 minutes on 2 idle cores
(3 seeds x 20 evaluation episodes, the full preset's 200 local epochs as 5 x 40, the budget
they were measured with, no per-round curve); their own sections in docs/results.md:

* ``ambiguous`` — routing is genuinely ambiguous: two pairs of tasks that share motion
  primitives and objects (drawer-open / drawer-close, window-open / window-close), 8 skills
  for 4 tasks, and mixed-task robots whose demonstrations span two tasks. Similarity
  routing sends drawer-open and drawer-close through the same skills, the learned gate
  does not; the router variants (random, similarity, learned without load balancing) run
  beside the learned router with load balancing (``fedavg_enc``).
* ``heterogeneous`` — robots with different task mixes and data amounts (on three tasks, per
  task two 10-demo robots and a 1-demo robot, plus three mixed-task robots with 5 + 5), so EDA's
  activation-similarity weights differ from per-skill sample-weighted FedAvg's; results.json
  records both methods' effective aggregation weights and their largest difference.
* ``retargeted`` — robots that learn from `scfl retarget`-made demonstrations (human-hand
  trajectories retargeted by IK onto a Panda and replayed) in the federation, on the three
  tasks whose retargeted replays succeed (door-lock, drawer-close, window-open; sweep-into's
  fail, docs/fleet.md): per task a retargeted robot, a data-rich and a single-demo one.

All the others (demo, vision, ambiguous) use 2 robots per task, one of which has a single
demonstration -- the robots federation is supposed to help.
"""

from __future__ import annotations

import dataclasses

from scfl_nodes.core.sim.tasks import HELD_OUT_TASKS

#: Per task one robot with a single demonstration and ``robots_per_task - 1`` with ten.
_FLEET = dict(few_demo_robots_per_task=1, demos_per_robot=10, few_demos=1)

#: 200 local epochs per robot in 10 rounds of 20: with two data-rich robots per task, 40 local
#: epochs between averages cost FedAvg ~7 points on the cells where those robots' skills differ
#: (seed 0 sweep-into and drawer-close, 3 training draws each); 20 do not (docs/fleet.md,
#: "Training budget and client drift").
_FULL = dict(
    _FLEET, robots_per_task=3,
    rounds=10, local_epochs=20, eval_episodes=50, seeds=5, max_path_length=200, lr_schedule="cosine",
)

#: The budget the ablation and vision presets were measured with (the 8-robot budget grid's
#: choice): 5 rounds x 40 epochs, the same 200 local epochs as the full preset at half its upload.
_FIVE_BY_FORTY = dict(rounds=5, local_epochs=40)

#: The ablation presets: the full preset's training epochs, fewer seeds and episodes (~15 min),
#: 2 robots per task unless they say otherwise.
_ABLATION = dict(_FULL, robots_per_task=2, seeds=3, eval_episodes=20, round_curve=False, **_FIVE_BY_FORTY)

PRESETS: dict[str, dict] = {
    "demo": dict(
        robots_per_task=2, few_demo_robots_per_task=1, demos_per_robot=5, few_demos=1,
        rounds=3, local_epochs=10, eval_episodes=10, seeds=1, max_path_length=200,
    ),
    "full": dict(_FULL),
    "heldout": dict(_FULL, tasks=HELD_OUT_TASKS),
    "vision": dict(
        _FULL, **_FIVE_BY_FORTY, robots_per_task=2, base_policy="scfl-metaworld-vision", tasks=("door-lock-v3", "sweep-into-v3", "window-open-v3"),
        methods=("base", "local", "fedavg_enc"), eval_episodes=8, seeds=5, round_curve=False,
    ),
    "ambiguous": dict(
        _ABLATION, tasks=("drawer-open-v3", "drawer-close-v3", "window-open-v3", "window-close-v3"),
        mixed_task_robots=4, num_experts=8, top_k=2,
        methods=("local", "centralized", "fedavg_enc", "router_no_lb", "router_similarity", "router_random"),
    ),
    "heterogeneous": dict(
        _ABLATION, tasks=("door-lock-v3", "drawer-close-v3", "window-open-v3"),
        robots_per_task=3, few_demo_robots_per_task=1, demos_per_robot=10, few_demos=1, mixed_task_robots=3,
        methods=("local", "centralized", "fedavg_enc", "eda_enc"),
    ),
    "retargeted": dict(
        _ABLATION, tasks=("door-lock-v3", "drawer-close-v3", "window-open-v3"),
        robots_per_task=3, few_demo_robots_per_task=1, retargeted_demo_robots=1,
        methods=("base", "local", "centralized", "fedavg_enc"),
    ),
}

#: Presets `bench/bench_fleet.py --preset both` never runs (each has its own --preset).
ABLATION_PRESETS = ("ambiguous", "heterogeneous", "retargeted")

PRESET_NOTES = {
    "demo": "demo preset: 1 seed and 10 evaluation episodes per task (the full benchmark uses 5 seeds x 50): "
            "differences below ~20 points are noise.",
    "full": "",
    "heldout": "held-out tasks: the frozen base policy was never trained on these four tasks.",
    "vision": "vision preset: the frozen base sees rendered 64x64 camera frames; 5 seeds x 8 evaluation episodes "
              "per task (sized for 30 minutes on 2 cores): compare methods by their 95% intervals.",
    "ambiguous": "ambiguous-routing ablation: 3 seeds x 20 evaluation episodes per task: compare methods by their 95% intervals.",
    "heterogeneous": "EDA vs FedAvg on a heterogeneous fleet: 3 seeds x 20 evaluation episodes per task: "
                     "compare methods by their 95% intervals.",
    "retargeted": "retargeted demonstrations in the loop: 3 seeds x 20 evaluation episodes per task: "
                  "compare methods by their 95% intervals.",
}


def preset_config(name: str, base=None, **overrides):
    """``base`` (a FleetConfig, default: config/scfl.yaml's) with the preset and ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown fleet preset {name!r}; known: {', '.join(PRESETS)}")
    if base is None:
        from scfl_nodes.core.config import load_config

        base = load_config().fleet
    return dataclasses.replace(base, **{**PRESETS[name], **overrides})
