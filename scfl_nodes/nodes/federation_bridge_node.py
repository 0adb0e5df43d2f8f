"""federation_bridge_node: local skill updates -> encrypted, signed deltas -> cloud -> new versions.

Flow (paper section 4, Algorithm 1, robot side):

1. A locally trained skill version is announced on ``/scfl/local_update``
   (``scfl_interfaces/SkillInstalled``: skill_id, version; its manifest's ``parent_version`` is
   the version it was trained from). The request is persisted in the outbox at once.
2. When the cloud has an open round for (skill_id, base_version = parent version), the delta
   ``new - parent`` (flat float32 tensors) is clipped, encrypted with the fleet key and signed
   with the robot key (:func:`scfl_nodes.core.crypto.encrypt_delta`), written to
   ``<outbox>/pending/`` (atomic rename) and published on ``/scfl/encrypted_delta``.
3. Pending blobs are uploaded with retries; a cloud outage only delays them (diagnostics WARN,
   files stay on disk across restarts). Refused uploads (4xx) move to ``rejected/`` with the reason.
4. Rounds this robot contributed to are polled; a published aggregate is downloaded, decrypted,
   averaged (FedAvg), added to the parent weights, stored as a new library version and
   announced on ``/scfl/skill_installed`` (skill_node hot-swaps it).

All network I/O runs on one worker thread, never in ROS callbacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from scfl_nodes.nodes.common import Diagnostics, NodeConfigError, Param, declare_params, run_node

PARAMS = [
    Param("robot_id", "robot-0", "this robot's id as registered in the cloud"),
    Param("cloud_url", "http://127.0.0.1:8000", "scfl cloud base URL"),
    Param("cloud_token", "", "robot bearer token returned by the cloud at registration"),
    Param("fleet_key_path", "${SCFL_HOME}/keys/fleet.key", "fleet secret key (scfl keys fleet), shared by the fleet's robots"),
    Param("signing_key_path", "${SCFL_HOME}/keys/robot.key", "this robot's Ed25519 signing key (scfl keys robot)"),
    Param("outbox_path", "${SCFL_HOME}/outbox", "persistent outbox directory (survives restarts and cloud outages)"),
    Param("library_path", "", "skill library root; empty = skill_library.storage_path of config_file"),
    Param("config_file", "", "scfl.yaml (crypto.clip, crypto.max_clients); empty = the default config"),
    Param("retry_period_s", 5.0, "seconds between upload retries / round polls", min=0.05, max=3600.0),
    Param("poll_period_s", 5.0, "seconds between checks for published aggregates", min=0.05, max=3600.0),
    Param("request_timeout_s", 10.0, "HTTP timeout of one cloud request", min=0.1, max=600.0),
    Param("update_topic", "scfl/local_update", "input: SkillInstalled announcing a locally trained version"),
    Param("delta_topic", "scfl/encrypted_delta", "output: EncryptedDelta of every produced upload"),
    Param("installed_topic", "scfl/skill_installed", "output: SkillInstalled for every installed aggregate"),
    Param("status_topic", "scfl/federation_status", "output: FederationStatus once per second"),
    Param("insecure_keys_for_testing", False, "accept test-only insecure key parameters (never on a robot)"),
]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Outbox:
    """On-disk queue: ``waiting/`` (updates without a round yet), ``pending/`` (encrypted, not
    uploaded), ``sent/``, ``rejected/``, ``awaiting.json`` (rounds to download)."""

    def __init__(self, root: Path):
        self.root = root
        for sub in ("waiting", "pending", "sent", "rejected"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def add_waiting(self, skill_id: str, version: int) -> None:
        _atomic_write(self.root / "waiting" / f"{skill_id}-v{version}.json",
                      json.dumps({"skill_id": skill_id, "version": version, "created": time.time()}).encode())

    def waiting(self) -> list[tuple[Path, dict]]:
        return [(p, json.loads(p.read_text())) for p in sorted((self.root / "waiting").glob("*.json"))]

    def add_pending(self, name: str, blob: bytes, meta: dict) -> Path:
        path = self.root / "pending" / f"{name}.delta"
        _atomic_write(path, blob)
        _atomic_write(path.with_suffix(".json"), json.dumps(meta).encode())
        return path

    def pending(self) -> list[tuple[Path, dict]]:
        return [(p, json.loads(p.with_suffix(".json").read_text()))
                for p in sorted((self.root / "pending").glob("*.delta")) if p.with_suffix(".json").exists()]

    def move(self, path: Path, where: str, extra: dict | None = None) -> None:
        meta = json.loads(path.with_suffix(".json").read_text())
        meta.update(extra or {})
        dest = self.root / where / path.name
        _atomic_write(dest.with_suffix(".json"), json.dumps(meta).encode())
        os.replace(path, dest)
        path.with_suffix(".json").unlink(missing_ok=True)

    def count(self, where: str) -> int:
        return len(list((self.root / where).glob("*.delta" if where != "waiting" else "*.json")))

    def _awaiting_path(self) -> Path:
        return self.root / "awaiting.json"

    def awaiting(self) -> dict:
        with self._lock:
            p = self._awaiting_path()
            return json.loads(p.read_text()) if p.exists() else {}

    def set_awaiting(self, data: dict) -> None:
        with self._lock:
            _atomic_write(self._awaiting_path(), json.dumps(data, indent=1).encode())


class FederationBridgeNode(Node):
    def __init__(self):
        super().__init__("federation_bridge_node")
        from scfl_interfaces.msg import EncryptedDelta as EncryptedDeltaMsg
        from scfl_interfaces.msg import FederationStatus, SkillInstalled

        from scfl_cloud.client import CloudClient
        from scfl_nodes.core.config import ConfigError, expand_path, load_config
        from scfl_nodes.core.crypto import CryptoError, load_fleet_key, load_signing_key
        from scfl_nodes.core.skills import SkillLibrary

        self.p = declare_params(self, PARAMS)
        try:
            cfg = load_config(self.p["config_file"] or None)
        except ConfigError as exc:
            raise NodeConfigError(f"parameter 'config_file': {exc}") from None
        if not self.p["cloud_token"]:
            raise NodeConfigError("parameter 'cloud_token' is empty: register this robot with the cloud and set its token")
        if not self.p["robot_id"]:
            raise NodeConfigError("parameter 'robot_id' is empty")
        try:
            self.fleet_key = load_fleet_key(expand_path(self.p["fleet_key_path"]),
                                            insecure_for_testing=self.p["insecure_keys_for_testing"])
            self.signing_key = load_signing_key(expand_path(self.p["signing_key_path"]))
        except (CryptoError, OSError, ValueError) as exc:
            raise NodeConfigError(f"cannot load keys: {exc}") from None
        self.clip, self.max_clients = cfg.crypto.clip, cfg.crypto.max_clients
        lib_path = expand_path(self.p["library_path"]) if self.p["library_path"] else cfg.skill_library.path
        self.library = SkillLibrary(lib_path)
        self.outbox = Outbox(expand_path(self.p["outbox_path"]))
        self.client = CloudClient(self.p["cloud_url"], token=self.p["cloud_token"], timeout=self.p["request_timeout_s"])
        self._msgs = (EncryptedDeltaMsg, FederationStatus, SkillInstalled)
        self.diag = Diagnostics(self, f"federation:{self.p['robot_id']}")
        self.uploads_ok = self.upload_failures = self.installed = 0
        self.cloud_reachable = False
        self.last = {"skill_id": "", "round_id": 0, "version": 0, "error": ""}
        self._wake = threading.Event()
        self._stop = threading.Event()
        group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(SkillInstalled, self.p["update_topic"], self._on_update, 10, callback_group=group)
        self.delta_pub = self.create_publisher(EncryptedDeltaMsg, self.p["delta_topic"], 10)
        self.installed_pub = self.create_publisher(SkillInstalled, self.p["installed_topic"], 10)
        self.status_pub = self.create_publisher(FederationStatus, self.p["status_topic"], 10)
        self.create_timer(1.0, self._publish_status, callback_group=MutuallyExclusiveCallbackGroup())
        self._worker = threading.Thread(target=self._work_loop, name="federation-io", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"robot {self.p['robot_id']} -> {self.p['cloud_url']} (fleet key {self.fleet_key.key_id}, "
            f"{self.fleet_key.backend}); outbox {self.outbox.root}; library {lib_path}"
        )
        self.diag.set(Diagnostics.OK, "starting")

    # ------------------------------------------------------------------ ROS side
    def _on_update(self, msg) -> None:
        self.outbox.add_waiting(msg.skill_id, int(msg.version))  # persisted before anything else
        self.get_logger().info(f"local update {msg.skill_id} v{msg.version} queued for federation")
        self._wake.set()

    def _publish_status(self) -> None:
        _, FederationStatus, _ = self._msgs
        msg = FederationStatus(
            robot_id=self.p["robot_id"], cloud_url=self.p["cloud_url"], cloud_reachable=self.cloud_reachable,
            outbox_pending=self.outbox.count("pending") + self.outbox.count("waiting"),
            uploads_ok=self.uploads_ok, upload_failures=self.upload_failures, aggregates_installed=self.installed,
            last_skill_id=self.last["skill_id"], last_round_id=int(self.last["round_id"]),
            last_installed_version=int(self.last["version"]), last_error=self.last["error"],
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)
        self.diag.update(pending=msg.outbox_pending, uploads_ok=self.uploads_ok, installed=self.installed)

    # ------------------------------------------------------------------ worker thread
    def _work_loop(self) -> None:
        from scfl_cloud.client import CloudUnavailable

        next_poll = 0.0
        while not self._stop.is_set():
            try:
                self.client.healthz()  # reachability is reported even when there is nothing to send
                self._encrypt_waiting()
                self._upload_pending()
                if time.monotonic() >= next_poll:
                    self._install_aggregates()
                    next_poll = time.monotonic() + self.p["poll_period_s"]
                if not self.cloud_reachable or self.diag.level != Diagnostics.OK:
                    self.diag.set(Diagnostics.OK, "cloud reachable")
                self.cloud_reachable = True
            except CloudUnavailable as exc:
                self.cloud_reachable = False
                self.last["error"] = str(exc)
                self.diag.set(Diagnostics.WARN, f"cloud unreachable ({self.p['cloud_url']}); "
                              f"{self.outbox.count('pending') + self.outbox.count('waiting')} update(s) kept in the outbox")
            except Exception as exc:  # keep the bridge alive; the outbox is intact
                self.last["error"] = f"{type(exc).__name__}: {exc}"
                self.diag.set(Diagnostics.ERROR, f"federation step failed: {self.last['error']}")
            self._wake.wait(self.p["retry_period_s"])
            self._wake.clear()

    def _open_round(self, skill_id: str, base_version: int):
        for info in self.client.list_rounds(state="open"):
            if info["skill_id"] == skill_id and int(info["base_version"]) == base_version:
                return info
        return None

    def _encrypt_waiting(self) -> None:
        from scfl_nodes.core.crypto import encrypt_delta
        from scfl_nodes.core.skills import skill_state_to_numpy

        for path, req in self.outbox.waiting():
            skill_id, version = req["skill_id"], int(req["version"])
            try:
                local = self.library.get(skill_id, version)
            except Exception as exc:
                self.get_logger().error(f"cannot federate {skill_id} v{version}: {exc}")
                path.rename(self.outbox.root / "rejected" / path.name)
                continue
            parent = local.manifest.parent_version
            if parent is None:
                self.get_logger().error(f"{skill_id} v{version} has no parent_version: nothing to compute a delta against")
                path.rename(self.outbox.root / "rejected" / path.name)
                continue
            parent_pkg = self.library.get(skill_id, parent)
            # Rounds name the CLOUD version they start from: 0 = the shared initialisation,
            # else the published version an installed aggregate recorded in its manifest.
            cloud_base = int(parent_pkg.manifest.training.get("cloud_version") or 0)
            info = self._open_round(skill_id, cloud_base)
            if info is None:
                self.diag.update(waiting_for_round=f"{skill_id} cloud base v{cloud_base}")
                continue
            base = skill_state_to_numpy(parent_pkg.module)
            new = skill_state_to_numpy(local.module)
            delta = {k: (new[k] - base[k]).astype(np.float32) for k in sorted(new)}
            enc = encrypt_delta(self.fleet_key, delta, skill_id=skill_id, base_version=cloud_base,
                                round_id=int(info["round_id"]), robot_id=self.p["robot_id"],
                                signing_key=self.signing_key, clip=self.clip, num_clients=self.max_clients)
            blob = enc.to_bytes()
            sha = hashlib.sha256(blob).hexdigest()
            name = f"r{info['round_id']}-{skill_id}-v{version}"
            meta = {"skill_id": skill_id, "version": version, "base_version": parent, "cloud_base_version": cloud_base,
                    "round_id": int(info["round_id"]), "sha256": sha, "attempts": 0}
            self.outbox.add_pending(name, blob, meta)
            path.unlink()
            EncryptedDeltaMsg = self._msgs[0]
            msg = EncryptedDeltaMsg(robot_id=self.p["robot_id"], skill_id=skill_id, base_version=cloud_base,
                                    round_id=int(info["round_id"]), backend=self.fleet_key.backend,
                                    key_id=self.fleet_key.key_id, sha256=sha, blob=blob)
            msg.header.stamp = self.get_clock().now().to_msg()
            self.delta_pub.publish(msg)
            self.get_logger().info(f"encrypted {skill_id} v{version} - v{parent} for round {info['round_id']} (cloud base v{cloud_base}) "
                                   f"({len(blob) / 1e6:.2f} MB)")

    def _upload_pending(self) -> None:
        from scfl_cloud.client import CloudError, CloudUnavailable

        for path, meta in self.outbox.pending():
            try:
                receipt = self.client.upload_delta(self.p["cloud_token"], path.read_bytes())
            except CloudUnavailable:
                self.upload_failures += 1
                raise
            except CloudError as exc:
                if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                    self.get_logger().error(f"cloud refused {path.name}: {exc}")
                    self.upload_failures += 1
                    self.last["error"] = str(exc)
                    self.outbox.move(path, "rejected", {"error": str(exc)})
                    continue
                self.upload_failures += 1
                raise
            self.uploads_ok += 1
            self.outbox.move(path, "sent", {"receipt": receipt, "uploaded_at": time.time()})
            awaiting = self.outbox.awaiting()
            awaiting[str(meta["round_id"])] = {"skill_id": meta["skill_id"], "base_version": meta["base_version"]}
            self.outbox.set_awaiting(awaiting)
            self.last.update(skill_id=meta["skill_id"], round_id=meta["round_id"])
            self.get_logger().info(f"uploaded {path.name} to round {meta['round_id']}")

    def _install_aggregates(self) -> None:
        from scfl_nodes.core.crypto import EncryptedAggregate
        from scfl_nodes.core.federation import FedAvg
        from scfl_nodes.core.skills import load_numpy_state, skill_state_to_numpy

        awaiting = self.outbox.awaiting()
        for round_id, info in list(awaiting.items()):
            status = self.client.round_status(int(round_id))
            if status["state"] == "expired" and not status.get("folded"):
                self.get_logger().warning(f"round {round_id} expired without an aggregate")
                awaiting.pop(round_id)
                continue
            if status["state"] not in ("published", "expired"):
                continue
            agg = EncryptedAggregate.from_bytes(self.client.download_aggregate(int(round_id)))
            mean = FedAvg(clip=self.clip).finalize_aggregate(self.fleet_key, agg)
            parent = self.library.get(info["skill_id"], int(info["base_version"]))
            state = skill_state_to_numpy(parent.module)
            module = parent.module
            load_numpy_state(module, {k: (state[k] + mean[k]).astype(np.float32) for k in state})
            pkg = parent.derive(module, version=self.library.next_version(info["skill_id"]),
                                training={"federated_round": int(round_id), "contributors": int(agg.count),
                                          "strategy": "fedavg", "cloud_version": status.get("published_version")})
            path = self.library.add(pkg)
            awaiting.pop(round_id)
            self.installed += 1
            self.last.update(skill_id=info["skill_id"], round_id=int(round_id), version=pkg.version)
            SkillInstalled = self._msgs[2]
            msg = SkillInstalled(skill_id=info["skill_id"], version=pkg.version, package_path=str(path))
            msg.header.stamp = self.get_clock().now().to_msg()
            self.installed_pub.publish(msg)
            self.get_logger().info(f"installed {info['skill_id']} v{pkg.version} from round {round_id} "
                                   f"({agg.count} contributor(s))")
        self.outbox.set_awaiting(awaiting)

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=5.0)
        self.client.close()


def main(args=None) -> int:
    return run_node(FederationBridgeNode, "federation_bridge_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
