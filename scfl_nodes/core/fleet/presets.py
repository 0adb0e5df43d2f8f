"""Named fleet presets on top of the ``fleet`` config section.

* ``demo`` — what `scfl demo` runs: the full pipeline (real cloud, real encryption, all
  methods) but 1 seed and 10 evaluation episodes per task, so it finishes in minutes on a
  laptop. Its numbers are noisy; the results say so.
* ``full`` — the benchmark: 3 seeds x 50 evaluation episodes per task, 5 rounds.

Both use 8 robots: 2 per task, one of which has a single demonstration -- the robots
federation is supposed to help.
"""

from __future__ import annotations

import dataclasses

PRESETS: dict[str, dict] = {
    "demo": dict(
        robots_per_task=2, few_demo_robots_per_task=1, demos_per_robot=5, few_demos=1,
        rounds=3, local_epochs=10, eval_episodes=10, seeds=1, max_path_length=200,
    ),
    "full": dict(
        robots_per_task=2, few_demo_robots_per_task=1, demos_per_robot=10, few_demos=1,
        rounds=5, local_epochs=10, eval_episodes=50, seeds=3, max_path_length=200,
    ),
}

PRESET_NOTES = {
    "demo": "demo preset: 1 seed and 10 evaluation episodes per task (the full benchmark uses 3 seeds x 50): "
            "differences below ~20 points are noise.",
    "full": "",
}


def preset_config(name: str, base=None, **overrides):
    """``base`` (a FleetConfig, default: config/scfl.yaml's) with the preset and ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown fleet preset {name!r}; known: {', '.join(PRESETS)}")
    if base is None:
        from scfl_nodes.core.config import load_config

        base = load_config().fleet
    return dataclasses.replace(base, **{**PRESETS[name], **overrides})
