"""federation_bridge_node: a thin rclpy wrapper over the robot's federation client.

The work (paper section 4, Algorithm 1, robot side) is
:class:`scfl_nodes.core.federation.client.FederationClient`, the same code the simulated
fleet runs, driven by the configured strategy (``federation.strategy``: fedavg, sample-
weighted or not, or eda; ``federation.secure_masks``):

1. A locally trained skill version is announced on ``scfl/local_update``
   (``scfl_interfaces/SkillInstalled``: skill_id, version; its manifest's ``parent_version``
   is the version it was trained from, ``training.samples`` its sample count). The request is
   persisted in the outbox at once.
2. When the cloud has open rounds for it (at the cloud version the parent came from), the
   delta is clipped, pre-scaled by the strategy, encrypted, signed, written to
   ``<outbox>/pending/`` and published on ``scfl/encrypted_delta``.
3. Pending blobs are uploaded with retries; a cloud outage only delays them (diagnostics
   WARN, files stay on disk across restarts). Refused uploads (4xx) move to ``rejected/``.
4. Published aggregates are downloaded, decrypted, combined by the strategy, added to the
   parent weights, stored as a new library version and announced on ``scfl/skill_installed``.

All network I/O runs on one worker thread, never in ROS callbacks.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time

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
    Param("config_file", "", "scfl.yaml (crypto.clip, crypto.max_clients, federation.*); empty = the default config"),
    Param("mask_key_path", "${SCFL_HOME}/keys/mask.key", "this robot's X25519 mask key (federation.secure_masks only)"),
    Param("mask_peers_path", "", "JSON {robot_id: base64 X25519 public key} of the mask cohort (federation.secure_masks only)"),
    Param("retry_period_s", 5.0, "seconds between upload retries / round polls", min=0.05, max=3600.0),
    Param("poll_period_s", 5.0, "seconds between checks for published aggregates", min=0.05, max=3600.0),
    Param("request_timeout_s", 10.0, "HTTP timeout of one cloud request", min=0.1, max=600.0),
    Param("update_topic", "scfl/local_update", "input: SkillInstalled announcing a locally trained version"),
    Param("delta_topic", "scfl/encrypted_delta", "output: EncryptedDelta of every produced upload"),
    Param("installed_topic", "scfl/skill_installed", "output: SkillInstalled for every installed aggregate"),
    Param("status_topic", "scfl/federation_status", "output: FederationStatus once per second"),
    Param("insecure_keys_for_testing", False, "accept test-only insecure key parameters (never on a robot)"),
]


class FederationBridgeNode(Node):
    def __init__(self):
        super().__init__("federation_bridge_node")
        from scfl_interfaces.msg import EncryptedDelta as EncryptedDeltaMsg
        from scfl_interfaces.msg import FederationStatus, SkillInstalled

        from scfl_cloud.client import CloudClient
        from scfl_nodes.core.config import ConfigError, expand_path, load_config
        from scfl_nodes.core.crypto import CryptoError, load_fleet_key, load_signing_key
        from scfl_nodes.core.federation import strategy_from_config
        from scfl_nodes.core.federation.client import FederationClient
        from scfl_nodes.core.federation.codecs import EncryptedCodec
        from scfl_nodes.core.federation.library import SkillLibraryStore
        from scfl_nodes.core.federation.outbox import Outbox
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
        strategy = strategy_from_config(cfg)
        masker = self._masker(cfg, expand_path) if strategy.secure_masks else None
        lib_path = expand_path(self.p["library_path"]) if self.p["library_path"] else cfg.skill_library.path
        self.library = SkillLibrary(lib_path)
        outbox = Outbox(expand_path(self.p["outbox_path"]))
        self.http = CloudClient(self.p["cloud_url"], token=self.p["cloud_token"], timeout=self.p["request_timeout_s"])
        self._msgs = (EncryptedDeltaMsg, FederationStatus, SkillInstalled)
        self.client = FederationClient(
            self.p["robot_id"], strategy, self.http,
            EncryptedCodec(self.fleet_key, self.signing_key, num_clients=cfg.crypto.max_clients, masker=masker),
            SkillLibraryStore(self.library), outbox, token=self.p["cloud_token"], log=self._log,
            on_encoded=self._on_encoded, on_installed=self._on_installed,
        )
        self.diag = Diagnostics(self, f"federation:{self.p['robot_id']}")
        self.cloud_reachable = False
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
            f"{self.fleet_key.backend}); strategy {strategy.describe()}; outbox {outbox.root}; library {lib_path}"
        )
        self.diag.set(Diagnostics.OK, "starting")

    def _masker(self, cfg, expand_path):
        """This robot's PairwiseMasker: its X25519 key plus the cohort's public keys (JSON, base64)."""
        import base64

        from scfl_nodes.core.federation import MaskKey, PairwiseMasker

        if not self.p["mask_peers_path"]:
            raise NodeConfigError("federation.secure_masks is on: set parameter 'mask_peers_path' (the mask cohort)")
        try:
            key = MaskKey.load(expand_path(self.p["mask_key_path"]))
            peers = json.loads(expand_path(self.p["mask_peers_path"]).read_text())
            peers = {r: base64.b64decode(v) for r, v in peers.items() if r != self.p["robot_id"]}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise NodeConfigError(f"cannot load mask keys: {exc}") from None
        return PairwiseMasker(self.p["robot_id"], key, peers, fleet_id=self.fleet_key.key_id)

    # ------------------------------------------------------------------ ROS side
    def _log(self, level: str, msg: str) -> None:
        logger = self.get_logger()
        {"info": logger.info, "warning": logger.warning, "error": logger.error}[level](msg)

    def _on_update(self, msg) -> None:
        request = {"skill_id": msg.skill_id, "version": int(msg.version)}
        self.client.enqueue(request, name=f"{msg.skill_id}-v{msg.version}")  # persisted before anything else
        self.get_logger().info(f"local update {msg.skill_id} v{msg.version} queued for federation")
        self._wake.set()

    def _on_encoded(self, meta: dict, blob: bytes) -> None:
        EncryptedDeltaMsg = self._msgs[0]
        msg = EncryptedDeltaMsg(robot_id=self.p["robot_id"], skill_id=meta["skill_id"], base_version=meta["base_version"],
                                round_id=int(meta["round_id"]), backend=self.fleet_key.backend,
                                key_id=self.fleet_key.key_id, sha256=hashlib.sha256(blob).hexdigest(), blob=blob)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.delta_pub.publish(msg)

    def _on_installed(self, request: dict, info: dict) -> None:
        SkillInstalled = self._msgs[2]
        msg = SkillInstalled(skill_id=request["skill_id"], version=int(info["version"]), package_path=info["path"])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.installed_pub.publish(msg)

    def _publish_status(self) -> None:
        _, FederationStatus, _ = self._msgs
        c, outbox = self.client, self.client.outbox
        msg = FederationStatus(
            robot_id=self.p["robot_id"], cloud_url=self.p["cloud_url"], cloud_reachable=self.cloud_reachable,
            outbox_pending=outbox.count("pending") + outbox.count("waiting"),
            uploads_ok=c.uploads_ok, upload_failures=c.upload_failures, aggregates_installed=c.installed,
            last_skill_id=c.last["skill_id"], last_round_id=int(c.last["round_id"]),
            last_installed_version=int(c.last["version"]), last_error=c.last["error"],
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)
        self.diag.update(pending=msg.outbox_pending, uploads_ok=c.uploads_ok, installed=c.installed)

    # ------------------------------------------------------------------ worker thread
    def _work_loop(self) -> None:
        from scfl_cloud.client import CloudUnavailable

        next_poll = 0.0
        while not self._stop.is_set():
            try:
                self.http.healthz()  # reachability is reported even when there is nothing to send
                self.client.prepare_waiting()
                self.client.upload_pending()
                if time.monotonic() >= next_poll:
                    self.client.install_published()
                    next_poll = time.monotonic() + self.p["poll_period_s"]
                if not self.cloud_reachable or self.diag.level != Diagnostics.OK:
                    self.diag.set(Diagnostics.OK, "cloud reachable")
                self.cloud_reachable = True
            except CloudUnavailable as exc:
                self.cloud_reachable = False
                self.client.last["error"] = str(exc)
                outbox = self.client.outbox
                self.diag.set(Diagnostics.WARN, f"cloud unreachable ({self.p['cloud_url']}); "
                              f"{outbox.count('pending') + outbox.count('waiting')} update(s) kept in the outbox")
            except Exception as exc:  # keep the bridge alive; the outbox is intact
                self.client.last["error"] = f"{type(exc).__name__}: {exc}"
                self.diag.set(Diagnostics.ERROR, f"federation step failed: {self.client.last['error']}")
            self._wake.wait(self.p["retry_period_s"])
            self._wake.clear()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=5.0)
        self.http.close()


def main(args=None) -> int:
    return run_node(FederationBridgeNode, "federation_bridge_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
