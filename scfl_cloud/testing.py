"""Test helpers of the cloud: the local server process (:mod:`scfl_cloud.process`) under its old name."""

from .process import CloudServer, free_port

__all__ = ["CloudServer", "free_port"]
