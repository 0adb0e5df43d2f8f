"""Federated rounds of the fleet: per-skill FedAvg and FedVLA's EDA, in plaintext or encrypted.

Transport is pluggable so the *same* aggregation code runs in plaintext (the reference)
and under encryption through the real cloud service (:class:`EncryptedCloudTransport`:
robots encrypt + sign with ISSUE 3's crypto, upload over HTTP with ISSUE 4's client, the
cloud adds ciphertexts without decrypting, robots download and decrypt the sum). Both
clip every delta value to ``[-clip, clip]`` first, so the only difference left is the
encryption's fixed-point quantization.

* **FedAvg (SCFL, per skill)**: every skill is its own federated object with its own
  rounds; the robots that routed data through skill ``e`` upload its delta and everybody
  applies ``sum / count``.
* **EDA (FedVLA)**: robot ``i`` applies ``sum_j s_ij delta_j / sum_j s_ij`` with
  ``s_ij = cos(v_i, v_j)`` of expert-activation vectors. The cloud can only add, so we use
  ``s_ij = sum_e vhat_ie vhat_je``: robot ``j`` uploads ``vhat_je * delta_j`` (and
  ``vhat_je``) into one round per expert ``e`` it activates; robot ``i`` combines the
  per-expert sums with its own ``vhat_i``. Exact, and the cloud never sees a weight
  applied to plaintext.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

EDA_WEIGHT_KEY = "eda_weight"


def clip_delta(delta: dict[str, np.ndarray], clip: float) -> dict[str, np.ndarray]:
    return {k: np.clip(np.asarray(v, dtype=np.float32), -clip, clip) for k, v in delta.items()}


def subtract(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (a[k] - b[k]).astype(np.float32) for k in a}


def expert_tensors(state: dict[str, np.ndarray], expert: int) -> dict[str, np.ndarray]:
    prefix = f"experts.{expert}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class PlainTransport:
    """Sums uploads in process; bytes are what a float32 upload would cost."""

    encrypted = False

    def __init__(self):
        self.bytes_up: dict[str, int] = defaultdict(int)
        self.crypto_seconds: dict[str, float] = defaultdict(float)

    def sum_round(self, tag: str, round_index: int, uploads: dict[str, dict[str, np.ndarray]]):
        names = sorted(next(iter(uploads.values())))
        total = {k: np.zeros_like(next(iter(uploads.values()))[k], dtype=np.float64) for k in names}
        for robot_id, tensors in uploads.items():
            for k in names:
                total[k] += tensors[k]
            self.bytes_up[robot_id] += int(sum(np.asarray(v, dtype=np.float32).nbytes for v in tensors.values()))
        return {k: v.astype(np.float32) for k, v in total.items()}, len(uploads)


class EncryptedCloudTransport:
    """Encrypt + sign on each robot, aggregate on the real cloud over HTTP, decrypt on the robot.

    ``cloud`` is a :class:`scfl_nodes.core.fleet.cloud.FleetCloud`; ``robots`` maps
    robot_id -> (signing_key, token). ``run_tag`` keeps skill ids of different methods and
    seeds apart on the shared server.
    """

    encrypted = True

    def __init__(self, cloud, fleet_key, robots: dict, clip: float, num_clients: int, run_tag: str):
        self.cloud = cloud
        self.fleet_key = fleet_key
        self.robots = robots
        self.clip = float(clip)
        self.num_clients = int(num_clients)
        self.run_tag = run_tag
        self.bytes_up: dict[str, int] = defaultdict(int)
        self.crypto_seconds: dict[str, float] = defaultdict(float)
        self.cloud_seconds = 0.0
        # Largest |encrypted sum - plaintext sum| / count seen (same clipped uploads): the
        # "encryption changes nothing but quantization" check, per round, per tensor.
        self.max_abs_error = 0.0

    def sum_round(self, tag: str, round_index: int, uploads: dict[str, dict[str, np.ndarray]]):
        from scfl_nodes.core.crypto import encrypt_delta

        skill_id = f"{self.run_tag}.{tag}"
        t0 = time.perf_counter()
        round_id, base_version = self.cloud.open_round(skill_id, round_index, quorum=len(uploads))
        for robot_id, tensors in uploads.items():
            signing_key, token = self.robots[robot_id]
            t = time.perf_counter()
            blob = encrypt_delta(
                self.fleet_key,
                {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()},
                skill_id=skill_id,
                base_version=base_version,
                round_id=round_id,
                robot_id=robot_id,
                signing_key=signing_key,
                clip=self.clip,
                num_clients=self.num_clients,
            ).to_bytes()
            self.crypto_seconds[robot_id] += time.perf_counter() - t
            self.cloud.upload_delta(token, blob)
            self.bytes_up[robot_id] += len(blob)
        blob = self.cloud.download_aggregate(round_id)
        t = time.perf_counter()
        total, count = self.cloud.decrypt(self.fleet_key, blob)
        # Every robot decrypts the same sum; charge it to each (edge compute), measured once.
        dt = time.perf_counter() - t
        for robot_id in uploads:
            self.crypto_seconds[robot_id] += dt
        self.cloud_seconds += time.perf_counter() - t0
        if count != len(uploads):
            raise RuntimeError(f"cloud aggregated {count} deltas for {skill_id} round {round_index}, expected {len(uploads)}")
        for k, v in total.items():
            plain = sum(np.clip(np.asarray(u[k], dtype=np.float64), -self.clip, self.clip) for u in uploads.values())
            self.max_abs_error = max(self.max_abs_error, float(np.max(np.abs(np.asarray(v, dtype=np.float64) - plain))) / count)
        return {k: np.asarray(v, dtype=np.float32) for k, v in total.items()}, count


def fedavg_per_skill(
    transport,
    tag: str,
    round_index: int,
    global_state: dict[str, np.ndarray],
    robot_states: dict[str, dict[str, np.ndarray]],
    robot_experts: dict[str, list[int]],
    num_experts: int,
    clip: float,
) -> dict[str, np.ndarray]:
    """One SCFL round: for each skill, average the clipped deltas of the robots that trained it."""
    new_state = {k: v.copy() for k, v in global_state.items()}
    for e in range(num_experts):
        contributors = [r for r, experts in robot_experts.items() if e in experts]
        if not contributors:
            continue
        g = expert_tensors(global_state, e)
        uploads = {r: clip_delta(subtract(expert_tensors(robot_states[r], e), g), clip) for r in contributors}
        total, count = transport.sum_round(f"{tag}.skill-{e}", round_index, uploads)
        for k, v in total.items():
            new_state[f"experts.{e}.{k}"] = (g[k] + v / count).astype(np.float32)
    return new_state


def _expert_of(name: str) -> int | None:
    """Skill index of a bank tensor name ``experts.<i>.<param>`` (None for anything else)."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "experts" and parts[1].isdigit() else None


def activation_unit_vectors(activations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {r: (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float64) for r, v in activations.items()}


def eda_weights(activations: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """FedVLA Eq. 8-9: ``w_ij = cos(v_i, v_j) / sum_j cos(v_i, v_j)`` (plaintext reference)."""
    unit = activation_unit_vectors(activations)
    out = {}
    for i, vi in unit.items():
        sims = {j: float(vi @ vj) for j, vj in unit.items()}
        z = sum(sims.values())
        out[i] = {j: s / z for j, s in sims.items()}
    return out


def eda_round(
    transport,
    tag: str,
    round_index: int,
    start_states: dict[str, dict[str, np.ndarray]],
    robot_states: dict[str, dict[str, np.ndarray]],
    activations: dict[str, np.ndarray],
    clip: float,
) -> dict[str, dict[str, np.ndarray]]:
    """One EDA round through additive-only aggregation (see the module docstring)."""
    unit = activation_unit_vectors(activations)
    deltas = {r: clip_delta(subtract(robot_states[r], start_states[r]), clip) for r in robot_states}
    num_experts = len(next(iter(unit.values())))
    sums: dict[int, dict[str, np.ndarray]] = {}
    for e in range(num_experts):
        contributors = [r for r in deltas if unit[r][e] > 0]
        if not contributors:
            continue
        # Only the skills some contributor of this slot activated can carry a non-zero
        # delta (training touches routed skills only), so the slot carries just those.
        cohort = {x for r in contributors for x in np.flatnonzero(unit[r] > 0).tolist()}
        keep = [k for k in deltas[contributors[0]] if _expert_of(k) is None or _expert_of(k) in cohort]
        uploads = {}
        for r in contributors:
            w = float(unit[r][e])
            up = {k: (w * deltas[r][k]).astype(np.float32) for k in keep}
            up[EDA_WEIGHT_KEY] = np.array([w * clip], dtype=np.float32)
            uploads[r] = up
        total, _ = transport.sum_round(f"{tag}.slot-{e}", round_index, uploads)
        sums[e] = total
    new_states = {}
    for i, vi in unit.items():
        den = sum(vi[e] * float(sums[e][EDA_WEIGHT_KEY][0]) / clip for e in sums)
        new = {}
        for k, base in start_states[i].items():
            num = sum(vi[e] * sums[e][k].astype(np.float64) for e in sums if vi[e] > 0 and k in sums[e])
            new[k] = (base + num / den).astype(np.float32) if den > 0 else base.copy()
        new_states[i] = new
    return new_states
