"""Robot-side HTTP steps of secure aggregation (the protocol logic is core/federation/secagg.py).

Usage per round (the federation client drives it; every wait polls until the cloud's stage
allows the step)::

    sa = SecAggClient.for_round(robot_id, fleet_id=fleet_key.key_id, skill_id=..., base_version=...,
                                round_id=..., signing_key=signer)
    session = SecAggSession(cloud, token, sa, round_id, robot_public_keys=fleet_public_keys)
    session.setup()                     # advertise keys, relay shares, collect own shares
    blob = strategy.encrypt_update(plan, fleet_key, robot_id, delta, signer, masker=sa).to_bytes()
    cloud.upload_delta(token, blob)
    session.unmask()                    # after the round closes: reveal the shares the survivors need

``fleet_id`` must be the fleet key id: the cloud binds the round context to the round's key id.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

from .client import CloudClient, CloudError


class SecAggSession:
    def __init__(self, cloud: CloudClient, token: str, client: Any, round_id: int, *,
                 robot_public_keys: Optional[Mapping[str, bytes]] = None, poll_s: float = 0.1,
                 timeout_s: float = 120.0) -> None:
        self.cloud = cloud
        self.token = token
        self.client = client  # scfl_nodes.core.federation.SecAggClient
        self.round_id = int(round_id)
        self.robot_public_keys = robot_public_keys
        self.poll_s = poll_s
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str = "", json: Optional[dict] = None) -> Any:
        return self.cloud.secagg(self.token, self.round_id, method, path.lstrip("/"), json)

    def _wait(self, fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return fn()
            except CloudError as exc:
                if exc.code != "secagg_pending" or time.monotonic() > deadline:
                    raise
            time.sleep(self.poll_s)

    def state(self) -> dict:
        return self._call("GET")

    def advertise(self) -> None:
        self._call("POST", "/keys", json=self.client.advertise())

    def share(self) -> None:
        info = self._wait(lambda: self._call("GET", "/keys"))
        if self.client.threshold is None:
            self.client.threshold = int(info["threshold"])
        elif self.client.threshold != int(info["threshold"]):
            raise ValueError(f"cloud threshold {info['threshold']} differs from this robot's {self.client.threshold}")
        self._call("POST", "/shares", json={"shares": self.client.share_keys(info["roster"], self.robot_public_keys)})

    def collect(self) -> list[str]:
        info = self._wait(lambda: self._call("GET", "/shares"))
        cohort = self.client.receive_shares(info["shares"])
        if cohort != sorted(info["cohort"]):
            raise ValueError("the cloud's cohort differs from the robots whose shares arrived")
        return cohort

    def setup(self) -> list[str]:
        """Advertise, share and collect: returns the mask cohort."""
        self.advertise()
        self.share()
        return self.collect()

    def unmask(self) -> dict:
        """Wait for the survivor list and reveal the shares it calls for."""
        info = self._wait(lambda: self._call("GET", "/survivors"))
        return self._call("POST", "/unmask", json=self.client.unmask_shares(info["survivors"]))
