"""Fleet federation through the robots' FederationClient, the real cloud server and real encryption.

Encrypted FedAvg (uniform and sample-weighted) / EDA must equal the plaintext reference up to
fixed-point quantization, the weighted mean must be McMahan's ``sum n_k d_k / sum n_k``, and the
additive EDA decomposition must equal FedVLA's cosine-weighted formula.
"""

import numpy as np
import pytest

from scfl_nodes.core.federation import ExpertDrivenAggregation, FedAvg, personalized_weights
from scfl_nodes.core.federation.codecs import EncryptedCodec, PlainCodec
from scfl_nodes.core.federation.inprocess import InProcessCloud
from scfl_nodes.core.fleet import federation as fed
from scfl_nodes.core.fleet.bank import SkillBank

SCALE = 2.0**15  # rlwe-n2048-q48-t32 quantization scale
ROBOTS = [f"r{i}" for i in range(3)]


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
        robots = cloud.register_fleet(key, ROBOTS)
        yield cloud, key, robots


def _federations(cloud_fleet, strategy, tag):
    cloud, key, robots = cloud_fleet
    plain = fed.FleetFederation(InProcessCloud(), strategy, {r: PlainCodec() for r in robots}, {}, run_tag=tag)
    enc = fed.FleetFederation(cloud.client, strategy, {r: EncryptedCodec(key, robots[r][0], num_clients=3) for r in robots},
                              {r: robots[r][1] for r in robots}, run_tag=tag, reference=plain)
    return plain, enc


def _per_skill_updates(g, states, experts, samples, bump=0.0):
    return {r: {f"skill-{e}": dict(parent=fed.expert_tensors(g, e),
                                   new={k: v + bump for k, v in fed.expert_tensors(states[r], e).items()},
                                   num_samples=samples[r]) for e in experts[r]} for r in states}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("weighted", [False, True])
def test_encrypted_fedavg_equals_plaintext_up_to_quantization(cloud_fleet, weighted):
    cloud, key, robots = cloud_fleet
    dims = {"obs_dim": 12, "action_dim": 4, "hidden": 16}
    g, states, experts = _trained_states(3, dims, num_experts=4)
    samples = {"r0": 1500, "r1": 150, "r2": 800}
    strategy = FedAvg(clip=1.0, sample_weighted=weighted, sample_cap=2000)
    plain, enc = _federations(cloud_fleet, strategy, f"fedavg-{weighted}")
    got = enc.round(0, _per_skill_updates(g, states, experts, samples))
    # the plaintext reference is the formula: sum n_k d_k / sum n_k (or / N), of clipped deltas
    for e in range(4):
        contributors = [r for r in states if e in experts[r]]
        w = {r: (samples[r] if weighted else 1.0) for r in contributors}
        for k, v in fed.expert_tensors(g, e).items():
            mean = sum(w[r] * np.clip(fed.expert_tensors(states[r], e)[k] - v, -1, 1) for r in contributors) / sum(w.values())
            for r in contributors:
                bound = (2 * len(contributors) * 2000 / sum(samples[c] for c in contributors) if weighted else 1) / SCALE
                assert np.max(np.abs(got[r][f"skill-{e}"][k] - (v + mean))) <= bound + 1e-6
    assert 0 < enc.max_abs_error <= (6 * 2000 / 950 if weighted else 1) / SCALE
    # every robot installs the same per-skill aggregate
    assert all(np.array_equal(got["r0"]["skill-1"][k], got["r1"]["skill-1"][k]) for k in got["r0"]["skill-1"])
    # aggregation really moved the routed experts (the comparison is not trivially 0 == 0)
    assert max(float(np.max(np.abs(got["r0"]["skill-0"][k] - v))) for k, v in fed.expert_tensors(g, 0).items()) > 1e-3
    # every robot uploaded real ciphertexts, larger than the float32 plaintext they hide
    assert all(enc.bytes_up[r] > plain.bytes_up[r] > 0 for r in robots)
    # clipping is applied identically in both paths (round 2 starts from the installed versions)
    big = {r: {k: v + (5.0 if k.startswith("experts.0.") else 0.0) for k, v in s.items()} for r, s in states.items()}
    enc.round(1, _per_skill_updates(g, big, experts, samples))
    assert enc.max_abs_error <= (6 * 2000 / 950 if weighted else 1) / SCALE
    enc.close()


def test_weighted_and_uniform_fedavg_differ_as_mcmahan_says():
    """1-sample-heavy vs light robots: the weighted mean leans towards the data-rich robot."""
    g = {"w": np.zeros(3, np.float32)}
    updates = {"rich": {"s": dict(parent=g, new={"w": np.full(3, 0.5, np.float32)}, num_samples=900)},
               "poor": {"s": dict(parent=g, new={"w": np.full(3, -0.5, np.float32)}, num_samples=100)}}
    out = {}
    for weighted in (False, True):
        federation = fed.FleetFederation(InProcessCloud(), FedAvg(sample_weighted=weighted, sample_cap=1000),
                                         {r: PlainCodec() for r in updates}, {}, run_tag="w")
        out[weighted] = federation.round(0, updates)["poor"]["s"]["w"]
        federation.close()
    np.testing.assert_allclose(out[False], 0.0, atol=1e-7)
    np.testing.assert_allclose(out[True], (900 * 0.5 - 100 * 0.5) / 1000, atol=1e-6)


@pytest.mark.timeout(240)
def test_encrypted_eda_equals_fedvla_formula(cloud_fleet):
    dims = {"obs_dim": 8, "action_dim": 4, "hidden": 8}
    g, states, experts = _trained_states(3, dims, num_experts=4, seed=1)
    activations = {"r0": np.array([3.0, 1.0, 0, 0]), "r1": np.array([0, 2.0, 2.0, 0]), "r2": np.array([0, 0, 1.0, 5.0])}
    slots = fed.slot_tensors(activations, list(g))
    plain, enc = _federations(cloud_fleet, ExpertDrivenAggregation(clip=1.0), "eda")
    updates = {r: {"bank": dict(parent=g, new=states[r], activation=activations[r], slot_tensors=slots)} for r in states}
    got = enc.round(0, updates)
    for i in states:
        w = personalized_weights(activations, i)
        direct = {k: g[k] + sum(w[j] * np.clip(states[j][k] - g[k], -1, 1) for j in states) for k in g}
        assert max(float(np.max(np.abs(got[i]["bank"][k] - direct[k]))) for k in g) < 4.0 / SCALE
    assert 0 < enc.max_abs_error < 4.0 / SCALE
    # r0 and r2 share no expert: r0's model must not move towards r2's delta at all.
    assert personalized_weights(activations, "r0")["r2"] == 0.0
    # EDA uploads one ciphertext per activated slot, FedAvg one per routed skill
    assert enc.clients["r0"].uploads_ok == 2 and enc.clients["r2"].uploads_ok == 2
    enc.close()


def test_cloud_start_failure_is_one_clear_error(tmp_path):
    from scfl_nodes.core.fleet.cloud import FleetCloud, FleetCloudError

    (tmp_path / "cloud").write_text("not a directory")
    with pytest.raises(FleetCloudError, match="the scfl cloud server did not start"):
        with FleetCloud(tmp_path):
            pass
