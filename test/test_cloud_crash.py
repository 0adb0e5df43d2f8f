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
