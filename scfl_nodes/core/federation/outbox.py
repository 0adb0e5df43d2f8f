"""The robot's durable federation outbox: nothing a robot learned is lost to a crash or an outage.

Layout under ``root``: ``waiting/`` (local updates not encrypted yet, e.g. no round open),
``pending/`` (encrypted + signed blobs not uploaded yet), ``sent/``, ``rejected/`` (with the
reason) and ``awaiting.json`` (updates whose rounds this robot contributed to and whose
aggregates it still has to install). Every write is an fsync'd atomic rename.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Outbox:
    """On-disk queue of one robot's federation work (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for sub in ("waiting", "pending", "sent", "rejected"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # -- waiting: local updates -------------------------------------------------------
    def add_waiting(self, name: str, request: dict) -> Path:
        path = self.root / "waiting" / f"{name}.json"
        atomic_write(path, json.dumps({**request, "created": time.time()}).encode())
        return path

    def waiting(self) -> list[tuple[Path, dict]]:
        return [(p, json.loads(p.read_text())) for p in sorted((self.root / "waiting").glob("*.json"))]

    def reject_waiting(self, path: Path, reason: str) -> None:
        request = json.loads(path.read_text())
        atomic_write(self.root / "rejected" / path.name, json.dumps({**request, "error": reason}).encode())
        path.unlink(missing_ok=True)

    # -- pending: encrypted blobs -------------------------------------------------------
    def add_pending(self, name: str, blob: bytes, meta: dict) -> Path:
        path = self.root / "pending" / f"{name}.delta"
        atomic_write(path, blob)
        atomic_write(path.with_suffix(".json"), json.dumps(meta).encode())
        return path

    def pending(self) -> list[tuple[Path, dict]]:
        return [(p, json.loads(p.with_suffix(".json").read_text()))
                for p in sorted((self.root / "pending").glob("*.delta")) if p.with_suffix(".json").exists()]

    def move(self, path: Path, where: str, extra: dict | None = None) -> None:
        meta = json.loads(path.with_suffix(".json").read_text())
        meta.update(extra or {})
        dest = self.root / where / path.name
        atomic_write(dest.with_suffix(".json"), json.dumps(meta).encode())
        os.replace(path, dest)
        path.with_suffix(".json").unlink(missing_ok=True)

    def count(self, where: str) -> int:
        return len(list((self.root / where).glob("*.delta" if where != "waiting" else "*.json")))

    # -- awaiting: updates whose aggregates are still to install -----------------------------
    def awaiting(self) -> dict:
        with self._lock:
            p = self.root / "awaiting.json"
            return json.loads(p.read_text()) if p.exists() else {}

    def set_awaiting(self, data: dict) -> None:
        with self._lock:
            atomic_write(self.root / "awaiting.json", json.dumps(data, indent=1).encode())
