"""Keep the control loop free of VLA latency: inference runs in a worker thread.

The control loop calls :meth:`AsyncBasePolicy.submit` with the newest observation (never
blocks; an older pending observation is simply replaced) and :meth:`latest` to get the most
recent base action together with its age, so the vla_node can publish "action + age" at its
own rate and consumers can decide when an action is too old to use.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TimedAction:
    action: np.ndarray
    embedding: np.ndarray
    observation_stamp: float  # time.monotonic() when the observation was submitted
    done_stamp: float  # time.monotonic() when inference finished
    sequence: int

    def age(self, now: float | None = None) -> float:
        """Seconds since the observation this action answers was taken."""
        return (time.monotonic() if now is None else now) - self.observation_stamp

    @property
    def inference_s(self) -> float:
        return self.done_stamp - self.observation_stamp


class AsyncBasePolicy:
    """Wraps any ``act(obs, instruction) -> (action, embedding)`` policy with a worker thread."""

    def __init__(self, policy: Any):
        self.policy = policy
        self._cond = threading.Condition()
        self._pending: tuple[Any, str, float] | None = None
        self._latest: TimedAction | None = None
        self._error: BaseException | None = None
        self._sequence = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="scfl-vla-inference", daemon=True)
        self._thread.start()

    def submit(self, obs, instruction: str, stamp: float | None = None) -> None:
        """Queue the newest observation; returns immediately (replaces an unprocessed one)."""
        with self._cond:
            if self._error is not None:
                raise RuntimeError(f"VLA inference failed: {self._error}") from self._error
            self._pending = (obs, instruction, time.monotonic() if stamp is None else stamp)
            self._cond.notify()

    def latest(self) -> TimedAction | None:
        """The most recent finished action (None before the first one)."""
        with self._cond:
            if self._error is not None:
                raise RuntimeError(f"VLA inference failed: {self._error}") from self._error
            return self._latest

    def wait_for(self, sequence: int, timeout: float = 10.0) -> TimedAction | None:
        """Block until an action with ``sequence`` >= the given one exists (tests, startup)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._latest is None or self._latest.sequence < sequence) and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._latest
                self._cond.wait(left)
            return self._latest

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                obs, instruction, stamp = self._pending
                self._pending = None
            try:
                action, embedding = self.policy.act(obs, instruction)
            except BaseException as exc:  # noqa: BLE001 - surfaced to the caller on next call
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._sequence += 1
                self._latest = TimedAction(np.asarray(action), np.asarray(embedding), stamp, time.monotonic(), self._sequence)
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
