"""The fleet's connection to a real scfl cloud server (ISSUE 4) on SQLite in a temp dir.

:class:`FleetCloud` starts the real service with ``scfl_cloud.testing.CloudServer`` (uvicorn
subprocess on a free loopback port, SQLite in a temp dir) or attaches to a running server, registers the fleet's
public crypto context and every robot's Ed25519 key, and exposes the four calls a round
needs (open, upload, wait+download, decrypt). All HTTP goes through
:class:`scfl_cloud.client.CloudClient`.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path


class FleetCloudError(RuntimeError):
    """The fleet's cloud server could not be started or refused a round (one-line message)."""


class FleetCloud:
    def __init__(self, workdir: str | os.PathLike | None = None, *, deadline_s: float = 600.0, url: str | None = None,
                 admin_token: str | None = None):
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="scfl-fleet-cloud-")
        self.workdir = Path(workdir or self._tmp.name)
        self.deadline_s = float(deadline_s)
        self.url = url
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self.server = None
        self.client = None
        self.versions: dict[str, int] = {}
        self.round_versions: dict[int, str] = {}
        self.upload_seconds = 0.0
        self.wait_seconds = 0.0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "FleetCloud":
        from scfl_cloud.client import CloudClient
        from scfl_cloud.testing import CloudServer

        if self.url is None:
            # The real service (uvicorn subprocess, SQLite file, on-disk blobs) -- the same
            # helper the cloud's own tests use.
            try:
                # The simulation sums per-task rounds of 2 robots, so its private, throwaway
                # server lowers the privacy floor explicitly; a real fleet cloud keeps >= 3.
                self.server = CloudServer(self.workdir / "cloud", admin_token=self.admin_token,
                                          max_upload_bytes=256 * 1024 * 1024,
                                          extra_args=["--min-participants", "1"])
                self.server.start()
            except Exception as exc:
                log = self.server.log_tail(2000) if self.server is not None else ""
                tail = [line for line in log.splitlines() if line.strip()][-1:]
                self.__exit__(None, None, None)
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise FleetCloudError(f"the scfl cloud server did not start: {first}"
                                      + (f"; server log: {tail[0]}" if tail else "")) from None
            self.url = self.server.url
        self.client = CloudClient(self.url, admin_token=self.admin_token)
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if getattr(self, "server", None) is not None:
            self.server.stop()
            self.server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ------------------------------------------------------------------ fleet setup
    def register_fleet(self, fleet_key, robot_ids: list[str]) -> dict:
        """Register the public context and each robot; returns robot_id -> (signing_key, token)."""
        from scfl_nodes.core.crypto import generate_signing_key

        self.client.put_fleet_context(fleet_key.cloud_context())
        robots = {}
        for robot_id in robot_ids:
            key = generate_signing_key()
            robots[robot_id] = (key, self.client.register_robot(robot_id, key.public_bytes()))
        return robots

    # ------------------------------------------------------------------ one round
    def open_round(self, skill_id: str, round_index: int, quorum: int) -> tuple[int, int]:
        """Open the next round of ``skill_id``; returns (round_id, base_version)."""
        if skill_id not in self.versions:
            self.client.create_skill(skill_id, [], skill_id=skill_id, description="fleet simulation skill")
            self.versions[skill_id] = 0
        info = self.client.open_round(skill_id, self.versions[skill_id], quorum, self.deadline_s)
        self.round_versions[int(info["round_id"])] = skill_id
        return int(info["round_id"]), int(self.versions[skill_id])

    def upload_delta(self, token: str, blob: bytes) -> None:
        t = time.perf_counter()
        self.client.upload_delta(token, blob)
        self.upload_seconds += time.perf_counter() - t

    def download_aggregate(self, round_id: int) -> bytes:
        t = time.perf_counter()
        info = self.client.wait_for_round(round_id, "published", timeout=self.deadline_s, poll_s=0.02)
        self.wait_seconds += time.perf_counter() - t
        if info["state"] != "published":
            raise FleetCloudError(f"round {round_id} ended {info['state']} ({info.get('close_reason')})")
        if info.get("published_version") is not None:
            self.versions[self.round_versions[round_id]] = int(info["published_version"])
        return self.client.download_aggregate(round_id)

    @staticmethod
    def decrypt(fleet_key, blob: bytes):
        from scfl_nodes.core.crypto import EncryptedAggregate

        agg = EncryptedAggregate.from_bytes(blob)
        return fleet_key.decrypt_aggregate(agg), int(agg.count)
