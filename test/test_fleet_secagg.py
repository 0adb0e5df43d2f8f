"""Secure aggregation by default, end to end: the fleet's robots run their own FederationClient
against the real cloud server (uvicorn subprocess, SQLite), real RLWE encryption, real
X25519/AES-GCM/Shamir. Nobody calls the secagg endpoints by hand: the cloud makes every
round of >= 3 robots a secure-aggregation round, the robots' clients see that in the round
info and run the stages themselves."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest

from scfl_nodes.core.crypto import EncryptedDelta, quantize
from scfl_nodes.core.federation import FedAvg
from scfl_nodes.core.federation.client import LocalUpdate
from scfl_nodes.core.federation.codecs import EncryptedCodec, PlainCodec
from scfl_nodes.core.federation.inprocess import InProcessCloud
from scfl_nodes.core.fleet import federation as fed

pytestmark = pytest.mark.timeout(300)
SCALE = 2.0**15  # rlwe-n2048-q48-t32 quantization scale
ROBOTS = [f"r{i}" for i in range(4)]
SAMPLES = {"r0": 1500, "r1": 150, "r2": 800, "r3": 400}
CAP = 2000


@pytest.fixture(scope="module")
def cloud_fleet(tmp_path_factory):
    from scfl_nodes.core.crypto import generate_fleet_keys
    from scfl_nodes.core.fleet.cloud import FleetCloud

    with FleetCloud(tmp_path_factory.mktemp("cloud")) as cloud:
        key = generate_fleet_keys("rlwe")
        robots = cloud.register_fleet(key, ROBOTS)
        yield cloud, key, robots


def _weights(seed):
    rng = np.random.default_rng(seed)
    parent = {"w": rng.normal(0, 1, (6, 5)).astype(np.float32), "b": rng.normal(0, 1, 5).astype(np.float32)}
    new = {r: {k: v + rng.normal(0, 0.05, v.shape).astype(np.float32) for k, v in parent.items()} for r in ROBOTS}
    return parent, new


def _weighted_mean(parent, new, robots):
    w = {r: min(SAMPLES[r], CAP) / CAP for r in robots}
    return {k: v + sum(w[r] * np.clip(new[r][k] - v, -1, 1) for r in robots) / sum(w.values()) for k, v in parent.items()}


def _enc_federation(cloud_fleet, tag, **kw):
    cloud, key, robots = cloud_fleet
    strategy = FedAvg(clip=1.0, sample_weighted=True, sample_cap=CAP, secure_masks=True)
    codecs = {r: EncryptedCodec(key, robots[r][0], num_clients=len(ROBOTS)) for r in ROBOTS}
    return fed.FleetFederation(cloud.client, strategy, codecs, {r: robots[r][1] for r in ROBOTS}, run_tag=tag, **kw)


def _secagg_state(cloud, round_id):
    return cloud.client.secagg(cloud.admin_token, round_id, "GET")


def test_fleet_federates_through_secure_aggregation_by_default(cloud_fleet, tmp_path):
    cloud, key, robots = cloud_fleet
    parent, new = _weights(0)
    strategy = FedAvg(clip=1.0, sample_weighted=True, sample_cap=CAP, secure_masks=True)
    plain = fed.FleetFederation(InProcessCloud(), strategy, {r: PlainCodec() for r in ROBOTS}, {}, run_tag="sa")
    enc = _enc_federation(cloud_fleet, "sa", workdir=tmp_path, reference=plain)
    updates = {r: {"grasp": dict(parent=parent, new=new[r], num_samples=SAMPLES[r])} for r in ROBOTS}
    got = enc.round(0, updates)

    (rnd,) = [r for r in cloud.client.list_rounds() if r["skill_id"] == "sa.grasp"]
    assert rnd["secure_aggregation"] and rnd["state"] == "published" and rnd["accepted"] == 4
    state = _secagg_state(cloud, rnd["round_id"])
    assert state["stage"] == "done" and state["cohort"] == ROBOTS and state["dropped"] == []
    # the installed aggregate is the sample-weighted FedAvg of the clipped deltas, up to quantization
    expected = _weighted_mean(parent, new, ROBOTS)
    bound = (2 * len(ROBOTS) * CAP / sum(SAMPLES.values())) / SCALE
    for r in ROBOTS:
        for k in parent:
            assert np.max(np.abs(got[r]["grasp"][k] - expected[k])) <= bound + 1e-6
        assert all(np.array_equal(got[r]["grasp"][k], got["r0"]["grasp"][k]) for k in parent)
    assert 0 < enc.max_abs_error <= bound
    assert max(float(np.max(np.abs(got["r0"]["grasp"][k] - parent[k]))) for k in parent) > 1e-3

    # what the cloud stored of robot r0 (same bytes: the receipt's SHA-256), decrypted with a
    # robot's fleet key, is noise: the masks hide the delta from the cloud + any one robot
    (sent,) = sorted((tmp_path / "r0" / "sent").glob("*.delta"))
    blob = sent.read_bytes()
    receipt = json.loads(sent.with_suffix(".json").read_text())["receipt"]
    assert receipt["sha256"] == hashlib.sha256(blob).hexdigest()
    upload = EncryptedDelta.from_bytes(blob)
    assert upload.header["mask_scheme"] == "secagg" and upload.header["mask_cohort"] == ROBOTS
    single = key.cloud_context().add(None, upload)
    single.header["mask_scheme"] = single.header["mask_cohort"] = None  # bypass the "still masked" refusal
    seen = key.decrypt_aggregate_quantized(single)
    w0 = min(SAMPLES["r0"], CAP) / CAP
    delta = {k: np.clip(new["r0"][k] - parent[k], -1, 1) * w0 for k in parent}
    delta["__weight__"] = np.array([w0], np.float32)
    truth = quantize(delta, 1.0, SCALE)
    assert seen.shape == truth.shape
    assert np.count_nonzero(np.abs(seen - truth) < 2000) < 3
    assert np.abs(seen).mean() > 2**28  # uniform over Z_t; the delta is ~2^11
    enc.close()


def test_robot_dropping_after_upload_still_gives_the_exact_sum(cloud_fleet):
    """All 4 robots upload; r3 then goes dark and never reveals its unmask shares. The 3 others
    (threshold 3 of 4) suffice: every survivor's self mask is removed and the published
    aggregate is the exact FedAvg of all 4 deltas."""
    cloud, key, robots = cloud_fleet
    parent, new = _weights(1)
    enc = _enc_federation(cloud_fleet, "drop")
    skill = "drop.grasp"
    cloud.client.create_skill(skill, [], skill_id=skill, description="dropout test")
    rid = int(cloud.client.open_round(skill, 0, len(ROBOTS), 300)["round_id"])
    for r in ROBOTS:
        enc.stores[r].updates["u"] = LocalUpdate(skill, parent=parent, new=new[r], num_samples=SAMPLES[r])
        enc.clients[r].enqueue({"skill_id": skill, "key": "u"}, name="u")
    dropper, others = enc.clients["r3"], [enc.clients[r] for r in ROBOTS[:3]]
    deadline = time.monotonic() + 120
    while dropper.uploads_ok == 0:  # r3 runs its client up to its upload, never to the unmask step
        assert time.monotonic() < deadline, "r3 never uploaded"
        dropper.prepare_waiting()
        dropper.upload_pending()
        for c in others:
            c.step()
        time.sleep(0.02)
    assert dropper.secure_rounds[rid].stage == "uploaded"
    enc.run_until_idle(others)
    info = cloud.client.round_status(rid)
    assert info["state"] == "published" and info["accepted"] == 4
    state = _secagg_state(cloud, rid)
    assert state["stage"] == "done" and state["survivors"] == ROBOTS and state["threshold"] == 3
    assert dropper.secure_rounds[rid].stage == "uploaded"  # r3 revealed nothing
    expected = _weighted_mean(parent, new, ROBOTS)
    bound = (2 * len(ROBOTS) * CAP / sum(SAMPLES.values())) / SCALE
    installed = enc.stores["r0"].installed["u"]
    for k in parent:
        assert np.max(np.abs(installed[k] - expected[k])) <= bound + 1e-6
    enc.close()


def test_plain_round_on_request_and_opted_out_robots_refuse_secure_rounds(cloud_fleet, tmp_path):
    """secure_aggregation=false opens a plain round of 4 (the explicit opt-out), and a robot
    with federation.secure_masks off never uploads unmasked into a secure round."""
    cloud, key, robots = cloud_fleet
    parent, new = _weights(2)
    skill = "optout.grasp"
    cloud.client.create_skill(skill, [], skill_id=skill, description="opt-out test")
    plain_rid = int(cloud.client.open_round(skill, 0, 4, 300, secure_aggregation=False)["round_id"])
    assert not cloud.client.round_status(plain_rid)["secure_aggregation"]
    cloud.client.cancel_round(plain_rid)
    secure_rid = int(cloud.client.open_round(skill, 0, 4, 300)["round_id"])
    assert cloud.client.round_status(secure_rid)["secure_aggregation"]
    strategy = FedAvg(clip=1.0, secure_masks=False)
    codec = EncryptedCodec(key, robots["r0"][0], num_clients=4)
    enc = fed.FleetFederation(cloud.client, strategy, {"r0": codec}, {"r0": robots["r0"][1]}, run_tag="optout",
                              workdir=tmp_path)
    enc.stores["r0"].updates["u"] = LocalUpdate(skill, parent=parent, new=new["r0"], num_samples=10)
    client = enc.clients["r0"]
    client.enqueue({"skill_id": skill, "key": "u"}, name="u")
    client.step()
    assert client.uploads_ok == 0 and "secure_masks is off" in client.last["error"]
    assert list((tmp_path / "r0" / "rejected").iterdir())  # kept on disk with the reason, not lost
    assert cloud.client.round_status(secure_rid)["accepted"] == 0
    cloud.client.cancel_round(secure_rid)
    enc.close()
