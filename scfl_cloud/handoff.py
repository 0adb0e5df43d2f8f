"""Verified deltas handed from the upload path to this process's aggregation worker.

An upload is parsed, digest-checked (SHA-256, hashed once while the body streamed in) and
signature-checked before its blob is written and its row committed. Folding it in the same
process a moment later would read those 3 MB back from the blob store and hash them again
for the same answer; the worker takes the parsed delta from here instead. Anything not
here (another process's upload, a restart, an entry evicted by the budget) is read from
the store and digest-checked as before, so this is a shortcut, never state that matters.

Bounded: at most ``max_bytes`` of payload and entries younger than ``max_age_s`` (a delta
whose round was cancelled, or dropped by the admin, is never taken and ages out), so server
memory stays flat whatever the number of robots. When full, a new delta is not kept: the
worker folds the oldest first, and those are the ones kept.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Optional


class AcceptedDeltas:
    def __init__(self, max_bytes: int = 32 * 2**20, max_age_s: float = 120.0) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._items: OrderedDict[str, tuple[float, int, Any]] = OrderedDict()  # digest -> (t, size, delta)
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, digest: str, delta: Any, size: int) -> bool:
        """Keep an accepted delta (call only after its row is committed); False when full."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if digest in self._items or self._bytes + size > self.max_bytes:
                return False
            self._items[digest] = (now, size, delta)
            self._bytes += size
            return True

    def take(self, digest: str) -> Optional[Any]:
        """The parsed delta stored under ``digest`` (removed: a delta is folded once per entry), or None."""
        with self._lock:
            entry = self._items.pop(digest, None)
            if entry is None:
                self.misses += 1
                return None
            self._bytes -= entry[1]
            self.hits += 1
            return entry[2]

    def _expire(self, now: float) -> None:
        while self._items:
            digest, (t, size, _delta) = next(iter(self._items.items()))
            if now - t <= self.max_age_s:
                break
            del self._items[digest]
            self._bytes -= size

    def __len__(self) -> int:
        return len(self._items)
