"""scfl: skill-centric federated learning for VLA robot fleets.

`scfl_nodes.core` is pure Python (no ROS, no web); `scfl_nodes.nodes` holds the thin
rclpy wrappers; the cloud service lives in the separate top-level package `scfl_cloud`.
Importing this package must never import rclpy.
"""

__version__ = "0.1.0"
