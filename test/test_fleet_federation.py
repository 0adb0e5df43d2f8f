"""Fleet federation through the real cloud server with real encryption.

Encrypted FedAvg / EDA must equal the plaintext reference up to fixed-point quantization,
and the additive EDA decomposition must equal FedVLA's cosine-weighted formula.
"""

import numpy as np
import pytest

from scfl_nodes.core.fleet import federation as fed
from scfl_nodes.core.fleet.bank import SkillBank

SCALE = 2.0**15  # rlwe-n2048-q48-t32 quantization scale


def _trained_states(n_robots, dims, num_experts, seed=0):
    """A global bank plus per-robot banks perturbed only on the experts each robot routes to."""
    rng = np.random.default_rng(seed)
    global_state = SkillBank(num_experts, **dims, seed=seed).state()
    experts = {f"r{i}": sorted({i % num_experts, (i + 1) % num_experts}) for i in range(n_robots)}
    states = {}
    for rid, ex in experts.items():
        s = {k: v.copy() for k, v in global_state.items()}
        for e in ex:
            for k in s:
                if k.startswith(f"experts.{e}."):
                    s[k] = s[k] + rng.normal(0, 0.05, s[k].shape).astype(np.float32)
        states[rid] = s
    return global_state, states, experts


@pytest.fixture(scope="module")
def cloud_fleet(tmp_path_factory):
    from scfl_nodes.core.crypto import generate_fleet_keys
    from scfl_nodes.core.fleet.cloud import FleetCloud

    with FleetCloud(tmp_path_factory.mktemp("cloud")) as cloud:
        key = generate_fleet_keys("rlwe")
        robots = cloud.register_fleet(key, [f"r{i}" for i in range(3)])
        yield cloud, key, robots


@pytest.mark.timeout(180)
def test_encrypted_fedavg_equals_plaintext_up_to_quantization(cloud_fleet):
    cloud, key, robots = cloud_fleet
    dims = {"obs_dim": 12, "action_dim": 4, "hidden": 16}
    g, states, experts = _trained_states(3, dims, num_experts=4)
    plain = fed.fedavg_per_skill(fed.PlainTransport(), "t", 0, g, states, experts, 4, clip=1.0)
    enc_t = fed.EncryptedCloudTransport(cloud, key, robots, clip=1.0, num_clients=3, run_tag="fedavg-test")
    enc = fed.fedavg_per_skill(enc_t, "t", 0, g, states, experts, 4, clip=1.0)
    worst = max(float(np.max(np.abs(plain[k] - enc[k]))) for k in plain)
    assert worst <= 1.0 / SCALE  # rounding of each of <= 3 summands, divided by the count
    assert 0 < enc_t.max_abs_error <= 1.0 / SCALE
    # Aggregation really changed the routed experts (the comparison is not trivially 0 == 0).
    assert max(float(np.max(np.abs(plain[k] - g[k]))) for k in plain) > 1e-3
    # Every robot uploaded real ciphertexts, larger than the float32 plaintext they hide.
    plain_bytes = fed.PlainTransport()
    fed.fedavg_per_skill(plain_bytes, "t", 0, g, states, experts, 4, clip=1.0)
    assert all(enc_t.bytes_up[r] > plain_bytes.bytes_up[r] for r in robots)
    # Clipping is applied identically in both paths.
    big = {r: {k: v + (5.0 if k.startswith("experts.0.") else 0.0) for k, v in s.items()} for r, s in states.items()}
    p2 = fed.fedavg_per_skill(fed.PlainTransport(), "t", 1, g, big, experts, 4, clip=1.0)
    e2 = fed.fedavg_per_skill(enc_t, "t", 1, g, big, experts, 4, clip=1.0)
    assert max(float(np.max(np.abs(p2[k] - e2[k]))) for k in p2) <= 1.0 / SCALE


@pytest.mark.timeout(180)
def test_encrypted_eda_equals_fedvla_formula(cloud_fleet):
    cloud, key, robots = cloud_fleet
    dims = {"obs_dim": 8, "action_dim": 4, "hidden": 8}
    g, states, experts = _trained_states(3, dims, num_experts=4, seed=1)
    starts = {r: g for r in states}
    activations = {"r0": np.array([3.0, 1.0, 0, 0]), "r1": np.array([0, 2.0, 2.0, 0]), "r2": np.array([0, 0, 1.0, 5.0])}
    enc_t = fed.EncryptedCloudTransport(cloud, key, robots, clip=1.0, num_clients=3, run_tag="eda-test")
    enc = fed.eda_round(enc_t, "t", 0, starts, states, activations, clip=1.0)
    plain = fed.eda_round(fed.PlainTransport(), "t", 0, starts, states, activations, clip=1.0)
    w = fed.eda_weights(activations)
    for i in states:
        direct = {k: g[k] + sum(w[i][j] * np.clip(states[j][k] - g[k], -1, 1) for j in states) for k in g}
        assert max(float(np.max(np.abs(plain[i][k] - direct[k]))) for k in g) < 1e-5
        assert max(float(np.max(np.abs(enc[i][k] - direct[k]))) for k in g) < 4.0 / SCALE
    # r0 and r2 share no expert: r0's model must not move towards r2's delta at all.
    assert w["r0"]["r2"] == 0.0


def test_eda_weights_are_normalised_cosines():
    w = fed.eda_weights({"a": np.array([1.0, 0, 0]), "b": np.array([1.0, 1.0, 0]), "c": np.array([0, 0, 2.0])})
    assert abs(sum(w["a"].values()) - 1) < 1e-12
    assert w["a"]["c"] == 0 and w["a"]["a"] > w["a"]["b"] > 0


def test_cloud_start_failure_is_one_clear_error(tmp_path):
    from scfl_nodes.core.fleet.cloud import FleetCloud, FleetCloudError

    (tmp_path / "cloud").write_text("not a directory")
    with pytest.raises(FleetCloudError, match="the scfl cloud server did not start"):
        with FleetCloud(tmp_path):
            pass
