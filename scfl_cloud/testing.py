"""Test helpers of the cloud: the local server and worker processes (:mod:`scfl_cloud.process`) under their old name."""

from .process import CloudServer, CloudWorker, free_port

__all__ = ["CloudServer", "CloudWorker", "free_port"]
