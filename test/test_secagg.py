"""Secure aggregation with dropout recovery: Shamir sharing, the robot/cloud protocol on
real ciphertexts (RLWE and TenSEAL), dropouts, and what a cloud + robot coalition sees."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scfl_nodes.core.crypto import (
    IncompleteMaskError,
    RoundMismatchError,
    generate_fleet_keys,
    generate_signing_key,
    quantize,
)
from scfl_nodes.core.federation import FedAvg, SecAggClient, SecAggError, round_context, unmask_vector
from scfl_nodes.core.federation import secagg

SCALE = 2**15
ROBOTS = [f"robot-{i}" for i in range(5)]


# ----------------------------------------------------------------------------- Shamir
def test_shamir_known_vector():
    """Textbook example (Wikipedia, "Shamir's secret sharing", finite-field example):
    f(x) = 1234 + 166 x + 94 x^2 mod 1613."""
    coeffs = iter([166, 94])
    shares = secagg.shamir_split(1234, 3, [1, 2, 3, 4, 5, 6], prime=1613, randbelow=lambda p: next(coeffs))
    assert shares == {1: 1494, 2: 329, 3: 965, 4: 176, 5: 1188, 6: 775}
    assert secagg.shamir_combine({2: 329, 4: 176, 5: 1188}, prime=1613) == 1234


def test_any_t_shares_reconstruct_and_fewer_do_not():
    secret = int.from_bytes(bytes(range(32)), "big")
    shares = secagg.shamir_split(secret, 3, [1, 2, 3, 4, 5])
    for subset in itertools.combinations(shares.items(), 3):
        assert secagg.shamir_combine(dict(subset)) == secret
    for subset in itertools.combinations(shares.items(), 4):
        assert secagg.shamir_combine(dict(subset)) == secret
    for subset in itertools.combinations(shares.items(), 2):
        assert secagg.shamir_combine(dict(subset)) != secret
    raw = bytes(range(100, 132))
    parts = secagg.split_bytes(raw, 3, [1, 2, 3, 4, 5])
    assert secagg.combine_bytes({x: parts[x] for x in (1, 3, 5)}, 32) == raw


def test_t_minus_one_shares_reveal_nothing():
    """Structural secrecy over a small field: for t = 3, every pair of shares is produced by
    exactly one polynomial per candidate secret, so two shares are uniformly distributed
    whatever the secret."""
    p = 13
    for secret in range(p):
        seen = {}
        for a1, a2 in itertools.product(range(p), repeat=2):
            draws = iter([a1, a2])
            s = secagg.shamir_split(secret, 3, [1, 2, 3], prime=p, randbelow=lambda _: next(draws))
            seen[(s[1], s[2])] = seen.get((s[1], s[2]), 0) + 1
        assert len(seen) == p * p and set(seen.values()) == {1}


# ----------------------------------------------------------------------------- protocol
def _deltas(seed, n_values=3000):
    rng = np.random.default_rng(seed)
    return {r: {"w": rng.normal(0, 0.2, n_values).astype(np.float32)} for r in ROBOTS}


def _setup(fleet, robots, threshold=3, round_id=7):
    """Advertise and share keys among ``robots`` (all of them complete both steps)."""
    signers = {r: generate_signing_key() for r in robots}
    pubs = {r: s.public_bytes() for r, s in signers.items()}
    clients = {r: SecAggClient.for_round(r, fleet_id=fleet.key_id, skill_id="door", base_version=0, round_id=round_id,
                                         signing_key=signers[r], threshold=threshold) for r in robots}
    roster = [c.advertise() for c in clients.values()]
    outbox = {r: c.share_keys(roster, pubs) for r, c in clients.items()}
    for r, c in clients.items():
        c.receive_shares({sender: msgs[r] for sender, msgs in outbox.items() if sender != r})
    return signers, clients, roster


def _run(fleet, clients, signers, roster, deltas, uploaders, responders, threshold=3, round_id=7):
    strategy = FedAvg(clip=1.0, secure_masks=True)
    plan = strategy.configure(round_id, "door", 0, sorted(clients))
    ctx = fleet.cloud_context()
    uploads = {r: strategy.encrypt_update(plan, fleet, r, deltas[r], signers[r], masker=clients[r]) for r in uploaders}
    agg = strategy.aggregate_encrypted(ctx, uploads.values())
    survivors = sorted(uploaders)
    responses = [clients[r].unmask_shares(survivors) for r in responders]
    vector = unmask_vector(context=clients[survivors[0]].context, roster=roster, cohort=clients[survivors[0]].cohort,
                           survivors=survivors, responses=responses, threshold=threshold,
                           num_values=agg.header["num_values"], plain_modulus=fleet.params.plain_modulus)
    return uploads, agg, ctx, vector


@pytest.fixture(scope="module")
def fleet():
    return generate_fleet_keys("rlwe")


@pytest.mark.parametrize("backend", ["rlwe", "tenseal"])
def test_two_dropouts_still_give_the_exact_sum(backend, fleet):
    """5 robots, t = 3: two drop after sharing keys (no upload) and the survivors' sum is
    exact; then all 5 upload but two vanish before unmasking: the sum of all 5 is exact."""
    if backend == "tenseal":
        pytest.importorskip("tenseal")
        fleet = generate_fleet_keys("tenseal")
    deltas = _deltas(1)
    signers, clients, roster = _setup(fleet, ROBOTS)
    uploaders = ROBOTS[:3]
    uploads, agg, ctx, vector = _run(fleet, clients, signers, roster, deltas, uploaders, uploaders)
    with pytest.raises(IncompleteMaskError, match="still masked"):
        fleet.decrypt_aggregate_quantized(agg)
    ctx.add_plaintext(agg, vector)
    expected = sum(quantize(deltas[r], 1.0, SCALE) for r in uploaders)
    assert np.array_equal(fleet.decrypt_aggregate_quantized(agg), expected)
    with pytest.raises(RoundMismatchError):
        ctx.add_plaintext(agg, vector)  # unmasking happens once

    signers, clients, roster = _setup(fleet, ROBOTS, round_id=8)
    uploads, agg, ctx, vector = _run(fleet, clients, signers, roster, deltas, ROBOTS, ROBOTS[2:], round_id=8)
    ctx.add_plaintext(agg, vector)
    assert np.array_equal(fleet.decrypt_aggregate_quantized(agg), sum(quantize(deltas[r], 1.0, SCALE) for r in ROBOTS))


def test_too_few_responses_or_survivors_are_refused(fleet):
    deltas = _deltas(2)
    signers, clients, roster = _setup(fleet, ROBOTS)
    with pytest.raises(SecAggError, match="below the threshold"):
        _run(fleet, clients, signers, roster, deltas, ROBOTS, ROBOTS[:2])
    with pytest.raises(SecAggError, match="below the threshold"):
        clients["robot-4"].unmask_shares(ROBOTS[3:])


def test_a_robot_never_reveals_both_shares_of_a_peer(fleet):
    """A cloud that tells robots different survivor lists could collect b_v and v's mask key;
    each robot answers one survivor list only, and never both shares for one peer."""
    _, clients, _ = _setup(fleet, ROBOTS)
    first = clients["robot-0"].unmask_shares(ROBOTS[:4])
    assert set(first["self_seed_shares"]) == set(ROBOTS[:4]) and set(first["mask_key_shares"]) == {"robot-4"}
    assert clients["robot-0"].unmask_shares(ROBOTS[:4]) == first  # same list: same answer
    with pytest.raises(SecAggError, match="different survivor list"):
        clients["robot-0"].unmask_shares(ROBOTS[:3] + ["robot-4"])


def test_roster_signatures_and_bindings_are_checked(fleet):
    signers = {r: generate_signing_key() for r in ROBOTS[:3]}
    pubs = {r: s.public_bytes() for r, s in signers.items()}
    clients = {r: SecAggClient(r, round_context("f", "door", 0, 1), signers[r]) for r in ROBOTS[:3]}
    roster = [c.advertise() for c in clients.values()]
    forged = dict(roster[1], mask_public=roster[2]["mask_public"])  # the cloud swaps a mask key
    with pytest.raises(Exception):
        clients["robot-0"].share_keys([roster[0], forged, roster[2]], pubs)
    with pytest.raises(SecAggError, match="below the threshold"):
        clients["robot-0"].share_keys(roster[:2], pubs)
    clients["robot-0"].threshold = 1  # as if the cloud announced t = 1
    with pytest.raises(SecAggError, match="not a majority"):
        clients["robot-0"].share_keys(roster, pubs)
    clients["robot-0"].threshold = None
    # a share relayed to the wrong robot does not decrypt
    outbox = {r: c.share_keys(roster, pubs) for r, c in clients.items()}
    with pytest.raises(SecAggError, match="authentication"):
        clients["robot-2"].receive_shares({"robot-0": outbox["robot-0"]["robot-1"]})


def test_cloud_and_one_robot_cannot_recover_another_robots_delta(fleet):
    """The coalition: the cloud (all uploads, all unmask responses, so every survivor's self
    seed) and robot-1 (the fleet key and its own pairwise masks). Decrypting robot-0's
    individual upload and removing everything the coalition knows still leaves noise:
    robot-0's pairwise masks with the three honest robots."""
    deltas = _deltas(3)
    signers, clients, roster = _setup(fleet, ROBOTS)
    uploads, agg, ctx, vector = _run(fleet, clients, signers, roster, deltas, ROBOTS, ROBOTS)
    t = fleet.params.plain_modulus
    single = ctx.add(None, uploads["robot-0"])  # the cloud holds robot-0's ciphertext alone
    single.header["mask_scheme"] = None  # even bypassing every check of the scheme ...
    single.header["mask_cohort"] = None
    seen = fleet.decrypt_aggregate_quantized(single).astype(np.int64) % t  # ... with the colluding robot's fleet key
    responses = [clients[r].unmask_shares(ROBOTS) for r in ROBOTS]
    pts = secagg.share_points(ROBOTS)
    seed0 = secagg.combine_bytes({pts[r["robot_id"]]: secagg._unb64(r["self_seed_shares"]["robot-0"]) for r in responses[:3]}, 32)
    ctx_str = clients["robot-0"].context
    n = seen.size
    seen = (seen - secagg._self_mask(seed0, ctx_str, "robot-0", n, t).astype(np.int64)) % t  # cloud removes b_0
    shared = clients["robot-1"]._mask_key.exchange(
        secagg.X25519PublicKey.from_public_bytes(secagg._unb64(roster[0]["mask_public"])))
    seen = (seen - secagg._pair_mask(shared, ctx_str, "robot-0", "robot-1", n, t).astype(np.int64)) % t  # robot-1's pair
    seen[seen > t // 2] -= t
    truth = quantize(deltas["robot-0"], 1.0, SCALE)
    assert np.count_nonzero(np.abs(seen - truth) < 2000) < 10  # the delta is nowhere visible
    assert abs(np.corrcoef(seen.astype(np.float64), truth.astype(np.float64))[0, 1]) < 0.15
    assert np.abs(seen).mean() > 2**28  # uniform over Z_t, not a delta of size ~2^13
    # control: the honest robots' pairwise masks (which the coalition lacks) are all that is left
    rest = seen % t
    for peer in ROBOTS[2:]:
        shared = clients[peer]._mask_key.exchange(
            secagg.X25519PublicKey.from_public_bytes(secagg._unb64(roster[0]["mask_public"])))
        rest = (rest - secagg._pair_mask(shared, ctx_str, "robot-0", peer, n, t).astype(np.int64)) % t
    rest[rest > t // 2] -= t
    assert np.array_equal(rest, truth)
    # sanity: the same subtraction on the honest total recovers the exact sum
    ctx.add_plaintext(agg, vector)
    assert np.array_equal(fleet.decrypt_aggregate_quantized(agg), sum(quantize(d, 1.0, SCALE) for d in deltas.values()))


def test_masks_are_on_by_default_for_cohorts_of_three_or_more():
    from scfl_nodes.core.config import config_from_dict
    from scfl_nodes.core.federation import strategy_from_config

    strategy = strategy_from_config(config_from_dict({}))
    assert strategy.secure_masks
    assert strategy.configure(1, "s", 0, ROBOTS[:3]).secure_masks
    assert not strategy.configure(1, "s", 0, ROBOTS[:2]).secure_masks  # two robots learn each other's delta anyway
    assert not strategy_from_config(config_from_dict({"federation": {"secure_masks": False}})).configure(1, "s", 0, ROBOTS).secure_masks


def test_a_late_robots_upload_stays_hidden_by_its_self_mask(fleet):
    """The cloud declares robot-4 dropped (it rebuilds robot-4's mask key from the survivors'
    shares, so it knows all of robot-4's pairwise masks), and then robot-4's upload arrives
    late anyway. Removing every pairwise mask still leaves PRG(b_4): noise."""
    deltas = _deltas(4)
    signers, clients, roster = _setup(fleet, ROBOTS)
    survivors = ROBOTS[:4]
    uploads, agg, ctx, vector = _run(fleet, clients, signers, roster, deltas, survivors, survivors)
    late = FedAvg(clip=1.0, secure_masks=True).encrypt_update(
        FedAvg(clip=1.0, secure_masks=True).configure(7, "door", 0, ROBOTS), fleet, "robot-4", deltas["robot-4"],
        signers["robot-4"], masker=clients["robot-4"])
    single = ctx.add(None, late)
    single.header["mask_scheme"] = single.header["mask_cohort"] = None
    t = fleet.params.plain_modulus
    seen = fleet.decrypt_aggregate_quantized(single).astype(np.int64) % t
    responses = [clients[r].unmask_shares(survivors) for r in survivors]
    pts = secagg.share_points(ROBOTS)
    raw = secagg.combine_bytes({pts[r["robot_id"]]: secagg._unb64(r["mask_key_shares"]["robot-4"]) for r in responses[:3]}, 32)
    key4 = secagg.X25519PrivateKey.from_private_bytes(raw)
    ctx_str = clients["robot-4"].context
    for peer, advert in zip(ROBOTS, roster):
        if peer == "robot-4":
            continue
        shared = key4.exchange(secagg.X25519PublicKey.from_public_bytes(secagg._unb64(advert["mask_public"])))
        stream = secagg._pair_mask(shared, ctx_str, peer, "robot-4", seen.size, t).astype(np.int64)
        seen = (seen + stream) % t  # robot-4 is the higher id: it subtracted every pair stream
    seen[seen > t // 2] -= t
    truth = quantize(deltas["robot-4"], 1.0, SCALE)
    assert np.count_nonzero(np.abs(seen - truth) < 2000) < 10
    assert np.abs(seen).mean() > 2**28
    # control: removing the self mask too (which the cloud never gets for a dropped robot) reveals the delta
    own = secagg._self_mask(clients["robot-4"]._self_seed, ctx_str, "robot-4", seen.size, t).astype(np.int64)
    revealed = (seen - own) % t
    revealed[revealed > t // 2] -= t
    assert np.array_equal(revealed, truth)
