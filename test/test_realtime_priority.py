"""``set_realtime_priority``: every thread of a process under SCHED_FIFO, or a clear refusal.

Run in child processes (the test process must keep normal scheduling): one with the right to
real-time scheduling (root here), one without it (CAP_SYS_NICE dropped from the bounding set
and RLIMIT_RTPRIO 0, as for an ordinary user on a robot without an rtprio limit).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

CHILD = r"""
import json, os, threading
from scfl_nodes.nodes.common import set_realtime_priority
from sched_util import thread_scheduling  # skips a thread that ends meanwhile (the joined `late` one)

def policies():
    seen = thread_scheduling()
    return sorted(set(seen.values())), len(seen)

stop = threading.Event()
# like a DDS listener started before the node's parameters are read; a daemon, so that a
# failure below ends the child instead of leaving it waiting for the test's timeout
early = threading.Thread(target=stop.wait, daemon=True)
early.start()
applied, text = set_realtime_priority(int(os.environ["PRIO"]))
after = {}
late = threading.Thread(target=lambda: after.update(p=(os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)))
late.start(); late.join()
seen, n = policies()
stop.set(); early.join()
print(json.dumps({"applied": applied, "text": text, "policies": seen, "threads": n, "late": after["p"]}))
"""


def _child(priority: int, prefix: list[str] = ()) -> dict:
    path = os.pathsep.join(p for p in (os.path.dirname(__file__), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PRIO=str(priority), PYTHONPATH=path)  # the child imports sched_util from here
    out = subprocess.run([*prefix, sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _may_use_fifo() -> bool:
    try:
        import resource

        return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 50
    except (ImportError, AttributeError):
        return False


@pytest.mark.skipif(not _may_use_fifo(), reason="this user may not use SCHED_FIFO (no root, no rtprio limit)")
def test_every_thread_and_later_threads_run_fifo():
    r = _child(50)
    assert r["applied"] and r["text"] == "SCHED_FIFO priority 50"
    assert r["threads"] >= 2 and r["policies"] == [[os.SCHED_FIFO, 50]], r
    assert r["late"] == [os.SCHED_FIFO, 50], "a thread started afterwards must inherit the policy"


def test_priority_zero_leaves_normal_scheduling():
    r = _child(0)
    assert not r["applied"] and "thread_priority 0" in r["text"]
    assert r["policies"] == [[os.SCHED_OTHER, 0]]


@pytest.mark.skipif(not (shutil.which("setpriv") and shutil.which("prlimit")), reason="needs util-linux setpriv/prlimit")
def test_refused_without_the_right_says_how_to_grant_it():
    r = _child(50, ["setpriv", "--bounding-set", "-sys_nice", "prlimit", "--rtprio=0"])
    assert not r["applied"] and "refused" in r["text"] and "rtprio" in r["text"], r
    assert r["policies"] == [[os.SCHED_OTHER, 0]], "no thread may be left half-changed"
