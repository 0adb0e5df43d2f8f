"""Federated rounds of the simulated fleet: every robot runs the robots' own federation client.

Each simulated robot holds a :class:`~scfl_nodes.core.federation.client.FederationClient`
(the code a ROS robot's federation_bridge_node wraps) with its own durable outbox, its codec
(encrypt + sign with the fleet key, or plaintext for the reference) and the configured
:class:`~scfl_nodes.core.federation.strategy.Strategy`. The fleet adds only what a fleet
operator does: it opens the cloud rounds (the coordinator's job, with the admin token) and
hands every robot the weights it trained. Transport: the real cloud server over HTTP
(:class:`~scfl_nodes.core.fleet.cloud.FleetCloud`) or
:class:`~scfl_nodes.core.federation.inprocess.InProcessCloud` (plaintext reference).

* **FedAvg (SCFL, per skill)**: every skill is its own federated object with its own
  rounds; the robots that routed data through skill ``e`` upload its delta, sample-weighted
  or not (``federation.weighting``).
* **EDA (FedVLA)**: the bank is the federated object; each robot uploads into one round per
  expert slot it activates and combines the slot sums with its own activations
  (:mod:`scfl_nodes.core.federation.eda`).
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from scfl_nodes.core.federation import Strategy
from scfl_nodes.core.federation.client import FederationClient, LocalUpdate, UpdateStore
from scfl_nodes.core.federation.outbox import Outbox


def expert_tensors(state: dict[str, np.ndarray], expert: int) -> dict[str, np.ndarray]:
    prefix = f"experts.{expert}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def with_expert(state: dict[str, np.ndarray], expert: int, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(state)
    out.update({f"experts.{expert}.{k}": v for k, v in tensors.items()})
    return out


def slot_tensors(activations: dict[str, np.ndarray], state_names) -> dict[str, set[str]]:
    """Tensors each EDA slot's round carries: the experts some robot of that slot activates.

    Training only touches routed experts, so every other tensor's delta is zero for the
    whole slot cohort; the coordinator, which sees the activations, leaves them out.
    """
    out = {}
    num_experts = len(next(iter(activations.values())))
    for e in range(num_experts):
        cohort = {x for v in activations.values() if v[e] > 0 for x in np.flatnonzero(np.asarray(v) > 0).tolist()}
        out[f"l0.e{e}"] = {k for k in state_names if k.split(".")[0] != "experts" or int(k.split(".")[1]) in cohort}
    return out


def aggregation_weights(samples: dict[str, dict[int, int]], activations: dict[str, np.ndarray] | None = None, *,
                        sample_weighted: bool = True) -> dict[str, dict[int, dict[str, float]]]:
    """``weights[i][e][j]``: the weight of robot j's (clipped) delta on skill ``e`` in what robot i installs.

    ``samples[j][e]`` is robot j's training samples through skill e (only the skills it trains).
    Per-skill FedAvg (``activations`` None): ``n_j(e) / sum_k n_k(e)`` over the robots that
    train e (``1 / |C_e|`` unweighted), the same for every receiver. EDA (``activations``
    given): FedVLA's ``s_ij / sum_k s_ik`` over every robot sharing a slot with i; j's delta
    on e is zero unless j trains e, so the weights on e may sum to less than 1 (the other
    robots' zero deltas dilute it). Recorded by the fleet so EDA and FedAvg can be compared
    on what they actually average, not only on success.
    """
    from scfl_nodes.core.federation import personalized_weights

    out: dict[str, dict[int, dict[str, float]]] = {}
    for i, own in samples.items():
        sim = personalized_weights(activations, i) if activations is not None else None
        out[i] = {}
        for e in own:
            cohort = {j: s[e] for j, s in samples.items() if s.get(e, 0) > 0}
            if sim is not None:
                out[i][e] = {j: float(sim[j]) for j in cohort}
            else:
                total = sum(cohort.values()) if sample_weighted else len(cohort)
                out[i][e] = {j: (n if sample_weighted else 1) / total for j, n in cohort.items()}
    return out


def max_weight_difference(a: dict, b: dict) -> float:
    """Largest |a - b| over every (receiver, skill, contributor) of two :func:`aggregation_weights` tables."""
    worst = 0.0
    for i in set(a) | set(b):
        for e in set(a.get(i, {})) | set(b.get(i, {})):
            wa, wb = a.get(i, {}).get(e, {}), b.get(i, {}).get(e, {})
            worst = max([worst] + [abs(wa.get(j, 0.0) - wb.get(j, 0.0)) for j in set(wa) | set(wb)])
    return worst


class SimulatedRobotStore(UpdateStore):
    """A simulated robot's skills in memory: the LocalUpdates it trained, what it installed."""

    def __init__(self):
        self.updates: dict[str, LocalUpdate] = {}
        self.installed: dict[str, dict[str, np.ndarray]] = {}
        self.cloud_versions: dict[str, int] = defaultdict(int)

    def local_update(self, request: dict) -> LocalUpdate:
        return self.updates[request["key"]]

    def install(self, request: dict, state: dict, info: dict) -> dict:
        self.installed[request["key"]] = state
        for skill, version in info["published_versions"].items():
            if version is not None:
                self.cloud_versions[skill] = int(version)
        return {"version": max((v or 0) for v in info["published_versions"].values())}


class FleetFederation:
    """One federated method of the fleet: a coordinator plus one FederationClient per robot.

    ``transport`` serves the round protocol (a CloudClient with the admin token, or an
    InProcessCloud); ``codecs`` maps robot_id -> Codec; ``tokens`` robot_id -> bearer token.
    ``run_tag`` keeps skill ids of different methods and seeds apart on the shared server.
    ``reference`` (optional, another FleetFederation, plaintext) receives the same updates
    every round: :attr:`max_abs_error` is the largest difference between what the two
    install (the "encryption changes nothing but quantization" check).
    """

    def __init__(self, transport, strategy: Strategy, codecs: dict, tokens: dict, run_tag: str, *,
                 workdir: str | Path | None = None, deadline_s: float = 600.0, reference: "FleetFederation | None" = None):
        self.transport = transport
        self.strategy = strategy
        self.run_tag = run_tag
        self.deadline_s = float(deadline_s)
        self.reference = reference
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="scfl-fleet-outbox-")
        root = Path(workdir or self._tmp.name)
        self.stores = {r: SimulatedRobotStore() for r in codecs}
        # the fleet knows its robots' Ed25519 keys: each robot checks every secure-aggregation key advert itself
        public_keys = {r: c.signing_key.public_bytes() for r, c in codecs.items() if getattr(c, "signing_key", None)}
        self.clients = {
            r: FederationClient(r, strategy, transport, codecs[r], self.stores[r], Outbox(root / r), token=tokens.get(r),
                                robot_public_keys=public_keys or None)
            for r in codecs
        }
        self.versions: dict[str, int] = {}
        self.max_abs_error = 0.0

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if self.reference is not None:
            self.reference.close()

    @property
    def bytes_up(self) -> dict[str, int]:
        return {r: c.bytes_up for r, c in self.clients.items()}

    @property
    def crypto_seconds(self) -> dict[str, float]:
        return {r: c.crypto_seconds for r, c in self.clients.items()}

    def run_until_idle(self, clients, poll_s: float = 0.02) -> None:
        """Step every robot in turn until all installed their aggregates: robots of a real fleet
        run concurrently, and a secure-aggregation round needs every member's key messages."""
        deadline = time.monotonic() + self.deadline_s
        while True:
            for client in clients:
                client.step()
            if all(client.idle() for client in clients):
                return
            if time.monotonic() > deadline:
                busy = [c.robot_id for c in clients if not c.idle()]
                raise TimeoutError(f"robots {busy}: federation still busy after {self.deadline_s} s")
            time.sleep(poll_s)

    def round(self, round_index: int, updates: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
        """One federated round. ``updates[robot][object] = LocalUpdate fields`` (parent, new,
        num_samples, activation, slot_tensors); returns ``installed[robot][object] = state``."""
        # coordinator: open one round per cloud skill id, quorum = the robots that upload to it
        quorum: dict[str, int] = defaultdict(int)
        for robot, objects in updates.items():
            for obj, fields in objects.items():
                for skill in self.strategy.round_skill_ids(f"{self.run_tag}.{obj}", fields.get("activation")):
                    quorum[skill] += 1
        rounds = {}
        for skill, n in quorum.items():
            if skill not in self.versions:
                self.transport.create_skill(skill, [], skill_id=skill, description="fleet simulation skill")
                self.versions[skill] = 0
            rounds[skill] = int(self.transport.open_round(skill, self.versions[skill], n, self.deadline_s)["round_id"])
        # robots: upload (every robot first, as a fleet does in parallel), then install
        for robot, objects in updates.items():
            store, client = self.stores[robot], self.clients[robot]
            for obj, fields in objects.items():
                key = f"{self.run_tag}.{obj}.r{round_index}"
                store.updates[key] = LocalUpdate(f"{self.run_tag}.{obj}", cloud_versions=store.cloud_versions, **fields)
                client.enqueue({"skill_id": f"{self.run_tag}.{obj}", "key": key}, name=key)
        self.run_until_idle([self.clients[r] for r in updates])
        installed = {}
        for robot, objects in updates.items():
            installed[robot] = {obj: self.stores[robot].installed.pop(f"{self.run_tag}.{obj}.r{round_index}")
                                for obj in objects}
        for skill, rid in rounds.items():
            info = self.transport.round_status(rid)
            if info.get("published_version") is not None:
                self.versions[skill] = int(info["published_version"])
        if self.reference is not None:
            plain = self.reference.round(round_index, updates)
            for robot, objects in installed.items():
                for obj, state in objects.items():
                    for k, v in state.items():
                        self.max_abs_error = max(self.max_abs_error, float(np.max(np.abs(
                            np.asarray(v, np.float64) - np.asarray(plain[robot][obj][k], np.float64)))))
        return installed
