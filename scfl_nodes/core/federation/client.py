"""The robot-side federation client: one code path for ROS robots and the simulated fleet.

Paper Algorithm 1, robot side, steps 6-9, driven by the configured
:class:`~scfl_nodes.core.federation.strategy.Strategy`:

1. :meth:`FederationClient.enqueue` persists a local update request at once (durable
   :class:`~scfl_nodes.core.federation.outbox.Outbox`); the :class:`UpdateStore` turns it
   into parent and new weights (a skill library on a robot, memory in the fleet).
2. When the cloud has an open round for every upload the strategy asks for (FedAvg: the
   skill's round; EDA: one round per activated expert slot, ``<skill>:<slot>``) at the cloud
   version the parent came from, the delta ``new - parent`` is clipped and pre-scaled by the
   strategy (sample weight, slot weight), encoded by the :class:`~.codecs.Codec`
   (encrypt + sign, pairwise masks if configured; or plaintext for the reference) and written
   to the outbox.
3. Pending blobs are uploaded; an unreachable cloud (:class:`CloudUnavailable`) only delays
   them, a refusal (4xx) moves them to ``rejected/`` with the reason.
4. Once all rounds of an update are published, their aggregates are downloaded, decoded,
   combined by the strategy and added to the parent; the store installs the result as a
   new version.

The transport is the cloud's round protocol: :class:`scfl_cloud.client.CloudClient` over HTTP
or :class:`~.inprocess.InProcessCloud` (plaintext reference); both raise
:class:`scfl_cloud.client.CloudError` subclasses for refusals and outages.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from scfl_cloud.client import CloudError, CloudUnavailable  # httpx-only module: no web server, no ROS

from .codecs import Codec
from .outbox import Outbox
from .strategy import RoundSum, Strategy

__all__ = ["CloudError", "CloudUnavailable", "FederationClient", "LocalUpdate", "UpdateStore"]


@dataclasses.dataclass
class LocalUpdate:
    """One locally trained update, as the strategy needs it.

    ``cloud_versions`` maps a round's skill id to the cloud version the parent weights
    correspond to (0 = the shared initialisation); ``cohort`` is the pairwise-mask cohort
    (default: the masker's peers and this robot).
    """

    skill_id: str
    parent: Mapping[str, np.ndarray]
    new: Mapping[str, np.ndarray]
    num_samples: int | None = None
    activation: np.ndarray | None = None
    slot_tensors: Mapping[str, Collection[str]] | None = None
    cloud_versions: Mapping[str, int] = dataclasses.field(default_factory=dict)
    cohort: Sequence[str] | None = None

    def delta(self) -> dict[str, np.ndarray]:
        missing = sorted(set(self.parent) ^ set(self.new))
        if missing:
            raise ValueError(f"parent and new weights of {self.skill_id!r} differ in tensors {missing[:3]}")
        return {k: (np.asarray(self.new[k], np.float32) - np.asarray(self.parent[k], np.float32)) for k in sorted(self.new)}


class UpdateStore:
    """Where local updates come from and aggregates go (a skill library, a simulated robot)."""

    def local_update(self, request: dict) -> LocalUpdate:
        raise NotImplementedError

    def install(self, request: dict, state: dict[str, np.ndarray], info: dict) -> dict:
        """Store ``state`` as the new version; ``info`` has rounds, published versions, contributors.
        Returns what to report (e.g. ``{"version": 3, "path": ...}``)."""
        raise NotImplementedError


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


class FederationClient:
    def __init__(
        self,
        robot_id: str,
        strategy: Strategy,
        transport,
        codec: Codec,
        store: UpdateStore,
        outbox: Outbox,
        *,
        token: str | None = None,
        log: Callable[[str, str], None] | None = None,
        on_encoded: Callable[[dict, bytes], None] | None = None,
        on_installed: Callable[[dict, dict], None] | None = None,
    ):
        if strategy.secure_masks and codec.masker is None:
            raise ValueError("federation.secure_masks is on: the codec needs this robot's PairwiseMasker")
        self.robot_id = robot_id
        self.strategy = strategy
        self.transport = transport
        self.codec = codec
        self.store = store
        self.outbox = outbox
        self.token = token
        self.log = log or (lambda level, msg: None)
        self.on_encoded = on_encoded
        self.on_installed = on_installed
        self.uploads_ok = self.upload_failures = self.installed = 0
        self.bytes_up = 0
        self.crypto_seconds = 0.0
        self.last = {"skill_id": "", "round_id": 0, "version": 0, "error": ""}

    # ------------------------------------------------------------------ public API
    def enqueue(self, request: dict, name: str | None = None) -> str:
        """Persist a local update request (``request["skill_id"]`` required); returns its id."""
        if not request.get("skill_id"):
            raise ValueError("a local update request needs a skill_id")
        name = _safe(name or f"{request['skill_id']}-{time.time_ns()}")
        self.outbox.add_waiting(name, request)
        return name

    def step(self) -> None:
        """Encode what has rounds, upload what is pending, install what is published.
        Raises CloudUnavailable when the cloud cannot be reached (nothing is lost)."""
        self.prepare_waiting()
        self.upload_pending()
        self.install_published()

    def idle(self) -> bool:
        return not (self.outbox.waiting() or self.outbox.pending() or self.outbox.awaiting())

    def run_until_idle(self, timeout: float = 600.0, poll_s: float = 0.02) -> None:
        """Step until every queued update is installed (fleet simulation, tests)."""
        deadline = time.monotonic() + timeout
        while True:
            self.step()
            if self.idle():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"robot {self.robot_id}: federation still busy after {timeout} s "
                                   f"(waiting {self.outbox.count('waiting')}, pending {self.outbox.count('pending')}, "
                                   f"awaiting {len(self.outbox.awaiting())})")
            time.sleep(poll_s)

    # ------------------------------------------------------------------ steps
    def _open_rounds(self) -> dict[tuple[str, int], dict]:
        return {(r["skill_id"], int(r["base_version"])): r for r in self.transport.list_rounds(state="open")}

    def prepare_waiting(self) -> None:
        waiting = self.outbox.waiting()
        if not waiting:
            return
        open_rounds = self._open_rounds()
        for path, request in waiting:
            try:
                update = self.store.local_update(request)
                uploads = self.strategy.contributions(
                    update.skill_id, update.delta(), num_samples=update.num_samples, activation=update.activation,
                    slot_tensors=update.slot_tensors)
            except Exception as exc:  # a bad request never blocks the queue
                self.last["error"] = f"cannot federate {request.get('skill_id')}: {exc}"
                self.log("error", self.last["error"])
                self.outbox.reject_waiting(path, str(exc))
                continue
            rounds = {}
            for c in uploads:
                base = int(update.cloud_versions.get(c.round_skill_id, 0))
                info = open_rounds.get((c.round_skill_id, base))
                if info is None:
                    break
                rounds[c.round_skill_id] = (int(info["round_id"]), base)
            if len(rounds) < len(uploads):
                continue  # not every round is open yet: try again on the next step
            cohort = update.cohort
            if cohort is None and self.codec.masker is not None:
                cohort = sorted({*self.codec.masker.peers, self.robot_id})
            update_id = path.stem
            for c in uploads:
                round_id, base = rounds[c.round_skill_id]
                t = time.perf_counter()
                blob = self.codec.encode(c, robot_id=self.robot_id, round_id=round_id, base_version=base,
                                         clip=self.strategy.clip, cohort=cohort)
                self.crypto_seconds += time.perf_counter() - t
                meta = {"update_id": update_id, "skill_id": c.round_skill_id, "round_id": round_id,
                        "base_version": base, "weight": float(c.weight), "attempts": 0}
                self.outbox.add_pending(f"r{round_id}-{_safe(c.round_skill_id)}-{update_id}", blob, meta)
                if self.on_encoded is not None:
                    self.on_encoded(meta, blob)
                self.log("info", f"encoded {update.skill_id} for round {round_id} of {c.round_skill_id} "
                                 f"(cloud base v{base}, {len(blob) / 1e6:.2f} MB)")
            awaiting = self.outbox.awaiting()
            awaiting[update_id] = {"request": request, "rounds": {k: v[0] for k, v in rounds.items()},
                                   "strategy": self.strategy.describe()}
            self.outbox.set_awaiting(awaiting)
            path.unlink(missing_ok=True)

    def upload_pending(self) -> None:
        for path, meta in self.outbox.pending():
            blob = path.read_bytes()
            try:
                receipt = self.transport.upload_delta(self.token, blob)
            except CloudUnavailable:
                self.upload_failures += 1
                raise
            except CloudError as exc:
                self.upload_failures += 1
                if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                    self.last["error"] = f"cloud refused {path.name}: {exc}"
                    self.log("error", self.last["error"])
                    self.outbox.move(path, "rejected", {"error": str(exc)})
                    awaiting = self.outbox.awaiting()
                    awaiting.pop(meta["update_id"], None)  # its aggregate would not contain this robot
                    self.outbox.set_awaiting(awaiting)
                    continue
                raise
            self.uploads_ok += 1
            self.bytes_up += self.codec.upload_bytes(blob)
            self.outbox.move(path, "sent", {"receipt": receipt, "uploaded_at": time.time()})
            self.last.update(skill_id=meta["skill_id"], round_id=meta["round_id"])
            self.log("info", f"uploaded {path.name} to round {meta['round_id']}")

    def install_published(self) -> None:
        awaiting = self.outbox.awaiting()
        pending_updates = {m["update_id"] for _, m in self.outbox.pending()}
        changed = False
        for update_id, entry in list(awaiting.items()):
            if update_id in pending_updates:
                continue  # some of its uploads are not in the cloud yet
            statuses = {skill: self.transport.round_status(rid) for skill, rid in entry["rounds"].items()}
            if any(s["state"] not in ("published", "expired") for s in statuses.values()):
                continue
            request = entry["request"]
            if entry.get("strategy", self.strategy.describe()) != self.strategy.describe():
                self.last["error"] = (f"update {update_id} was uploaded under {entry['strategy']!r}, not "
                                      f"{self.strategy.describe()!r}: dropped (the configuration changed meanwhile)")
                self.log("error", self.last["error"])
                awaiting.pop(update_id)
                changed = True
                continue
            ready = {skill: s for skill, s in statuses.items() if s["state"] == "published" or s.get("folded")}
            if not ready:
                self.log("warning", f"rounds {sorted(entry['rounds'].values())} expired without an aggregate")
                awaiting.pop(update_id)
                changed = True
                continue
            sums: dict[str, RoundSum] = {}
            for skill, s in ready.items():
                blob = self.transport.download_aggregate(int(s["round_id"]))
                t = time.perf_counter()
                sums[skill] = self.codec.decode(blob)
                self.crypto_seconds += time.perf_counter() - t
            update = self.store.local_update(request)
            delta = self.strategy.combine(update.skill_id, sums, activation=update.activation)
            state = {k: (np.asarray(v, np.float64) + delta[k]).astype(np.float32) if k in delta else np.asarray(v).copy()
                     for k, v in update.parent.items()}
            info = {
                "rounds": {skill: int(s["round_id"]) for skill, s in ready.items()},
                "published_versions": {skill: s.get("published_version") for skill, s in ready.items()},
                "contributors": {skill: int(sums[skill].count) for skill in ready},
                "strategy": self.strategy.name,
            }
            result = self.store.install(request, state, info) or {}
            awaiting.pop(update_id)
            changed = True
            self.installed += 1
            self.last.update(skill_id=update.skill_id, round_id=max(info["rounds"].values()),
                             version=int(result.get("version", 0)))
            if self.on_installed is not None:
                self.on_installed(request, {**info, **result})
            self.log("info", f"installed {update.skill_id} from round(s) {sorted(info['rounds'].values())}")
        if changed:
            self.outbox.set_awaiting(awaiting)
