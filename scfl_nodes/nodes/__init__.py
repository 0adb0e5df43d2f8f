"""Thin rclpy node wrappers over `scfl_nodes.core`."""
