"""Aggregation strategies on real ciphertexts: FedAvg, EDA weights, pairwise masks."""

from __future__ import annotations

import numpy as np
import pytest

from scfl_nodes.core.config import ConfigError, config_from_dict
from scfl_nodes.core.crypto import (
    IncompleteMaskError,
    encrypt_delta,
    generate_fleet_keys,
    generate_signing_key,
    quantize,
)
from scfl_nodes.core.federation import (
    ExpertDrivenAggregation,
    FedAvg,
    MaskKey,
    PairwiseMasker,
    eda_weights,
    make_strategy,
    personalized_weights,
    combine_slots,
    similarity_matrix,
    slot_weights,
    strategy_from_config,
)

SCALE = 2**15
ROBOTS = ["robot-a", "robot-b", "robot-c", "robot-d"]


@pytest.fixture(scope="module")
def fleet():
    return generate_fleet_keys("rlwe")


@pytest.fixture(scope="module")
def signers():
    return {r: generate_signing_key() for r in ROBOTS}


def local_deltas(seed=0, n=5000):
    rng = np.random.default_rng(seed)
    return {r: {"w": rng.normal(0, 0.2, size=(n // 50, 50)).astype(np.float32), "b": rng.normal(0, 0.2, 5).astype(np.float32)} for r in ROBOTS}


def run_round(strategy, fleet, signers, deltas, stats=None, maskers=None, contributors=None):
    plan = strategy.configure(round_id=1, skill_id="door", base_version=0, robot_ids=list(deltas), activation_stats=stats)
    ctx = fleet.cloud_context()
    uploads = [
        strategy.encrypt_update(plan, fleet, r, deltas[r], signers[r], masker=(maskers or {}).get(r))
        for r in (contributors or plan.robot_ids)
    ]
    agg = strategy.aggregate_encrypted(ctx, uploads)
    return plan, agg


def test_fedavg_mean_matches_plaintext_mean(fleet, signers):
    deltas = local_deltas()
    strategy = FedAvg(clip=1.0)
    plan, agg = run_round(strategy, fleet, signers, deltas)
    assert all(w == 1.0 for w in plan.weights.values()) and plan.num_clients == 4
    mean = strategy.finalize_aggregate(fleet, agg)
    exact = sum(quantize(deltas[r], 1.0, SCALE) for r in ROBOTS) / SCALE / 4
    np.testing.assert_array_equal(mean["w"].reshape(-1), exact[:5000])
    plain_mean = np.mean([np.clip(deltas[r]["w"], -1, 1) for r in ROBOTS], axis=0)
    assert np.abs(mean["w"] - plain_mean).max() <= 0.5 / SCALE + 1e-7


def test_eda_gives_similar_robots_higher_weight():
    stats = {
        "robot-a": np.array([[9, 1, 0, 0], [8, 2, 0, 0]]),  # door-like experts
        "robot-b": np.array([[8, 2, 0, 0], [9, 1, 0, 0]]),
        "robot-c": np.array([[7, 2, 1, 0], [8, 1, 1, 0]]),
        "robot-d": np.array([[0, 0, 1, 9], [0, 0, 2, 8]]),  # a different task
    }
    sim = similarity_matrix(stats, ROBOTS)
    assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)
    assert sim[0, 1] > 0.9 and sim[0, 3] < 0.2
    weights = eda_weights(stats, ROBOTS)
    assert max(weights.values()) == 1.0
    assert min(weights["robot-a"], weights["robot-b"], weights["robot-c"]) > 3 * weights["robot-d"]
    # personalized (FedVLA Eq. 9): from robot-a's view b is weighted more than d; it sums to 1
    pw = personalized_weights(stats, "robot-a")
    assert pytest.approx(sum(pw.values())) == 1.0
    assert pw["robot-b"] > pw["robot-c"] > pw["robot-d"]
    pd = personalized_weights(stats, "robot-d")
    assert pd["robot-d"] > pd["robot-a"]
    # relative to a reference profile (e.g. the receiving robot's own activations)
    ref = eda_weights(stats, ROBOTS, reference=stats["robot-d"])
    assert ref["robot-d"] == 1.0 and ref["robot-a"] < 0.3
    with pytest.raises(ValueError, match="robot-x"):
        eda_weights(stats, ROBOTS + ["robot-x"])
    with pytest.raises(ValueError, match="counts"):
        eda_weights({"a": np.array([-1.0, 2.0])})


def test_eda_weighted_sum_matches_plaintext_within_quantization(fleet, signers):
    deltas = local_deltas(seed=3)
    stats = {r: np.array([5, 5, 0, 0]) for r in ROBOTS[:3]} | {"robot-d": np.array([1, 0, 0, 9])}
    strategy = ExpertDrivenAggregation(clip=1.0)
    plan, agg = run_round(strategy, fleet, signers, deltas, stats=stats)
    weights = plan.weights
    assert weights["robot-d"] < weights["robot-a"]
    assert agg.total_weight == pytest.approx(sum(weights.values()))
    result = strategy.finalize_aggregate(fleet, agg)
    total = sum(weights.values())
    plain = {
        k: sum(np.clip(weights[r] * deltas[r][k].astype(np.float64), -1, 1) for r in ROBOTS) / total for k in ("w", "b")
    }
    bound = len(ROBOTS) * 0.5 / SCALE / total + 1e-9  # each robot rounds once after scaling
    for k in plain:
        assert np.abs(result[k] - plain[k]).max() <= bound
    # and it differs from FedAvg: the dissimilar robot counts less
    fedavg = {k: np.mean([deltas[r][k] for r in ROBOTS], axis=0) for k in plain}
    assert np.abs(result["w"] - fedavg["w"]).max() > 100 * bound


def test_eda_needs_statistics():
    with pytest.raises(ValueError, match="expert-activation statistics"):
        ExpertDrivenAggregation().configure(1, "s", 0, ROBOTS, activation_stats=None)


def test_pairwise_masks_cancel_and_hide_single_uploads(fleet, signers):
    deltas = local_deltas(seed=5)
    mask_keys = {r: MaskKey.generate() for r in ROBOTS}
    publics = {r: k.public_bytes() for r, k in mask_keys.items()}
    maskers = {r: PairwiseMasker(r, mask_keys[r], publics, fleet_id=fleet.key_id) for r in ROBOTS}
    strategy = FedAvg(clip=1.0, secure_masks=True)
    plan, agg = run_round(strategy, fleet, signers, deltas, maskers=maskers)
    exact = sum(quantize(deltas[r], 1.0, SCALE) for r in ROBOTS)
    assert np.array_equal(fleet.decrypt_aggregate_quantized(agg), exact)  # masks cancel exactly
    # a fleet-key holder who grabs one upload sees uniform noise, not the delta
    single = fleet.cloud_context().add(None, strategy.encrypt_update(plan, fleet, "robot-a", deltas["robot-a"], signers["robot-a"], maskers["robot-a"]))
    single.header["mask_cohort"] = None  # even bypassing the cohort check ...
    leaked = fleet.decrypt_aggregate_quantized(single)
    truth = quantize(deltas["robot-a"], 1.0, SCALE)
    assert np.abs(leaked).mean() > 1e8  # ~uniform over (-2^31, 2^31)
    assert abs(np.corrcoef(leaked, truth)[0, 1]) < 0.05
    # a missing cohort member: masks do not cancel, decryption refuses instead of lying
    _, partial = run_round(strategy, fleet, signers, deltas, maskers=maskers, contributors=ROBOTS[:3])
    with pytest.raises(IncompleteMaskError, match="robot-d"):
        fleet.decrypt_aggregate(partial)


def test_masks_need_the_right_peers_and_are_round_specific(fleet):
    keys = {r: MaskKey.generate() for r in ROBOTS[:2]}
    publics = {r: k.public_bytes() for r, k in keys.items()}
    masker = PairwiseMasker("robot-a", keys["robot-a"], publics)
    common = dict(num_values=100, plain_modulus=2**32, skill_id="s", base_version=0)
    m1 = masker.mask(ROBOTS[:2], round_id=1, **common)
    m2 = masker.mask(ROBOTS[:2], round_id=2, **common)
    assert not np.array_equal(m1, m2)
    other = PairwiseMasker("robot-b", keys["robot-b"], publics).mask(ROBOTS[:2], round_id=1, **common)
    assert np.all((m1 + other) % 2**32 == 0)
    with pytest.raises(ValueError, match="robot-c"):
        masker.mask(ROBOTS[:3], round_id=1, **common)
    # mask public keys can be authenticated with the robot's Ed25519 key
    signer = generate_signing_key()
    pub, sig = keys["robot-a"].signed_public(signer)
    MaskKey.verify_public(pub, sig, signer.public_bytes())


def test_masks_with_tenseal_prime_modulus():
    fleet = generate_fleet_keys("tenseal")
    robots = ROBOTS[:3]
    signers = {r: generate_signing_key() for r in robots}
    keys = {r: MaskKey.generate() for r in robots}
    publics = {r: k.public_bytes() for r, k in keys.items()}
    maskers = {r: PairwiseMasker(r, keys[r], publics) for r in robots}
    deltas = {r: d for r, d in local_deltas(seed=7, n=500).items() if r in robots}
    strategy = FedAvg(clip=1.0, secure_masks=True)
    _, agg = run_round(strategy, fleet, signers, deltas, maskers=maskers)
    exact = sum(quantize(deltas[r], 1.0, SCALE) for r in robots)
    assert np.array_equal(fleet.decrypt_aggregate_quantized(agg), exact)


def test_strategy_factory_and_config_sections():
    cfg = config_from_dict({"crypto": {"backend": "tenseal", "clip": 0.5, "max_clients": 100}, "federation": {"strategy": "eda", "secure_masks": True}})
    strategy = strategy_from_config(cfg)
    assert isinstance(strategy, ExpertDrivenAggregation) and strategy.secure_masks and strategy.clip == 0.5
    assert strategy.floor == cfg.federation.eda_floor
    assert isinstance(strategy_from_config(config_from_dict({})), FedAvg)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("fedprox")
    with pytest.raises(ConfigError, match="crypto.max_clients"):
        config_from_dict({"crypto": {"backend": "tenseal", "params_id": "bfv-n4096-q80-t786433", "max_clients": 50}})
    with pytest.raises(ConfigError, match="below 128-bit"):
        config_from_dict({"crypto": {"params_id": "rlwe-n1024-q32-t16-paper"}})
    with pytest.raises(ConfigError, match="federation.strategy"):
        config_from_dict({"federation": {"strategy": "median"}})


def test_encrypt_update_requires_a_masker_when_the_plan_masks(fleet, signers):
    strategy = FedAvg(secure_masks=True)
    plan = strategy.configure(1, "s", 0, ROBOTS)
    with pytest.raises(ValueError, match="PairwiseMasker"):
        strategy.encrypt_update(plan, fleet, "robot-a", {"w": np.zeros(3, np.float32)}, signers["robot-a"])
    with pytest.raises(KeyError, match="robot-z"):
        FedAvg().encrypt_update(FedAvg().configure(1, "s", 0, ROBOTS), fleet, "robot-z", {"w": np.zeros(3)}, signers["robot-a"])
    # direct use of encrypt_delta with a mask demands the cohort
    with pytest.raises(Exception, match="mask_cohort"):
        encrypt_delta(fleet, {"w": np.zeros(3)}, skill_id="s", base_version=0, round_id=1, robot_id="robot-a",
                      signing_key=signers["robot-a"], clip=1.0, num_clients=4, mask=np.zeros(3, np.uint64))


def test_personalized_eda_through_encrypted_expert_slots(fleet, signers):
    """FedVLA's per-receiver weights (Eq. 9) with additions only: one aggregate per slot."""
    stats = {
        "robot-a": np.array([[9, 1, 0], [5, 5, 0]]),
        "robot-b": np.array([[8, 2, 0], [4, 6, 0]]),
        "robot-c": np.array([[1, 1, 8], [0, 5, 5]]),
        "robot-d": np.array([[0, 0, 9], [0, 1, 9]]),
    }
    deltas = local_deltas(seed=11, n=1000)
    ctx = fleet.cloud_context()
    aggregates = {}
    for robot in ROBOTS:
        for slot, u in slot_weights(stats[robot], robot).items():
            assert 0 < u <= 1
            delta = encrypt_delta(
                fleet, deltas[robot], skill_id=f"door#{slot}", base_version=0, round_id=1, robot_id=robot,
                signing_key=signers[robot], clip=1.0, num_clients=4, weight=u,
            )
            aggregates[slot] = ctx.add(aggregates.get(slot), delta)
    slot_sums = {slot: (fleet.decrypt_aggregate(agg), agg.total_weight) for slot, agg in aggregates.items()}
    for receiver in ROBOTS:
        got = combine_slots(stats[receiver], slot_sums, receiver)
        weights = personalized_weights(stats, receiver)
        for k in ("w", "b"):
            plain = sum(weights[r] * np.clip(deltas[r][k], -1, 1).astype(np.float64) for r in ROBOTS)
            err = np.abs(got[k] - plain).max()
            assert err < 4 / SCALE, err  # a few quantization steps
    # receivers see different mixes: a leans on b, d leans on c
    wa, wd = personalized_weights(stats, "robot-a"), personalized_weights(stats, "robot-d")
    assert wa["robot-b"] > wa["robot-d"] and wd["robot-c"] > wd["robot-a"]


def test_eda_with_masks_equals_eda_without(fleet, signers):
    deltas = local_deltas(seed=13, n=1000)
    stats = {r: np.array([i + 1, 4 - i, 1]) for i, r in enumerate(ROBOTS)}
    mask_keys = {r: MaskKey.generate() for r in ROBOTS}
    publics = {r: k.public_bytes() for r, k in mask_keys.items()}
    maskers = {r: PairwiseMasker(r, mask_keys[r], publics) for r in ROBOTS}
    _, plain_agg = run_round(ExpertDrivenAggregation(), fleet, signers, deltas, stats=stats)
    _, masked_agg = run_round(ExpertDrivenAggregation(secure_masks=True), fleet, signers, deltas, stats=stats, maskers=maskers)
    assert masked_agg.header["mask_cohort"] == sorted(ROBOTS)
    assert np.array_equal(fleet.decrypt_aggregate_quantized(masked_agg), fleet.decrypt_aggregate_quantized(plain_agg))
    assert masked_agg.total_weight == plain_agg.total_weight


def test_sample_weighted_fedavg_under_encryption_is_mcmahans_mean(fleet, signers):
    """Robots pre-scale by w_k = n_k / cap and send w_k * clip inside the same encrypted sum."""
    from scfl_nodes.core.federation import WEIGHT_KEY, RoundSum

    deltas = local_deltas(seed=21, n=1000)
    samples = dict(zip(ROBOTS, [4000, 100, 900, 2500]))
    strategy = FedAvg(clip=1.0, sample_weighted=True, sample_cap=4000)
    ctx, agg = fleet.cloud_context(), None
    for r in ROBOTS:
        (c,) = strategy.contributions("door", deltas[r], num_samples=samples[r])
        assert c.weight == 1.0 and c.tensors[WEIGHT_KEY][0] == pytest.approx(samples[r] / 4000)
        assert max(float(np.max(np.abs(v))) for v in c.tensors.values()) <= 1.0  # still within the clip bound
        agg = ctx.add(agg, encrypt_delta(fleet, dict(c.tensors), skill_id="door", base_version=0, round_id=1,
                                         robot_id=r, signing_key=signers[r], clip=1.0, num_clients=4))
    assert agg.total_weight == 4.0  # no sample count in plaintext
    got = strategy.combine("door", {"door": RoundSum(fleet.decrypt_aggregate(agg), agg.count, agg.total_weight)})
    n = sum(samples.values())
    for k in ("w", "b"):
        want = sum(samples[r] * np.clip(deltas[r][k], -1, 1).astype(np.float64) for r in ROBOTS) / n
        assert np.abs(got[k] - want).max() <= 2 * 4 * 0.5 / SCALE * 4000 / n
    assert WEIGHT_KEY not in got
    # a robot above the cap counts as the cap; an update without a sample count is refused clearly
    assert strategy.sample_weight(10**6) == 1.0
    with pytest.raises(ValueError, match="sample count"):
        strategy.contributions("door", deltas["robot-a"], num_samples=None)
    assert strategy_from_config(config_from_dict({"federation": {"weighting": "uniform"}})).sample_weighted is False
    with pytest.raises(ConfigError, match="federation.weighting"):
        config_from_dict({"federation": {"weighting": "median"}})
