"""The fleet's real scfl cloud server (ISSUE 4) on SQLite in a temp dir, and its coordinator role.

:class:`FleetCloud` starts the real service with :class:`scfl_cloud.process.CloudServer`
(uvicorn subprocess on a free loopback port, SQLite in a temp dir) or attaches to a running
server, and registers the fleet's public crypto context and every robot's Ed25519 key. Its
:attr:`client` (:class:`scfl_cloud.client.CloudClient`, admin token) is what the fleet
coordinator opens rounds with and what every simulated robot's
:class:`~scfl_nodes.core.federation.client.FederationClient` talks to (with its own robot
token for uploads): the round protocol a ROS robot's federation_bridge_node follows.
"""

from __future__ import annotations

import os
import secrets
import tempfile
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
        self.admin_token = admin_token or secrets.token_hex(24)
        self.server = None
        self.client = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "FleetCloud":
        from scfl_cloud.client import CloudClient
        from scfl_cloud.process import CloudServer

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
