"""End-to-end tests of the cloud over real HTTP (uvicorn subprocess on loopback), with real
encryption (ISSUE 3 ring-LWE), on SQLite AND on a real PostgreSQL server."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import socket
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from cloud_fixtures import DB_KINDS, RobotHelper, blob_files, expected_sum, format1_delta, make_db_url
from cloud_fixtures import fleet_key, pg_cluster  # noqa: F401  (fixtures)
from scfl_cloud.client import CloudError
from scfl_cloud.db import make_engine
from scfl_cloud.models import Delta, Robot, Round, Skill, SkillVersion
from scfl_cloud.testing import CloudServer

pytestmark = pytest.mark.timeout(300)

MAX_UPLOAD = 200_000  # test deltas are ~20 kB; anything above this is "oversized"


@pytest.fixture(scope="module", params=DB_KINDS)
def cloud(request, tmp_path_factory, fleet_key):
    storage = tmp_path_factory.mktemp(f"cloud-{request.param}")
    db_url = make_db_url(request.param, request, storage)
    server = CloudServer(storage, db_url, max_upload_bytes=MAX_UPLOAD).start()
    admin = server.admin_client()
    admin.put_fleet_context(fleet_key.cloud_context())
    engine = make_engine(db_url)
    yield server, admin, engine
    engine.dispose()
    server.stop()


def snapshot(engine, storage) -> dict:
    """Everything a rejected request must leave untouched."""
    with engine.connect() as c:
        return {
            "robots": c.execute(select(Robot.robot_id, Robot.token_hash, Robot.revoked).order_by(Robot.robot_id)).all(),
            "skills": c.scalar(select(func.count()).select_from(Skill)),
            "versions": c.execute(select(SkillVersion.skill_id, SkillVersion.version).order_by(SkillVersion.id)).all(),
            "rounds": c.execute(select(Round.round_id, Round.state, Round.accepted_count, Round.folded_count,
                                       Round.sum_blob_sha256).order_by(Round.round_id)).all(),
            "deltas": c.execute(select(Delta.round_id, Delta.robot_id, Delta.blob_sha256).order_by(Delta.id)).all(),
            "blobs": blob_files(storage),
        }


def upload_or_code(server, token: str, blob: bytes, field: str = "kind"):
    """The upload receipt's ``field``, or the error code the cloud refused the upload with."""
    try:
        return server.client(token).upload_delta(token, blob)[field]
    except CloudError as exc:
        return exc.code


def wait_folded(admin, round_id, n, timeout=30):
    deadline = time.monotonic() + timeout
    while admin.round_status(round_id)["folded"] < n:
        assert time.monotonic() < deadline, "worker did not fold in time"
        time.sleep(0.05)


def expect_error(status, code, fn, *args, **kw):
    with pytest.raises(CloudError) as info:
        fn(*args, **kw)
    assert (info.value.status, info.value.code) == (status, code), info.value
    return info.value


def test_five_robot_round_decrypts_to_exact_sum(cloud, fleet_key):
    server, admin, engine = cloud
    skill = admin.create_skill("stack", ["stack two plates"], skill_id="skill_e2e")["skill_id"]
    robots = [RobotHelper(f"e2e-{i}", admin, fleet_key, seed=i) for i in range(5)]
    rnd = admin.open_round(skill, base_version=0, quorum=5, deadline_s=120, secure_aggregation=False)
    assert rnd["state"] == "open" and rnd["accepted"] == 0
    plain = []
    for i, bot in enumerate(robots):
        tensors, blob = bot.delta(skill, rnd["round_id"])
        receipt = server.client(bot.token).upload_delta(bot.token, blob)
        assert receipt["accepted_in_round"] == i + 1 and receipt["sha256"] == hashlib.sha256(blob).hexdigest()
        plain.append(tensors)
    assert receipt["round_state"] == "closed"
    info = admin.wait_for_round(rnd["round_id"], timeout=60)
    assert info["state"] == "published" and info["close_reason"] == "quorum"
    assert info["accepted"] == info["folded"] == 5
    assert sorted(info["contributors"]) == sorted(b.robot_id for b in robots)

    # a robot downloads the aggregate and decrypts the exact plaintext sum
    from scfl_nodes.core.crypto import EncryptedAggregate

    robot_client = server.client(robots[2].token)
    agg = EncryptedAggregate.from_bytes(robot_client.download_aggregate(rnd["round_id"]))
    assert agg.count == 5
    got = fleet_key.decrypt_aggregate(agg)
    want = expected_sum(fleet_key, plain)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    # and it is close to the float sum (quantisation only)
    np.testing.assert_allclose(got["w"], sum(t["w"] for t in plain), atol=5 * 2.0 ** -fleet_key.params.scale_bits)

    # the aggregate is published as a new skill version with lineage
    detail = robot_client.get_skill(skill)
    (v1,) = detail["versions"]
    assert v1["version"] == 1 and v1["payload_format"] == "encrypted_aggregate" and v1["num_contributors"] == 5
    assert v1["round_id"] == rnd["round_id"] and v1["parent_version"] is None
    assert robot_client.download_skill_version(skill, 1) == robot_client.download_aggregate(rnd["round_id"])

    # next round trains on v1 -> v2 with parent 1 (3 robots: the cloud's floor)
    rnd2 = admin.open_round(skill, base_version=1, quorum=3, deadline_s=120, secure_aggregation=False)
    for bot in robots[:3]:
        _, blob = bot.delta(skill, rnd2["round_id"], base_version=1)
        server.client(bot.token).upload_delta(bot.token, blob)
    info2 = admin.wait_for_round(rnd2["round_id"], timeout=60)
    v2 = robot_client.get_skill(skill)["versions"][-1]
    assert (info2["published_version"], v2["version"], v2["parent_version"], v2["num_contributors"]) == (2, 2, 1, 3)

    # only token hashes are stored
    with engine.connect() as conn:
        stored = conn.execute(select(Robot.token_hash).where(Robot.robot_id == "e2e-0")).scalar_one()
    assert stored == hashlib.sha256(robots[0].token.encode()).hexdigest() and robots[0].token not in stored

    status = admin.status()
    assert status["latencies"]["fold_per_delta"]["count"] >= 8
    assert any(r["robot_id"] == "e2e-0" and r["last_seen_at"] for r in status["robot_list"])
    # robots (and anonymous readers) see counts, not identities
    public = robot_client.status()
    assert public["robot_list"] == [] and public["robots"] >= 5
    assert all(r["contributors"] == [] for r in public["rounds"])
    assert robot_client.round_status(rnd["round_id"])["contributors"] == []
    assert httpx.get(server.url + "/cloud/status").json()["robot_list"] == []


def test_rejected_requests_change_nothing(cloud, fleet_key):
    server, admin, engine = cloud
    storage = server.storage_dir
    skill = admin.create_skill("pour", ["pour water into the cup"], skill_id="skill_reject")["skill_id"]
    a, b, c = (RobotHelper(f"rej-{n}", admin, fleet_key, seed=10 + i) for i, n in enumerate("abc"))
    rnd = admin.open_round(skill, base_version=0, quorum=3, deadline_s=120, secure_aggregation=False)
    rid = rnd["round_id"]
    ta, blob_a = a.delta(skill, rid)
    server.client(a.token).upload_delta(a.token, blob_a)
    wait_folded(admin, rid, 1)
    before = snapshot(engine, storage)
    up_b = server.client(b.token)

    # bad signature: b's delta signed with a key that is not b's registered key
    from scfl_nodes.core.crypto import generate_fleet_keys, generate_signing_key

    _, forged = b.delta(skill, rid, signing_key=generate_signing_key())
    expect_error(401, "bad_signature", up_b.upload_delta, b.token, forged)
    # tampered ciphertext (one flipped bit)
    _, good_b = b.delta(skill, rid)
    flipped = bytearray(good_b)
    flipped[len(flipped) // 2] ^= 0x01
    err = expect_error(422, "tampered", up_b.upload_delta, b.token, bytes(flipped))
    assert "Tampered" in err.detail
    expect_error(422, "tampered", up_b.upload_delta, b.token, b"definitely not a ciphertext")
    # duplicate: a uploads a second delta to the same round
    _, again = a.delta(skill, rid)
    expect_error(409, "duplicate_upload", server.client(a.token).upload_delta, a.token, again)
    expect_error(409, "duplicate_upload", server.client(a.token).upload_delta, a.token, blob_a)
    # wrong token / no token / admin endpoint with a robot token / b's token with c's delta
    expect_error(401, "unauthorized", up_b.upload_delta, "not-a-token", good_b)
    expect_error(401, "unauthorized", server.client().upload_delta, None, good_b)
    expect_error(401, "unauthorized", server.client(b.token).list_robots)
    robot_as_admin = server.client()
    robot_as_admin.admin_token = b.token
    expect_error(401, "unauthorized", robot_as_admin.open_round, skill, 0, 3, 60)
    _, blob_c = c.delta(skill, rid)
    expect_error(403, "robot_mismatch", up_b.upload_delta, b.token, blob_c)
    # unknown skill (in the delta, on GET, when opening a round)
    _, unknown = b.delta("skill_nope", rid)
    expect_error(404, "unknown_skill", up_b.upload_delta, b.token, unknown)
    expect_error(404, "unknown_skill", up_b.get_skill, "skill_nope")
    expect_error(404, "unknown_skill", admin.open_round, "skill_nope", 0, 3, 60)
    # wrong base version, unknown round, wrong shapes, wrong fleet key
    _, wrong_base = b.delta(skill, rid, base_version=7)
    expect_error(422, "wrong_base_version", up_b.upload_delta, b.token, wrong_base)
    _, wrong_round = b.delta(skill, rid + 1000)
    expect_error(404, "unknown_round", up_b.upload_delta, b.token, wrong_round)
    _, wrong_shape = b.delta(skill, rid, shapes=[["w", [8, 8]]])
    expect_error(422, "wrong_shapes", up_b.upload_delta, b.token, wrong_shape)
    other_fleet = RobotHelper.__new__(RobotHelper)
    other_fleet.__dict__.update(b.__dict__, fleet_key=generate_fleet_keys("rlwe"))
    _, foreign = other_fleet.delta(skill, rid)
    expect_error(422, "wrong_key_id", up_b.upload_delta, b.token, foreign)
    # a header naming another backend / parameter set under the fleet's key id (signed by b itself)
    from scfl_nodes.core.crypto import EncryptedDelta
    from scfl_nodes.core.crypto.wire import MAGIC_DELTA, pack

    template = EncryptedDelta.from_bytes(good_b)
    for field, value, code in (("params_id", "rlwe-n1024-q32-t16", "wrong_parameters"),
                               ("backend", "tenseal", "wrong_backend")):
        prefix, digest = pack(MAGIC_DELTA, dict(template.header, **{field: value}), template.payload)
        resigned = prefix + digest + b.signing_key.sign(digest)
        expect_error(422, code, up_b.upload_delta, b.token, resigned)
    # a delta format this build does not know (a newer robot build), properly signed
    prefix, digest = pack(MAGIC_DELTA, dict(template.header, version=3), template.payload, version=3)
    err = expect_error(422, "wrong_parameters", up_b.upload_delta, b.token, prefix + digest + b.signing_key.sign(digest))
    assert "unsupported format version 3 (this build reads 1, 2)" in err.detail
    # overflow risk: a clip so large that quorum x clip could wrap the plaintext modulus
    from scfl_nodes.core.crypto import encrypt_delta

    big_clip = encrypt_delta(fleet_key, {"w": np.zeros((48, 32), np.float32), "b": np.zeros(32, np.float32)},
                             skill_id=skill, base_version=0, round_id=rid, robot_id=b.robot_id,
                             signing_key=b.signing_key, clip=30000.0, num_clients=1).to_bytes()
    expect_error(422, "overflow_risk", up_b.upload_delta, b.token, big_clip)
    # no secret key material: a fleet SECRET key offered as context; a private key as public key
    expect_error(400, "secret_key_refused", admin.put_fleet_context, fleet_key.to_bytes())
    pem = generate_signing_key().to_pem()
    r = httpx.post(server.url + "/api/v1/robots", json={"robot_id": "evil", "public_key": pem.decode()},
                   headers={"Authorization": f"Bearer {server.admin_token}"})
    assert r.status_code == 400 and r.json()["error"] == "secret_key_refused"
    r = httpx.post(server.url + "/api/v1/robots", headers={"Authorization": f"Bearer {server.admin_token}"},
                   json={"robot_id": "short", "public_key": base64.b64encode(b"x" * 16).decode()})
    assert r.status_code == 422 and r.json()["error"] == "invalid_public_key"
    expect_error(409, "robot_exists", admin.register_robot, a.robot_id, a.signing_key.public_bytes())

    # oversized bodies are refused from the headers, before the body is read
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall((f"POST /api/v1/skills/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {b.token}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: 5000000000\r\n\r\n").encode()
                     + b"\0" * 1024)
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    big = good_b + b"\0" * MAX_UPLOAD
    expect_error(413, "payload_too_large", up_b.upload_delta, b.token, big)
    r = httpx.post(server.url + "/api/v1/skills/upload", headers={"Authorization": f"Bearer {b.token}"},
                   content=(big[i:i + 65536] for i in range(0, len(big), 65536)))  # chunked, no length
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    after = snapshot(engine, storage)
    assert after == before

    # the round still completes normally
    tb, blob_b = b.delta(skill, rid)
    up_b.upload_delta(b.token, blob_b)
    tc, blob_c = c.delta(skill, rid)
    server.client(c.token).upload_delta(c.token, blob_c)
    info = admin.wait_for_round(rid, timeout=60)
    assert info["state"] == "published" and info["accepted"] == 3
    from scfl_nodes.core.crypto import EncryptedAggregate

    got = fleet_key.decrypt_aggregate(EncryptedAggregate.from_bytes(admin.download_aggregate(rid)))
    want = expected_sum(fleet_key, [ta, tb, tc])
    assert all(np.array_equal(got[k], want[k]) for k in want)
    # a closed round refuses late uploads
    d = RobotHelper("rej-late", admin, fleet_key, seed=99)
    _, late = d.delta(skill, rid)
    expect_error(409, "round_closed", server.client(d.token).upload_delta, d.token, late)


def test_format_1_delta_of_a_robot_not_yet_updated_joins_a_round(cloud, fleet_key):
    """Rolling upgrade: a robot still on the previous build uploads a format-1 delta (``a``
    from SHAKE-128) into a round with format-2 (AES-128-CTR) deltas; the cloud accepts it,
    folds both formats into one sum and the published aggregate decrypts exactly."""
    server, admin, _engine = cloud
    skill = admin.create_skill("wipe", ["wipe the table"], skill_id="skill_format1")["skill_id"]
    robots = [RobotHelper(f"fmt-{i}", admin, fleet_key, seed=40 + i) for i in range(3)]
    rid = admin.open_round(skill, base_version=0, quorum=3, deadline_s=120, secure_aggregation=False)["round_id"]
    old = {name: robots[0].rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in (("b", (32,)), ("w", (48, 32)))}
    blob = format1_delta(fleet_key, old, skill_id=skill, round_id=rid, robot_id=robots[0].robot_id,
                         signing_key=robots[0].signing_key)
    assert blob[8:10] == b"\x01\x00"
    server.client(robots[0].token).upload_delta(robots[0].token, blob)
    plain = [old]
    for bot in robots[1:]:
        tensors, blob = bot.delta(skill, rid)
        assert blob[8:10] == b"\x02\x00"
        server.client(bot.token).upload_delta(bot.token, blob)
        plain.append(tensors)
    info = admin.wait_for_round(rid, timeout=60)
    assert info["state"] == "published" and info["folded"] == 3
    from scfl_nodes.core.crypto import EncryptedAggregate

    got = fleet_key.decrypt_aggregate(EncryptedAggregate.from_bytes(admin.download_aggregate(rid)))
    want = expected_sum(fleet_key, plain)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_quorum_closes_under_concurrent_uploads(cloud, fleet_key):
    server, admin, engine = cloud
    skill = admin.create_skill("race", ["race to upload"], skill_id="skill_race")["skill_id"]
    bots = [RobotHelper(f"race-{i}", admin, fleet_key, seed=100 + i) for i in range(6)]
    rid = admin.open_round(skill, 0, quorum=4, deadline_s=120, secure_aggregation=False)["round_id"]
    blobs = [(bot, bot.delta(skill, rid)[1]) for bot in bots]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda item: upload_or_code(server, item[0].token, item[1]), blobs))
    assert sorted(results) == ["delta"] * 4 + ["round_closed"] * 2
    info = admin.wait_for_round(rid, timeout=60)
    assert info["accepted"] == info["folded"] == 4 and len(info["contributors"]) == 4


def test_a_robot_racing_itself_gets_exactly_one_delta_in(cloud, fleet_key):
    """Six different deltas of one robot to one round at once: whichever gets in first is the
    robot's delta; the others are refused as duplicates, by the pre-check or, when they pass it
    together, by the database's one-delta-per-robot constraint; no refused blob stays stored."""
    server, admin, engine = cloud
    skill = admin.create_skill("self-race", ["race yourself"], skill_id="skill_self_race")["skill_id"]
    bot = RobotHelper("self-race", admin, fleet_key, seed=150)
    rid = admin.open_round(skill, 0, quorum=3, deadline_s=120, secure_aggregation=False)["round_id"]
    blobs = [bot.delta(skill, rid)[1] for _ in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda blob: upload_or_code(server, bot.token, blob, "sha256"), blobs))
    accepted = [r for r in results if r != "duplicate_upload"]
    assert len(accepted) == 1 and results.count("duplicate_upload") == 5, results
    info = admin.round_status(rid)
    assert (info["state"], info["accepted"], info["contributors"]) == ("open", 1, ["self-race"])
    digests = {hashlib.sha256(b).hexdigest() for b in blobs}
    assert digests & blob_files(server.storage_dir) == set(accepted)


def test_deadline_closes_partial_round_and_expires_empty_one(cloud, fleet_key):
    server, admin, engine = cloud
    skill = admin.create_skill("late", ["close at the deadline"], skill_id="skill_deadline")["skill_id"]
    bots = [RobotHelper(f"dl-{i}", admin, fleet_key, seed=200 + i) for i in range(3)]
    rid = admin.open_round(skill, 0, quorum=5, deadline_s=4.0, secure_aggregation=False)["round_id"]
    plain = []
    for bot in bots:
        t, blob = bot.delta(skill, rid)
        server.client(bot.token).upload_delta(bot.token, blob)
        plain.append(t)
    info = admin.wait_for_round(rid, timeout=30)
    assert (info["state"], info["close_reason"], info["accepted"]) == ("published", "deadline", 3)
    from scfl_nodes.core.crypto import EncryptedAggregate

    got = fleet_key.decrypt_aggregate(EncryptedAggregate.from_bytes(admin.download_aggregate(rid)))
    want = expected_sum(fleet_key, plain)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    empty = admin.open_round(skill, 1, quorum=3, deadline_s=0.5, secure_aggregation=False)["round_id"]
    assert admin.wait_for_round(empty, timeout=30)["state"] == "expired"
    expect_error(409, "round_not_published", admin.download_aggregate, empty)
    # below min_participants (default: the cloud's floor of 3) at the deadline: expired, nothing
    # published (two deltas stay private)
    lonely = admin.open_round(skill, 1, quorum=3, deadline_s=3.0, secure_aggregation=False)["round_id"]
    assert admin.round_status(lonely)["min_participants"] == 3
    for bot in bots[:2]:
        server.client(bot.token).upload_delta(bot.token, bot.delta(skill, lonely, base_version=1)[1])
    info = admin.wait_for_round(lonely, timeout=30)
    assert (info["state"], info["accepted"], info["published_version"]) == ("expired", 2, None)
    assert [v["version"] for v in admin.get_skill(skill)["versions"]] == [1]
    expect_error(422, "invalid_request", admin.open_round, skill, 1, 3, 60, min_participants=4)
    # the cloud refuses rounds that could publish fewer than 3 contributors
    expect_error(422, "too_few_participants", admin.open_round, skill, 1, 3, 60, min_participants=2)
    expect_error(422, "too_few_participants", admin.open_round, skill, 1, 1, 60, min_participants=1)
    expect_error(422, "invalid_request", admin.open_round, skill, 1, 2, 60)  # quorum below the floor


def test_skill_catalog_upload_and_download(cloud, fleet_key):
    server, admin, engine = cloud
    for i in range(5):
        admin.create_skill(f"cat-{i}", [f"catalog task number {i}"], skill_id=f"skill_cat{i}", extra={"obs_dim": 39})
    page = admin.list_skills(limit=2, q="catalog task")
    assert page["total"] == 5 and [s["skill_id"] for s in page["items"]] == ["skill_cat0", "skill_cat1"]
    assert [s["skill_id"] for s in admin.iter_skills(page_size=2, q="catalog")] == [f"skill_cat{i}" for i in range(5)]
    assert [s["skill_id"] for s in admin.list_skills(name="cat-3")["items"]] == ["skill_cat3"]
    expect_error(409, "skill_exists", admin.create_skill, "dup", [], skill_id="skill_cat0")
    r = httpx.get(server.url + "/api/v1/skills", params={"limit": 0}, headers={"Authorization": f"Bearer {server.admin_token}"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"

    # a robot uploads an encrypted signed skill (round 0), then a derived version of it
    bot = RobotHelper("cat-bot", admin, fleet_key, seed=300)
    _, blob = bot.delta("skill_cat1", 0)
    receipt = server.client(bot.token).upload_skill(bot.token, blob)
    assert (receipt["kind"], receipt["version"]) == ("skill", 1)
    _, blob2 = bot.delta("skill_cat1", 0, base_version=1)
    assert server.client(bot.token).upload_skill(bot.token, blob2)["version"] == 2
    versions = server.client(bot.token).get_skill("skill_cat1")["versions"]
    assert [(v["version"], v["parent_version"], v["uploaded_by"]) for v in versions] == [(1, None, "cat-bot"), (2, 1, "cat-bot")]
    with httpx.stream("GET", server.url + versions[1]["download_url"], headers={"Authorization": f"Bearer {bot.token}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        streamed = b"".join(r.iter_bytes())
    assert streamed == blob2
    expect_error(404, "unknown_version", admin.download_skill_version, "skill_cat1", 9)


def test_request_skills_matches_appendix_a2(cloud):
    server, admin, engine = cloud
    pytest.importorskip("scfl_nodes.core.routing", reason="ISSUE 2 routing not present")
    admin.create_skill("grasp-cube", ["pick up the red cube", "grasp a block from the table"], skill_id="skill_rt_grasp")
    admin.create_skill("open-window", ["slide the window open"], skill_id="skill_rt_window")
    admin.create_skill("close-drawer", ["push the drawer closed"], skill_id="skill_rt_drawer")
    r = httpx.post(server.url + "/api/v1/skills/request", headers={"Authorization": f"Bearer {server.admin_token}"},
                   json={"task_description": "Pick up the red cube and place it on the blue plate", "max_skills": 3},
                   timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"skill_ids", "weights", "inference_time_ms"}
    assert len(body["skill_ids"]) == len(body["weights"]) == 3
    assert body["skill_ids"][0] == "skill_rt_grasp"
    assert abs(sum(body["weights"]) - 1.0) < 1e-4 and body["weights"] == sorted(body["weights"], reverse=True)
    assert body["inference_time_ms"] > 0
    win = admin.request_skills("open the window", max_skills=1)
    assert win["skill_ids"] == ["skill_rt_window"] and win["weights"] == [1.0]
    assert admin.status()["latencies"]["routing"]["count"] >= 2


def test_openapi_matches_models(cloud):
    server, admin, engine = cloud
    spec = httpx.get(server.url + "/openapi.json").json()
    for path, method in [("/api/v1/skills", "get"), ("/api/v1/skills/request", "post"), ("/api/v1/skills/upload", "post"),
                         ("/api/v1/skills/{skill_id}", "get"), ("/cloud/status", "get"), ("/healthz", "get"),
                         ("/api/v1/rounds", "post"), ("/api/v1/robots", "post"),
                         ("/api/v1/rounds/{round_id}/aggregate", "get")]:
        assert method in spec["paths"][path], (path, method)
    schemas = spec["components"]["schemas"]
    assert set(schemas["SkillRequest"]["properties"]) == {"task_description", "max_skills"}
    assert set(schemas["SkillRequestResponse"]["properties"]) == {"skill_ids", "weights", "inference_time_ms"}
    upload = spec["paths"]["/api/v1/skills/upload"]["post"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
    assert upload["responses"]["413"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    r = httpx.get(server.url + "/api/v1/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    health = admin.healthz()
    assert health["status"] == "ok" and health["worker_alive"] and health["schema_revision"] == "0004"


def test_tenseal_fleet_round_with_public_only_context(cloud, fleet_key):
    """The BFV backend goes through the same service: the cloud holds a SEAL context without secret key."""
    from scfl_nodes.core.crypto import EncryptedAggregate, generate_fleet_keys

    server, admin, engine = cloud
    bfv_key = generate_fleet_keys("tenseal")
    ctx = admin.put_fleet_context(bfv_key.cloud_context())
    assert ctx["backend"] == "tenseal"
    skill = admin.create_skill("bfv", ["encrypted with bfv"], skill_id="skill_bfv")["skill_id"]
    bots = [RobotHelper(f"bfv-{i}", admin, bfv_key, seed=400 + i) for i in range(3)]
    rid = admin.open_round(skill, 0, quorum=3, deadline_s=120, key_id=ctx["key_id"], secure_aggregation=False)["round_id"]
    plain = []
    for bot in bots:
        t, blob = bot.delta(skill, rid, shapes=[["w", [16, 8]]])
        server.client(bot.token).upload_delta(bot.token, blob)
        plain.append(t)
    info = admin.wait_for_round(rid, timeout=60)
    assert info["backend"] == "tenseal" and info["state"] == "published"
    got = bfv_key.decrypt_aggregate(EncryptedAggregate.from_bytes(admin.download_aggregate(rid)))
    want = expected_sum(bfv_key, plain, shapes=[["w", [16, 8]]])
    assert np.array_equal(got["w"], want["w"])
    # a delta made under the other (rlwe) fleet key is refused by the BFV round
    rid2 = admin.open_round(skill, 1, quorum=3, deadline_s=120, key_id=ctx["key_id"], secure_aggregation=False)["round_id"]
    intruder = RobotHelper("bfv-intruder", admin, fleet_key, seed=1)
    _, wrong = intruder.delta(skill, rid2, base_version=1, shapes=[["w", [16, 8]]])
    expect_error(422, "wrong_key_id", server.client(intruder.token).upload_delta, intruder.token, wrong)
