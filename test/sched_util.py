"""Scheduling of a process's threads, read from /proc, for the real-time scheduling tests."""

from __future__ import annotations

import os


def thread_scheduling(pid: int | str = "self") -> dict[int, tuple[int, int]]:
    """``{tid: (policy, priority)}`` of every live thread of ``pid``. A thread that ends between
    listing /proc/<pid>/task and reading it (a joined worker, a finished loader) is left out
    instead of raising ProcessLookupError."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        tid = int(name)
        try:
            out[tid] = (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
        except ProcessLookupError:
            pass
    return out
