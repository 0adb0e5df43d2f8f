"""Crash safety: SIGKILL the real server mid-round, restart it on the same database and
storage, finish the round, and check that nothing accepted was lost or counted twice."""

from __future__ import annotations

import time


import numpy as np
import pytest
from sqlalchemy import select

from cloud_fixtures import DB_KINDS, RobotHelper, blob_files, expected_sum, make_db_url
from cloud_fixtures import fleet_key, pg_cluster  # noqa: F401  (fixtures)
from scfl_cloud.client import CloudError
from scfl_cloud.db import make_engine
from scfl_cloud.models import Delta, Round
from scfl_cloud.worker import FAULT_ENV

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=DB_KINDS)
def db_url(request, tmp_path):
    return make_db_url(request.param, request, tmp_path)


def _decrypt(admin, fleet_key, round_id):
    from scfl_nodes.core.crypto import EncryptedAggregate

    agg = EncryptedAggregate.from_bytes(admin.download_aggregate(round_id))
    return agg, fleet_key.decrypt_aggregate(agg)


def test_sigkill_mid_round_then_finish(tmp_path, db_url, fleet_key):
    """The kill lands at the risky point every time: the worker blocks (fault hook) after
    writing a new running sum and before committing it; the test SIGKILLs it there."""
    from scfl_cloud.testing import CloudServer

    marker = tmp_path / "worker-at-risky-point"
    server = CloudServer(tmp_path / "cloud", db_url, extra_args=["--prune-deltas"],
                         extra_env={FAULT_ENV: f"block_before_fold_commit:{marker}"}).start()
    try:
        admin = server.admin_client()
        admin.put_fleet_context(fleet_key.cloud_context())
        skill = admin.create_skill("wipe", ["wipe the table"], skill_id="skill_crash")["skill_id"]
        bots = [RobotHelper(f"crash-{i}", admin, fleet_key, seed=i) for i in range(5)]
        rid = admin.open_round(skill, 0, quorum=5, deadline_s=300, secure_aggregation=False)["round_id"]
        plain = []
        for bot in bots[:3]:
            t, blob = bot.delta(skill, rid)
            server.client(bot.token).upload_delta(bot.token, blob)  # 201 = durably accepted
            plain.append(t)
        deadline = time.monotonic() + 60
        while not marker.exists():  # the worker has written an uncommitted running sum
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)
        orphan_candidates = blob_files(server.storage_dir)
        assert len(orphan_candidates) == 5  # context + 3 deltas + the uncommitted sum
        server.kill()
        server.extra_env.pop(FAULT_ENV)
        server.start()
        # start-up collected the orphaned sum: only the context and the 3 deltas remain
        assert len(blob_files(server.storage_dir)) == 4
        assert "orphaned blob" in server.log_tail()
        admin = server.admin_client()
        info = admin.round_status(rid)
        assert (info["state"], info["accepted"]) == ("open", 3)
        assert sorted(info["contributors"]) == [b.robot_id for b in bots[:3]]
        # robots that already contributed are still refused after the restart
        _, again = bots[0].delta(skill, rid)
        with pytest.raises(CloudError) as err:
            server.client(bots[0].token).upload_delta(bots[0].token, again)
        assert err.value.code == "duplicate_upload"
        for bot in bots[3:]:
            t, blob = bot.delta(skill, rid)
            server.client(bot.token).upload_delta(bot.token, blob)
            plain.append(t)
        info = admin.wait_for_round(rid, timeout=60)
        assert (info["state"], info["accepted"], info["folded"]) == ("published", 5, 5)
        agg, got = _decrypt(admin, fleet_key, rid)
        assert agg.count == 5 and sorted(agg.robot_ids) == sorted(b.robot_id for b in bots)
        want = expected_sum(fleet_key, plain)
        assert all(np.array_equal(got[k], want[k]) for k in want)
        # --prune-deltas: per-robot ciphertexts are gone once published; context + sum remain
        deadline = time.monotonic() + 30  # pruning runs in the worker right after publishing
        while len(blob_files(server.storage_dir)) != 2:
            assert time.monotonic() < deadline, sorted(blob_files(server.storage_dir))
            time.sleep(0.05)
    finally:
        server.stop()


def test_crash_between_sum_write_and_commit_does_not_double_count(tmp_path, db_url, fleet_key):
    """Fault injection: the worker writes the new running sum, then the process is SIGKILLed
    before the transaction that records it. After restart the delta must be folded exactly once."""
    from scfl_cloud.testing import CloudServer

    storage = tmp_path / "cloud"
    server = CloudServer(storage, db_url, extra_env={FAULT_ENV: "crash_before_fold_commit"}).start()
    engine = make_engine(db_url)
    try:
        admin = server.admin_client()
        admin.put_fleet_context(fleet_key.cloud_context())
        skill = admin.create_skill("fold", ["fold the towel"], skill_id="skill_fault")["skill_id"]
        bots = [RobotHelper(f"fault-{i}", admin, fleet_key, seed=50 + i) for i in range(4)]
        rid = admin.open_round(skill, 0, quorum=4, deadline_s=300, secure_aggregation=False)["round_id"]
        t0, blob0 = bots[0].delta(skill, rid)
        server.client(bots[0].token).upload_delta(bots[0].token, blob0)
        server.proc.wait(timeout=60)  # the worker kills the process at the injected fault
        assert server.proc.returncode == -9
        assert "fault injection" in server.log_tail()
        with engine.connect() as c:
            rnd = c.execute(select(Round.accepted_count, Round.folded_count, Round.sum_blob_sha256)
                            .where(Round.round_id == rid)).one()
            folded = c.scalars(select(Delta.folded).where(Delta.round_id == rid)).all()
        assert tuple(rnd) == (1, 0, None) and folded == [False]
        # the orphaned running sum exists on disk but is referenced by nothing
        assert len(blob_files(storage)) == 3  # context + delta + orphan sum

        server.extra_env.pop(FAULT_ENV)
        server.start()
        assert len(blob_files(storage)) == 2  # start-up collected the orphan
        admin = server.admin_client()
        plain = [t0]
        for bot in bots[1:]:
            t, blob = bot.delta(skill, rid)
            server.client(bot.token).upload_delta(bot.token, blob)
            plain.append(t)
        info = admin.wait_for_round(rid, timeout=60)
        assert (info["state"], info["accepted"], info["folded"]) == ("published", 4, 4)
        agg, got = _decrypt(admin, fleet_key, rid)
        assert agg.count == 4 and sorted(agg.robot_ids) == sorted(b.robot_id for b in bots)
        want = expected_sum(fleet_key, plain)
        assert all(np.array_equal(got[k], want[k]) for k in want)
        with engine.connect() as c:
            assert c.scalars(select(Delta.folded).where(Delta.round_id == rid)).all() == [True] * 4
    finally:
        engine.dispose()
        server.stop()


def test_restart_without_traffic_keeps_everything(tmp_path, db_url, fleet_key):
    """A graceful restart and a second migration run are no-ops for data (idempotent upgrade)."""
    from scfl_cloud.testing import CloudServer

    server = CloudServer(tmp_path / "cloud", db_url).start()
    try:
        admin = server.admin_client()
        admin.put_fleet_context(fleet_key.cloud_context())
        admin.create_skill("keep", ["keep me"], skill_id="skill_keep")
        bot = RobotHelper("keeper", admin, fleet_key, seed=7)
        before = (admin.list_skills(), admin.list_robots(), admin.list_fleet_contexts())
        server.stop()
        server.start()
        admin = server.admin_client()
        assert (admin.list_skills(), admin.list_robots(), admin.list_fleet_contexts()) == before
        assert server.client(bot.token).get_skill("skill_keep")["skill_id"] == "skill_keep"  # token survives
    finally:
        server.stop()


def test_folds_since_the_last_checkpoint_are_redone_exactly_once_after_a_crash(tmp_path, db_url, fleet_key):
    """The worker folds deltas into the running sum in memory and checkpoints it only every
    ``fold_batch`` deltas (or ``fold_checkpoint_s``, or when the round can publish). A crash
    in between loses only that memory: a fresh worker on the same database and blob store
    folds those deltas again from the committed sum, each exactly once, and the stale
    worker's memory is never trusted again."""
    from starlette.testclient import TestClient

    from scfl_cloud.app import create_app
    from scfl_cloud.client import CloudClient
    from scfl_cloud.settings import CloudSettings
    from scfl_cloud.worker import AggregationWorker

    token = "admin-" + "x" * 20
    app = create_app(CloudSettings(db_url=db_url, storage_dir=tmp_path / "cloud", admin_token=token,
                                   fold_batch=32, fold_checkpoint_s=3600))
    http = TestClient(app, raise_server_exceptions=False)  # no `with`: the workers are driven by hand
    service = app.state.service
    try:
        admin = CloudClient("http://testserver", admin_token=token, insecure_http=True)
        admin._http = http
        admin.put_fleet_context(fleet_key.cloud_context())
        skill = admin.create_skill("stack", ["stack the cups"], skill_id="skill_ckpt")["skill_id"]
        bots = [RobotHelper(f"ckpt-{i}", admin, fleet_key, seed=300 + i) for i in range(5)]
        rid = admin.open_round(skill, 0, quorum=5, deadline_s=300, secure_aggregation=False)["round_id"]
        plain = []

        def upload(bot):
            t, blob = bot.delta(skill, rid)
            client = CloudClient("http://testserver", token=bot.token, insecure_http=True)
            client._http = http
            client.upload_delta(bot.token, blob)
            plain.append(t)

        def drain(worker):
            for _ in range(50):
                if not worker.tick():
                    return
            raise AssertionError("worker never went idle")

        def committed():
            with service.read() as s:
                return s.get(Round, rid).folded_count, sorted(s.scalars(
                    select(Delta.robot_id).where(Delta.round_id == rid, Delta.folded.is_(True))))

        first = AggregationWorker(service)
        for bot in bots[:2]:
            upload(bot)
        drain(first)
        assert committed() == (2, ["ckpt-0", "ckpt-1"])  # a round's first sum is checkpointed at once
        for bot in bots[2:4]:
            upload(bot)
        drain(first)
        # folded in memory (no checkpoint due: 2 of 32, the round is open, the clock is far off)
        assert committed() == (2, ["ckpt-0", "ckpt-1"])
        with service.read() as s:
            unflagged = sorted(s.scalars(select(Delta.id).where(Delta.round_id == rid, Delta.folded.is_(False))))
        assert sorted(first.sums._sums[rid].fold_ms) == unflagged and len(unflagged) == 2

        restarted = AggregationWorker(service)  # the first worker's memory is gone with the crash
        upload(bots[4])  # quorum: the round closes
        drain(restarted)
        info = admin.round_status(rid)
        assert (info["state"], info["accepted"], info["folded"]) == ("published", 5, 5)
        assert committed() == (5, [b.robot_id for b in bots])
        agg, got = _decrypt(admin, fleet_key, rid)
        assert agg.count == 5 and sorted(agg.robot_ids) == [b.robot_id for b in bots]
        want = expected_sum(fleet_key, plain)
        assert all(np.array_equal(got[k], want[k]) for k in want)
        # the crashed worker's memory names a sum the database no longer holds: never trusted again
        with service.read() as s:
            assert first.sums.take(rid, s.get(Round, rid).sum_blob_sha256) is None
    finally:
        service.engine.dispose()
