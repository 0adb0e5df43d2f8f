"""Pure-Python core of scfl. Nothing below this package may import rclpy or a web framework."""
