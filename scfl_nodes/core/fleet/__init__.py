"""Fleet simulation (`scfl fleet`, `scfl demo`): simulated robots, federated skills, the results table.

See docs/fleet.md. Entry point: :func:`run_fleet` with a
:class:`~scfl_nodes.core.config.FleetConfig` (``presets`` has the demo and full presets).
"""

from .presets import PRESETS, preset_config
from .robots import RobotSpec, build_fleet
from .runner import FleetRun, run_fleet

__all__ = ["PRESETS", "FleetRun", "RobotSpec", "build_fleet", "preset_config", "run_fleet"]
