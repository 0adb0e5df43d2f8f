"""Issue 15: one poisoned upload never stops the fleet.

Every trigger the held-out attacks found is refused at upload with a specific error (the
upload runs the aggregator's own checks) while another round keeps publishing; what can
still fail later (a lost or corrupted blob) quarantines that delta or round with the
reason, /healthz says degraded, and the admin can drop the delta or cancel the round.
Real server, real database (SQLite and PostgreSQL), real encryption.
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from cloud_fixtures import CLIP, DB_KINDS, RobotHelper, blob_files, expected_sum, make_db_url
from cloud_fixtures import fleet_key, pg_cluster  # noqa: F401  (fixtures)
from scfl_cloud.client import CloudClient, CloudError

pytestmark = pytest.mark.timeout(300)


def expect_error(status, code, fn, *args, **kw):
    with pytest.raises(CloudError) as info:
        fn(*args, **kw)
    assert (info.value.status, info.value.code) == (status, code), info.value
    return info.value


def resign(blob: bytes, signer, payload: bytes | None = None, **changes) -> bytes:
    """A robot's own signature over an edited header: passes the signature check, so only
    validation can stop it (what a buggy or malicious robot can send)."""
    from scfl_nodes.core.crypto import EncryptedDelta
    from scfl_nodes.core.crypto.wire import MAGIC_DELTA, pack

    d = EncryptedDelta.from_bytes(blob)
    prefix, digest = pack(MAGIC_DELTA, dict(d.header, **changes), d.payload if payload is None else payload)
    return prefix + digest + signer.sign(digest)


def masked(bot, skill, rid, cohort):
    from scfl_nodes.core.crypto import encrypt_delta

    tensors = {"b": np.zeros(32, np.float32), "w": np.zeros((48, 32), np.float32)}
    return encrypt_delta(bot.fleet_key, tensors, skill_id=skill, base_version=0, round_id=rid, robot_id=bot.robot_id,
                         signing_key=bot.signing_key, clip=CLIP, num_clients=8, mask=np.zeros(48 * 32 + 32, np.uint64),
                         mask_cohort=cohort).to_bytes()


@pytest.fixture(scope="module", params=DB_KINDS)
def cloud(request, tmp_path_factory, fleet_key):
    from scfl_cloud.testing import CloudServer

    storage = tmp_path_factory.mktemp(f"sec-{request.param}")
    server = CloudServer(storage, make_db_url(request.param, request, storage), max_upload_bytes=200_000).start()
    admin = server.admin_client()
    admin.put_fleet_context(fleet_key.cloud_context())
    yield server, admin
    server.stop()


def test_every_trigger_is_refused_at_upload_while_another_round_publishes(cloud, fleet_key):
    server, admin = cloud
    poison = admin.create_skill("poison", ["attacked skill"], skill_id="skill_poison")["skill_id"]
    honest = admin.create_skill("honest", ["other skill"], skill_id="skill_honest")["skill_id"]
    bots = [RobotHelper(f"trg-{i}", admin, fleet_key, seed=700 + i) for i in range(4)]
    a, b, c, d = bots
    up = {bot.robot_id: server.client(bot.token) for bot in bots}
    rid = admin.open_round(poison, 0, quorum=4, deadline_s=300, secure_aggregation=False)["round_id"]
    other = admin.open_round(honest, 0, quorum=3, deadline_s=300, secure_aggregation=False)["round_id"]
    plain_other = []
    t, blob = a.delta(honest, other)
    up[a.robot_id].upload_delta(a.token, blob)
    plain_other.append(t)

    # 1. key order is never significant: a's tensors come in reverse order, b's in sorted order
    from scfl_nodes.core.crypto import encrypt_delta

    rng = np.random.default_rng(1)
    ta = {"w": rng.normal(0, 0.05, (48, 32)).astype(np.float32), "b": rng.normal(0, 0.05, 32).astype(np.float32)}
    blob_a = encrypt_delta(fleet_key, ta, skill_id=poison, base_version=0, round_id=rid, robot_id=a.robot_id,
                           signing_key=a.signing_key, clip=CLIP, num_clients=8).to_bytes()
    assert up[a.robot_id].upload_delta(a.token, blob_a)["accepted_in_round"] == 1
    tb, blob_b = b.delta(poison, rid)
    assert up[b.robot_id].upload_delta(b.token, blob_b)["accepted_in_round"] == 2
    tc, blob_c = c.delta(poison, rid)
    #    a header in non-canonical order (hand-made, signed) is refused with its own code
    reordered = resign(blob_c, c.signing_key, shapes=[["w", [48, 32]], ["b", [32]]])
    expect_error(422, "noncanonical_tensor_order", up[c.robot_id].upload_delta, c.token, reordered)
    # 2. a signed nonce that is not hex, or 1 byte
    for nonce in ("zz" * 16, "ab"):
        err = expect_error(422, "tampered", up[c.robot_id].upload_delta, c.token, resign(blob_c, c.signing_key, nonce=nonce))
        assert "nonce" in err.detail
    # 3. a 12-byte payload
    err = expect_error(422, "tampered", up[c.robot_id].upload_delta, c.token,
                       resign(blob_c, c.signing_key, payload=b"\x01" * 12))
    assert "payload" in err.detail
    # 4. a mismatched mask_cohort (masked into an unmasked round; a cohort without the uploader)
    expect_error(422, "mask_cohort_mismatch", up[c.robot_id].upload_delta, c.token,
                 masked(c, poison, rid, [c.robot_id, d.robot_id]))
    expect_error(422, "mask_cohort_mismatch", up[c.robot_id].upload_delta, c.token,
                 resign(blob_c, c.signing_key, mask_cohort=[a.robot_id, b.robot_id]))
    # 5. two robots reusing a nonce: c signs a delta carrying a's nonce
    a_nonce = EncryptedDeltaHeader(blob_a)["nonce"]
    expect_error(409, "nonce_reused", up[c.robot_id].upload_delta, c.token, resign(blob_c, c.signing_key, nonce=a_nonce))
    # 6. EDA weights of 1e308 (math.fsum overflowed in the aggregator)
    err = expect_error(422, "tampered", up[c.robot_id].upload_delta, c.token, resign(blob_c, c.signing_key, weight=1e308))
    assert "weight" in err.detail
    # 7. header versions and ids: a header version other than the container's (1, 3, -1), a
    #    negative round id, integers beyond 64 bits
    for version in (1, 3, -1):
        expect_error(422, "wrong_parameters", up[c.robot_id].upload_delta, c.token,
                     resign(blob_c, c.signing_key, version=version))
    for field, value in (("round_id", -rid), ("round_id", 2**70), ("base_version", 2**64 + 1), ("num_clients", 2**80)):
        expect_error(422, "tampered", up[c.robot_id].upload_delta, c.token, resign(blob_c, c.signing_key, **{field: value}))
    # none of this touched the round; the honest third upload is still accepted
    assert admin.round_status(rid)["accepted"] == 2
    assert up[c.robot_id].upload_delta(c.token, blob_c)["accepted_in_round"] == 3

    # ... and the other round publishes meanwhile, the poisoned one too once d uploads
    for bot in (b, c):
        t, blob = bot.delta(honest, other)
        up[bot.robot_id].upload_delta(bot.token, blob)
        plain_other.append(t)
    td, blob_d = d.delta(poison, rid)
    up[d.robot_id].upload_delta(d.token, blob_d)
    from scfl_nodes.core.crypto import EncryptedAggregate

    for round_id, plain in ((other, plain_other), (rid, [ta, tb, tc, td])):
        info = admin.wait_for_round(round_id, timeout=60)
        assert info["state"] == "published", info
        agg = EncryptedAggregate.from_bytes(up[a.robot_id].download_aggregate(round_id))  # signature verified
        got = fleet_key.decrypt_aggregate(agg)
        want = expected_sum(fleet_key, plain)
        assert all(np.array_equal(got[k], want[k]) for k in want)
    assert admin.healthz()["status"] == "ok"


def EncryptedDeltaHeader(blob: bytes) -> dict:
    from scfl_nodes.core.crypto import EncryptedDelta

    return EncryptedDelta.from_bytes(blob).header


def test_round0_replay_and_out_of_range_integers(cloud, fleet_key):
    server, admin = cloud
    skill = admin.create_skill("replay", ["replayed skill"], skill_id="skill_replay")["skill_id"]
    bot = RobotHelper("replayer", admin, fleet_key, seed=800)
    up = server.client(bot.token)
    _, blob = bot.delta(skill, 0)
    assert up.upload_skill(bot.token, blob)["version"] == 1
    for _ in range(2):  # one signed blob posted 3 times makes ONE version
        expect_error(409, "nonce_reused", up.upload_skill, bot.token, blob)
    assert [v["version"] for v in admin.get_skill(skill)["versions"]] == [1]
    # integers beyond 32/64 bits in paths and query strings: 422, never 500, connection kept
    hdr = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.url, headers=hdr) as http:
        for path in (f"/api/v1/rounds/{2**70}", "/api/v1/rounds/-1", f"/api/v1/rounds/{2**31}/aggregate",
                     f"/api/v1/skills/{skill}/versions/{2**64}/ciphertext", f"/api/v1/skills?offset={2**70}",
                     "/api/v1/rounds?limit=99999999999999999999999"):
            r = http.get(path)
            assert r.status_code == 422 and r.json()["error"] == "invalid_request", (path, r.status_code, r.text)
        r = http.post("/api/v1/rounds", json={"skill_id": skill, "base_version": 2**70, "quorum": 3, "deadline_s": 60})
        assert r.status_code == 422
        r = http.post("/api/v1/skills", json={"name": "nul\u0000byte", "task_descriptions": ["x\u0000"]})
        assert r.status_code in (201, 422), r.text  # PostgreSQL refuses NUL bytes: a 422, not a 500
        assert http.get("/healthz").status_code == 200


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _post_chunked(port: int, path: str, total: int, token: str | None) -> str:
    """Stream ``total`` bytes of chunked JSON; return the status line the server answers with."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    chunk = b"[" + b"1," * 32767 + b"1]"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                     f"Transfer-Encoding: chunked\r\n\r\n".encode())
        sent = 0
        try:
            while sent < total:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest
        try:
            return sock.recv(4096).decode(errors="replace").split("\r\n")[0]
        except ConnectionResetError:
            return "reset"


def test_unauthenticated_large_bodies_are_refused_with_memory_flat(cloud):
    server, admin = cloud
    pid = server.proc.pid
    before = _rss_kb(pid)
    status = _post_chunked(server.port, "/api/v1/skills", 200 * 2**20, token=None)
    assert " 401 " in status + " ", status
    # an authenticated JSON body is cut at the JSON limit (1 MiB), not buffered whole
    robot_token = admin.register_robot("bigbody", _pub())
    status = _post_chunked(server.port, "/api/v1/skills", 50 * 2**20, token=robot_token)
    assert " 413 " in status + " ", status
    grown_mb = (_rss_kb(pid) - before) / 1024
    assert grown_mb < 40, f"server RSS grew by {grown_mb:.0f} MB"
    assert admin.healthz()["status"] in ("ok", "degraded")


def _pub() -> bytes:
    from scfl_nodes.core.crypto import generate_signing_key

    return generate_signing_key().public_bytes()


def test_published_aggregate_is_signed_and_relabelling_is_detected(cloud, fleet_key):
    from scfl_nodes.core.crypto import EncryptedAggregate, SignatureError, generate_fleet_keys, verify_aggregate
    from scfl_nodes.core.crypto.wire import MAGIC_AGGREGATE, pack

    server, admin = cloud
    skill = admin.create_skill("signed", ["signed aggregate"], skill_id="skill_signed")["skill_id"]
    bots = [RobotHelper(f"sig-{i}", admin, fleet_key, seed=900 + i) for i in range(3)]
    rid = admin.open_round(skill, 0, quorum=3, deadline_s=300, secure_aggregation=False)["round_id"]
    for bot in bots:
        server.client(bot.token).upload_delta(bot.token, bot.delta(skill, rid)[1])
    admin.wait_for_round(rid, timeout=60)
    robot = server.client(bots[0].token)
    cloud_key = base64.b64decode(robot.list_fleet_contexts()[0]["aggregate_public_key"])
    blob, sig = robot.download_signed_aggregate(rid)
    agg = verify_aggregate(blob, sig, cloud_key, key_id=fleet_key.key_id, skill_id=skill, round_id=rid,
                           min_contributors=3)
    assert agg.count == 3
    # relabel the key id (and recompute the unkeyed digest): the signature no longer verifies
    other = generate_fleet_keys("rlwe")
    parsed = EncryptedAggregate.from_bytes(blob)
    prefix, digest = pack(MAGIC_AGGREGATE, dict(parsed.header, key_id=other.key_id), parsed._payload())
    with pytest.raises(SignatureError):
        verify_aggregate(prefix + digest, sig, cloud_key)
    with pytest.raises(SignatureError):
        verify_aggregate(blob, b"", cloud_key)  # unsigned
    # the client verifies on download; a wrong pinned key is refused before anything is decrypted
    wrong = CloudClient(server.url, token=bots[0].token, cloud_public_key=_pub())
    expect_error(None, "bad_aggregate", wrong.download_aggregate, rid)
    expect_error(None, "bad_aggregate", robot.download_aggregate, rid, key_id=other.key_id)


# ------------------------------------------------------------------ quarantine (in-process worker)
@pytest.fixture(params=DB_KINDS)
def inproc(request, tmp_path, fleet_key):
    """The real app and service over a real database, with the aggregation worker driven by
    hand (no lifespan thread), so a blob can be damaged exactly between upload and fold."""
    from starlette.testclient import TestClient

    from scfl_cloud.app import create_app
    from scfl_cloud.settings import CloudSettings

    token = "admin-" + "x" * 20
    settings = CloudSettings(db_url=make_db_url(request.param, request, tmp_path), storage_dir=tmp_path / "cloud",
                             admin_token=token)
    app = create_app(settings)
    http = TestClient(app, raise_server_exceptions=False)  # no `with`: the worker thread is not started
    admin = CloudClient("http://testserver", admin_token=token, insecure_http=True)
    admin._http = http
    admin.put_fleet_context(fleet_key.cloud_context())
    yield app, admin, http
    app.state.service.engine.dispose()


def _robot(admin, http, name, fleet_key, seed):
    bot = RobotHelper(name, admin, fleet_key, seed)
    client = CloudClient("http://testserver", token=bot.token, insecure_http=True)
    client._http = http
    return bot, client


def _drain(worker):
    for _ in range(50):
        if not worker.tick():
            return
    raise AssertionError("worker never went idle")


def test_late_failures_quarantine_only_their_delta_or_round(inproc, fleet_key):
    app, admin, http = inproc
    service, worker = app.state.service, app.state.worker
    bad = admin.create_skill("bad", ["quarantined round"], skill_id="skill_bad")["skill_id"]
    good = admin.create_skill("good", ["healthy round"], skill_id="skill_good")["skill_id"]
    lost = admin.create_skill("lost", ["lost blob"], skill_id="skill_lost")["skill_id"]
    bots = [_robot(admin, http, f"q-{i}", fleet_key, 1000 + i) for i in range(4)]
    r_bad = admin.open_round(bad, 0, quorum=3, deadline_s=300, secure_aggregation=False)["round_id"]
    r_good = admin.open_round(good, 0, quorum=3, deadline_s=300, secure_aggregation=False)["round_id"]
    r_lost = admin.open_round(lost, 0, quorum=3, deadline_s=300, secure_aggregation=False)["round_id"]
    plain_bad, plain_good, plain_lost = {}, [], []
    for bot, client in bots[:2]:
        t, blob = bot.delta(bad, r_bad)
        client.upload_delta(bot.token, blob)
        plain_bad[bot.robot_id] = t
    _drain(worker)
    assert admin.round_status(r_bad)["folded"] == 2
    # the disk corrupts the running sum of r_bad (a bug or a bad sector: nothing upload could see)
    from sqlalchemy import select

    from scfl_cloud.models import Delta, Round

    with service.read() as s:
        sum_digest = s.get(Round, r_bad).sum_blob_sha256
    service.blobs.path(sum_digest).write_bytes(b"garbage")
    # a worker that did not write that sum itself must read it from disk (the worker that did
    # keeps it in memory): a restarted worker, or another worker process taking the round over
    from scfl_cloud.worker import AggregationWorker

    worker = AggregationWorker(service)
    bot, client = bots[2]
    t, blob = bot.delta(bad, r_bad)
    client.upload_delta(bot.token, blob)
    plain_bad[bot.robot_id] = t
    # a delta blob of r_lost vanishes between upload and fold
    bot0, client0 = bots[0]
    client0.upload_delta(bot0.token, bot0.delta(lost, r_lost)[1])
    with service.read() as s:
        lost_digest = s.scalars(select(Delta.blob_sha256).where(Delta.round_id == r_lost)).one()
    service.blobs.delete(lost_digest)
    for bot, client in bots[:3]:
        t, blob = bot.delta(good, r_good)
        client.upload_delta(bot.token, blob)
        plain_good.append(t)
    _drain(worker)

    # r_bad is quarantined with the reason; r_good published regardless; r_lost goes on without the lost delta
    info = admin.round_status(r_bad)
    assert info["state"] == "quarantined" and "fold_batch" in info["error"], info
    assert admin.round_status(r_good)["state"] == "published"
    info = admin.round_status(r_lost)
    assert (info["state"], info["accepted"]) == ("open", 0)
    assert info["quarantined_deltas"][0]["robot_id"] == bot0.robot_id
    assert "BlobNotFound" in info["quarantined_deltas"][0]["reason"]
    health = http.get("/healthz").json()
    assert health["status"] == "degraded" and health["degraded_rounds"] == [r_bad, r_lost]
    from scfl_nodes.core.crypto import EncryptedAggregate

    got = fleet_key.decrypt_aggregate(EncryptedAggregate.from_bytes(admin.download_aggregate(r_good)))
    want = expected_sum(fleet_key, plain_good)
    assert all(np.array_equal(got[k], want[k]) for k in want)

    # the admin repairs: drop robot 2's delta from r_bad (the sum is rebuilt from the stored
    # deltas, the round reopens), robot 3 uploads, r_bad publishes the exact sum
    info = admin.drop_delta(r_bad, bots[2][0].robot_id)
    assert (info["state"], info["accepted"], info["folded"]) == ("open", 2, 0)
    del plain_bad[bots[2][0].robot_id]
    bot, client = bots[3]
    t, blob = bot.delta(bad, r_bad)
    client.upload_delta(bot.token, blob)
    plain_bad[bot.robot_id] = t
    _drain(worker)
    info = admin.round_status(r_bad)
    assert (info["state"], info["folded"]) == ("published", 3)
    got = fleet_key.decrypt_aggregate(EncryptedAggregate.from_bytes(admin.download_aggregate(r_bad)))
    want = expected_sum(fleet_key, list(plain_bad.values()))
    assert all(np.array_equal(got[k], want[k]) for k in want)
    # ... and cancels r_lost: health is ok again, nothing of it is left on disk
    assert admin.cancel_round(r_lost)["state"] == "cancelled"
    expect_error(409, "round_final", admin.cancel_round, r_lost)
    expect_error(409, "round_final", admin.drop_delta, r_good, bots[0][0].robot_id)
    assert http.get("/healthz").json()["degraded_rounds"] == []  # (status: the worker thread is not running here)
    # per-robot ciphertexts of finished rounds are gone (retention default): context + 2 sums remain
    assert len(blob_files(service.settings.storage_dir)) == 3


def test_accepted_deltas_are_folded_from_memory_and_exact(inproc, fleet_key):
    """The worker folds what this process just accepted without reading the blob back or
    hashing it again (scfl_cloud/handoff.py); a delta it did not accept (another process, a
    restart) is read from the store and digest-checked, and both make the exact sum."""
    from sqlalchemy import select

    from scfl_cloud.models import Delta
    from scfl_cloud.worker import AggregationWorker
    from scfl_nodes.core.crypto import EncryptedAggregate

    app, admin, http = inproc
    service = app.state.service
    skill = admin.create_skill("handoff", ["hand-off"], skill_id="skill_handoff")["skill_id"]
    rid = admin.open_round(skill, 0, quorum=4, deadline_s=300, secure_aggregation=False)["round_id"]
    bots = [_robot(admin, http, f"h-{i}", fleet_key, 2000 + i) for i in range(4)]
    plain = []
    for bot, client in bots:
        t, blob = bot.delta(skill, rid)
        client.upload_delta(bot.token, blob)
        plain.append(t)
    assert len(service.accepted) == 4
    with service.read() as s:
        first = s.scalars(select(Delta.blob_sha256).where(Delta.round_id == rid).order_by(Delta.id)).first()
    assert service.accepted.take(first) is not None  # as if another process had accepted this one
    hits = service.accepted.hits
    _drain(AggregationWorker(service))
    assert service.accepted.hits - hits == 3 and service.accepted.misses >= 1 and len(service.accepted) == 0
    assert admin.round_status(rid)["state"] == "published"
    got = fleet_key.decrypt_aggregate(EncryptedAggregate.from_bytes(admin.download_aggregate(rid)))
    want = expected_sum(fleet_key, plain)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_stored_delta_rewritten_consistently_is_quarantined_at_fold(inproc, fleet_key):
    """Someone with write access to the blob store replaces a stored delta's payload and
    recomputes its container digest (the robot's signature cannot be redone): the container
    is self-consistent, so only the fold's check of the whole blob against its content
    address (recorded at upload) can notice. That delta is quarantined with the reason; the
    others publish the exact sum without it."""
    from sqlalchemy import select

    from scfl_cloud.models import Delta
    from scfl_cloud.worker import AggregationWorker
    from scfl_nodes.core.crypto import EncryptedAggregate, EncryptedDelta
    from scfl_nodes.core.crypto.wire import MAGIC_DELTA, pack

    app, admin, http = inproc
    service = app.state.service
    skill = admin.create_skill("rewritten", ["rewritten blob"], skill_id="skill_rewritten")["skill_id"]
    rid = admin.open_round(skill, 0, quorum=4, deadline_s=300, secure_aggregation=False)["round_id"]
    bots = [_robot(admin, http, f"w-{i}", fleet_key, 3000 + i) for i in range(5)]
    plain = {}
    for bot, client in bots[:3]:
        t, blob = bot.delta(skill, rid)
        client.upload_delta(bot.token, blob)
        plain[bot.robot_id] = t
    with service.read() as s:
        victim = s.scalars(select(Delta.blob_sha256).where(Delta.round_id == rid).order_by(Delta.id)).first()
    service.accepted.take(victim)  # not handed over in memory: the worker must read it back
    d = EncryptedDelta.from_bytes(service.blobs.get(victim))
    payload = bytearray(d.payload)
    payload[0] ^= 1
    prefix, digest = pack(MAGIC_DELTA, d.header, bytes(payload))
    service.blobs.path(victim).write_bytes(prefix + digest + d.signature)  # consistent container, old signature
    EncryptedDelta.from_bytes(service.blobs.get(victim))  # its own digest check passes
    worker = AggregationWorker(service)
    _drain(worker)
    info = admin.round_status(rid)
    assert (info["state"], info["accepted"]) == ("open", 2), info  # the quarantined one no longer counts
    assert len(info["quarantined_deltas"]) == 1 and "modified or corrupted" in info["quarantined_deltas"][0]["reason"]
    dropped = info["quarantined_deltas"][0]["robot_id"]
    for bot, client in bots[3:]:
        t, blob = bot.delta(skill, rid)
        client.upload_delta(bot.token, blob)
        plain[bot.robot_id] = t
    _drain(worker)
    info = admin.round_status(rid)
    assert (info["state"], info["folded"]) == ("published", 4), info
    got = fleet_key.decrypt_aggregate(EncryptedAggregate.from_bytes(admin.download_aggregate(rid)))
    want = expected_sum(fleet_key, [t for r, t in plain.items() if r != dropped])
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_accepted_deltas_are_bounded():
    from scfl_cloud.handoff import AcceptedDeltas

    kept = AcceptedDeltas(max_bytes=10, max_age_s=0.2)
    assert kept.put("a" * 64, "A", 6) and not kept.put("b" * 64, "B", 6)  # over the byte budget: not kept
    assert kept.take("b" * 64) is None and kept.take("a" * 64) == "A" and kept.take("a" * 64) is None
    assert kept.put("c" * 64, "C", 6)
    time.sleep(0.3)
    assert kept.put("d" * 64, "D", 6)  # the old entry aged out and freed its bytes
    assert kept.take("c" * 64) is None and len(kept) == 1


def test_orphans_are_collected_at_startup(tmp_path, fleet_key):
    from scfl_cloud.service import CloudService
    from scfl_cloud.settings import CloudSettings

    settings = CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite'}", storage_dir=tmp_path / "c",
                             admin_token="y" * 20)
    svc = CloudService(settings)
    orphan = svc.blobs.put(b"an uncommitted running sum")
    assert svc.collect_orphans() == [orphan] and not svc.blobs.exists(orphan)
    svc.engine.dispose()
