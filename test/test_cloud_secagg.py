"""Secure aggregation with dropout recovery through a real cloud server (uvicorn subprocess,
SQLite), real RLWE encryption and real X25519/AES-GCM/Shamir: 5 robots, t = 3."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cloud_fixtures import DB_KINDS, SHAPES, make_db_url
from cloud_fixtures import fleet_key, pg_cluster  # noqa: F401  (fixtures)
from scfl_cloud.blobstore import LocalBlobStore
from scfl_cloud.client import CloudError
from scfl_cloud.secagg_client import SecAggSession
from scfl_cloud.testing import CloudServer
from scfl_nodes.core.crypto import EncryptedAggregate, generate_signing_key, quantize
from scfl_nodes.core.federation import FedAvg, SecAggClient

pytestmark = pytest.mark.timeout(300)
SCALE = 2**15


@pytest.fixture(scope="module", params=DB_KINDS)
def cloud(request, tmp_path_factory, fleet_key):
    storage = tmp_path_factory.mktemp(f"cloud-secagg-{request.param}")
    # --keep-deltas: the coalition check reads a stored upload after publish (pruned by default);
    # --min-participants 1: a 2-robot round is opened to be refused secagg (the default floor is 3)
    server = CloudServer(storage, make_db_url(request.param, request, storage),
                         extra_args=["--keep-deltas", "--min-participants", "1"]).start()
    admin = server.admin_client()
    admin.put_fleet_context(fleet_key.cloud_context())
    yield server, admin, storage
    server.stop()


class Bot:
    def __init__(self, name, admin, fleet_key, seed):
        self.name = name
        self.signer = generate_signing_key()
        self.token = admin.register_robot(name, self.signer.public_bytes())
        rng = np.random.default_rng(seed)
        self.delta = {n: rng.normal(0, 0.1, s).astype(np.float32) for n, s in SHAPES}
        self.fleet_key = fleet_key


def _round(server, admin, fleet_key, bots, skill, *, deadline_s):
    rnd = admin.open_round(skill, base_version=0, quorum=len(bots), deadline_s=deadline_s)
    rid = rnd["round_id"]
    state = admin._json("POST", f"/api/v1/rounds/{rid}/secagg", json={"threshold": 3}, token=admin.admin_token)
    assert state["stage"] == "advertise" and state["threshold"] == 3
    pubs = {b.name: b.signer.public_bytes() for b in bots}
    sessions = {}
    for b in bots:
        sa = SecAggClient.for_round(b.name, fleet_id=fleet_key.key_id, skill_id=skill, base_version=0, round_id=rid,
                                    signing_key=b.signer)
        sessions[b.name] = SecAggSession(server.client(b.token), b.token, sa, rid, robot_public_keys=pubs)
        sessions[b.name].advertise()
    for s in sessions.values():
        s.share()
    for s in sessions.values():
        assert s.collect() == sorted(pubs)
    plan = FedAvg(clip=1.0, secure_masks=True).configure(rid, skill, 0, sorted(pubs))
    return rid, plan, sessions


def _upload(server, fleet_key, bot, plan, session):
    enc = FedAvg(clip=1.0, secure_masks=True).encrypt_update(plan, fleet_key, bot.name, bot.delta, bot.signer,
                                                            masker=session.client)
    blob = enc.to_bytes()
    receipt = server.client(bot.token).upload_delta(bot.token, blob)
    assert receipt["sha256"] == hashlib.sha256(blob).hexdigest()
    return receipt


def _exact(fleet_key, bots):
    return sum(quantize(b.delta, 1.0, SCALE) for b in bots)


def test_two_dropouts_after_upload_still_give_the_exact_sum(cloud, fleet_key):
    """All 5 robots upload masked deltas, then 2 vanish before unmasking: the 3 survivors'
    shares (t = 3) let the cloud remove all self masks; the published aggregate is the
    exact sum of all 5 deltas. The cloud + one robot see only noise in robot 0's upload."""
    server, admin, storage = cloud
    skill = admin.create_skill("wipe", ["wipe the table"], skill_id="skill_secagg_a")["skill_id"]
    bots = [Bot(f"sa-{i}", admin, fleet_key, i) for i in range(5)]
    with pytest.raises(CloudError) as info:
        admin._json("POST", f"/api/v1/rounds/{admin.open_round(skill, 0, quorum=5, deadline_s=1)['round_id']}/secagg",
                    json={"threshold": 2}, token=admin.admin_token)
    assert info.value.code == "invalid_threshold"  # 2 of 5 is not a majority
    admin.wait_for_round(admin.list_rounds()[0]["round_id"], "expired", timeout=30)
    rid, plan, sessions = _round(server, admin, fleet_key, bots, skill, deadline_s=120)
    receipts = {b.name: _upload(server, fleet_key, b, plan, sessions[b.name]) for b in bots}
    for b in bots[2:]:  # robots 0 and 1 drop out now
        sessions[b.name].unmask()
    info = admin.wait_for_round(rid, "published", timeout=60)
    assert info["state"] == "published" and info["accepted"] == 5
    agg = EncryptedAggregate.from_bytes(admin.download_aggregate(rid))
    assert np.array_equal(fleet_key.decrypt_aggregate_quantized(agg), _exact(fleet_key, bots))
    state = admin._json("GET", f"/api/v1/rounds/{rid}/secagg", token=admin.admin_token)
    assert state["stage"] == "done" and state["dropped"] == []

    # the coalition: the cloud's stored ciphertext of robot 0, decrypted with a robot's fleet key
    from scfl_nodes.core.crypto import EncryptedDelta

    upload = EncryptedDelta.from_bytes(LocalBlobStore(storage / "blobs").get(receipts["sa-0"]["sha256"]))
    single = fleet_key.cloud_context().add(None, upload)
    single.header["mask_scheme"] = single.header["mask_cohort"] = None  # bypass the "still masked" refusal
    seen = fleet_key.decrypt_aggregate_quantized(single)
    truth = quantize(bots[0].delta, 1.0, SCALE)
    assert np.count_nonzero(np.abs(seen - truth) < 2000) < 10
    assert abs(np.corrcoef(seen.astype(np.float64), truth.astype(np.float64))[0, 1]) < 0.15
    assert np.abs(seen).mean() > 2**28  # uniform noise over Z_t, the delta is ~2^12


def test_two_dropouts_before_upload_still_give_the_exact_sum_of_the_survivors(cloud, fleet_key):
    """Robots 3 and 4 share keys but never upload: the round closes at its deadline with 3
    uploads, the survivors reveal the dropped robots' mask-key shares, and the published
    aggregate is the exact sum of the 3 survivors' deltas."""
    server, admin, _ = cloud
    skill = admin.create_skill("fold", ["fold the towel"], skill_id="skill_secagg_b")["skill_id"]
    bots = [Bot(f"sb-{i}", admin, fleet_key, 10 + i) for i in range(5)]
    rid, plan, sessions = _round(server, admin, fleet_key, bots, skill, deadline_s=8)
    for b in bots[:3]:
        _upload(server, fleet_key, b, plan, sessions[b.name])
    with pytest.raises(CloudError) as info:  # an unmasked delta is refused in a secagg round
        plain = FedAvg(clip=1.0).encrypt_update(FedAvg(clip=1.0).configure(rid, skill, 0, [b.name for b in bots]),
                                                fleet_key, bots[3].name, bots[3].delta, bots[3].signer)
        server.client(bots[3].token).upload_delta(bots[3].token, plain.to_bytes())
    assert info.value.code == "secagg_mismatch"
    for b in bots[:3]:
        sessions[b.name].timeout_s = 60
        sessions[b.name].unmask()
    surv = admin._json("GET", f"/api/v1/rounds/{rid}/secagg/survivors", token=admin.admin_token)
    assert surv["survivors"] == [b.name for b in bots[:3]] and surv["dropped"] == [b.name for b in bots[3:]]
    admin.wait_for_round(rid, "published", timeout=60)
    agg = EncryptedAggregate.from_bytes(admin.download_aggregate(rid))
    assert agg.count == 3
    assert np.array_equal(fleet_key.decrypt_aggregate_quantized(agg), _exact(fleet_key, bots[:3]))


def test_secagg_needs_three_robots_and_refuses_misuse(cloud, fleet_key):
    server, admin, _ = cloud
    skill = admin.create_skill("pour", ["pour water"], skill_id="skill_secagg_c")["skill_id"]
    rnd = admin.open_round(skill, base_version=0, quorum=2, deadline_s=60)
    with pytest.raises(CloudError) as info:
        admin._json("POST", f"/api/v1/rounds/{rnd['round_id']}/secagg", json={}, token=admin.admin_token)
    assert info.value.code == "cohort_too_small"
    bot = Bot("sc-0", admin, fleet_key, 0)
    with pytest.raises(CloudError) as info:  # a round without secagg has no key stage
        server.client(bot.token)._json("GET", f"/api/v1/rounds/{rnd['round_id']}/secagg/keys", token=bot.token)
    assert info.value.code == "no_secagg"
