"""This robot's part in one secure-aggregation round, advanced a step at a time.

Why not block: a robot (or the simulated fleet, which steps all its robots in one thread)
must keep serving its other rounds and skills while peers advertise and share; so each
:meth:`SecureRound.advance` does only what the cloud's stage allows now and returns.
The protocol logic is :class:`~.secagg.SecAggClient`; the messages travel through the
transport's ``secagg(token, round_id, method, step, body)`` call (the cloud's
``/api/v1/rounds/{id}/secagg`` endpoints). Mask keys are fresh per round and signed with
the robot's Ed25519 signing key, the identity the cloud already knows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from scfl_cloud.client import CloudError  # httpx-only module: no web server, no ROS

from .secagg import SecAggClient, SecAggError

__all__ = ["SecureRound", "SecureRoundAborted"]


class SecureRoundAborted(RuntimeError):
    """This robot can no longer take part in the round (left out of the roster, the round failed, ...)."""


class SecureRound:
    """Stages: advertise -> share -> collect -> ready (cohort known: mask and upload) ->
    uploaded -> done (unmask shares posted)."""

    def __init__(self, robot_id: str, round_info: Mapping, signing_key, transport, token: str | None, *,
                 robot_public_keys: Mapping[str, bytes] | None = None, timeout_s: float = 600.0):
        self.round_id = int(round_info["round_id"])
        self.client = SecAggClient.for_round(
            robot_id, fleet_id=round_info["key_id"], skill_id=round_info["skill_id"],
            base_version=int(round_info["base_version"]), round_id=self.round_id, signing_key=signing_key)
        self.transport = transport
        self.token = token
        self.robot_public_keys = robot_public_keys
        self.stage = "advertise"
        # the cloud fails a stalled round itself; this only bounds how long the robot keeps the state
        deadline_at = float(round_info.get("deadline_at") or time.time() + timeout_s)
        self.deadline = time.monotonic() + min(timeout_s, max(0.0, deadline_at - time.time()) + 60.0)

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def _call(self, method: str, step: str, body: dict | None = None):
        try:
            return self.transport.secagg(self.token, self.round_id, method, step, body)
        except CloudError as exc:
            if exc.code == "secagg_pending":
                return None
            if exc.status is None or exc.status >= 500 or exc.status in (408, 429):
                raise  # outage: try again on the next step
            raise SecureRoundAborted(f"round {self.round_id}: {exc}") from None

    def advance(self) -> bool:
        """Do what the cloud's stage allows; True once the mask cohort is known."""
        try:
            if self.stage == "advertise":
                self._call("POST", "keys", self.client.advertise())
                self.stage = "share"
            if self.stage == "share":
                info = self._call("GET", "keys")
                if info is None:
                    return False
                self.client.threshold = int(info["threshold"])
                self._call("POST", "shares", {"shares": self.client.share_keys(info["roster"], self.robot_public_keys)})
                self.stage = "collect"
            if self.stage == "collect":
                info = self._call("GET", "shares")
                if info is None:
                    return False
                if self.client.receive_shares(info["shares"]) != sorted(info["cohort"]):
                    raise SecureRoundAborted(f"round {self.round_id}: the cloud's cohort differs from the robots whose shares arrived")
                self.stage = "ready"
        except SecAggError as exc:
            raise SecureRoundAborted(f"round {self.round_id}: {exc}") from None
        return self.stage == "ready"

    def unmask(self) -> bool:
        """After the upload: once the round closed, reveal the shares its survivor list calls
        for. True when done."""
        info = self._call("GET", "survivors")
        if info is None:
            return False
        try:
            self._call("POST", "unmask", self.client.unmask_shares(info["survivors"]))
        except SecAggError as exc:
            raise SecureRoundAborted(f"round {self.round_id}: {exc}") from None
        self.stage = "done"
        return True
