"""Scale-out on PostgreSQL: two API server processes and two standalone aggregation workers
share one real PostgreSQL database and one blob store, with no other channel between them.
200 robots upload concurrently across both servers; one worker is SIGKILLed in the middle
of a fold (after writing a new running sum, before committing it); the other takes the
round over. The published aggregate decrypts to the exact sum, every delta counted once."""

from __future__ import annotations

import concurrent.futures
import secrets
import time

import numpy as np
import pytest
from sqlalchemy import func, select

from cloud_fixtures import RobotHelper, expected_sum
from cloud_fixtures import fleet_key, pg_cluster  # noqa: F401  (fixtures)
from scfl_cloud.db import make_engine
from scfl_cloud.models import Delta
from scfl_cloud.testing import CloudServer, CloudWorker
from scfl_cloud.worker import FAULT_ENV

pytestmark = pytest.mark.timeout(900)

N_ROBOTS = 200
SMALL = [["b", [16]], ["w", [16, 16]]]  # 272 values: one ring element per upload keeps CI time down


def _wait(cond, timeout: float, what: str, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log()}"
        time.sleep(0.1)


def test_two_api_servers_two_workers_one_killed_mid_fold(tmp_path, pg_cluster, fleet_key):
    db = pg_cluster.create_database()
    storage = tmp_path / "cloud"
    token = secrets.token_hex(24)
    marker = tmp_path / "worker-a-mid-fold"
    # API servers that never aggregate (only the two workers fold and publish); the second one is
    # itself two uvicorn processes on one port (`scfl cloud serve --workers 2`)
    servers = [CloudServer(storage, db, admin_token=token, extra_args=["--no-aggregation", *more])
               for more in ([], ["--workers", "2"])]
    worker_a = CloudWorker(storage, db, admin_token=token, name="worker-a",
                           extra_env={FAULT_ENV: f"block_before_fold_commit:{marker}"})
    worker_b = CloudWorker(storage, db, admin_token=token, name="worker-b")
    engine = make_engine(db)
    try:
        for s in servers:  # one after the other: the first creates the cloud signing key
            s.start(timeout=120)
        assert all(s.admin_client().healthz()["external_workers"] for s in servers)
        admin = servers[0].admin_client(timeout=60)
        admin.put_fleet_context(fleet_key.cloud_context())
        skill = admin.create_skill("wipe", ["wipe the table"], skill_id="skill_scale")["skill_id"]
        bots = [RobotHelper(f"scale-{i:03d}", admin, fleet_key, seed=i) for i in range(N_ROBOTS)]
        rid = admin.open_round(skill, 0, quorum=N_ROBOTS, deadline_s=3600, secure_aggregation=False)["round_id"]
        uploads = [bot.delta(skill, rid, num_clients=N_ROBOTS, shapes=SMALL) for bot in bots]
        worker_a.start().wait_running()

        def upload(i: int) -> dict:
            server = servers[i % 2]  # half the robots on each API server
            with server.client(bots[i].token, timeout=120) as c:
                return c.upload_delta(bots[i].token, uploads[i][1])

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            receipts = list(pool.map(upload, range(N_ROBOTS)))
        assert all(r["kind"] == "delta" for r in receipts)
        assert {r["robot_id"] for r in receipts} == {b.robot_id for b in bots}

        # worker A has written a new running sum and blocks before committing it
        _wait(marker.exists, 120, "worker A to reach the risky point", worker_a.log_tail)
        worker_b.start().wait_running()
        time.sleep(3.0)  # several poll periods of B: the round is A's while A lives
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Delta).where(Delta.folded.is_(True))) == 0
        worker_a.kill()  # mid-fold: its claim dies with its database connection

        info = admin.wait_for_round(rid, timeout=300)
        assert (info["state"], info["accepted"], info["folded"]) == ("published", N_ROBOTS, N_ROBOTS), worker_b.log_tail()
        from scfl_nodes.core.crypto import EncryptedAggregate

        agg = EncryptedAggregate.from_bytes(servers[1].admin_client().download_aggregate(rid))
        assert agg.count == N_ROBOTS and sorted(agg.robot_ids) == sorted(b.robot_id for b in bots)
        got = fleet_key.decrypt_aggregate(agg)
        want = expected_sum(fleet_key, [t for t, _ in uploads], shapes=SMALL)
        for name in want:
            assert np.array_equal(got[name], want[name]), name  # exact: nothing lost, nothing twice
        with engine.connect() as conn:
            rows = conn.execute(select(Delta.folded, func.count()).where(Delta.round_id == rid)
                                .group_by(Delta.folded)).all()
        assert rows == [(True, N_ROBOTS)]
        assert "running sum moved" not in worker_b.log_tail(20000)  # B never raced a live A
    finally:
        worker_a.kill()
        worker_b.stop()
        for s in servers:
            s.stop()
        engine.dispose()


def test_several_api_processes_need_postgresql(tmp_path):
    """SQLite cannot coordinate processes: `--workers 2` on it is one clear line, exit 2."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "scfl_nodes", "cloud", "serve", "--workers", "2",
                        "--storage", str(tmp_path / "cloud"), "--admin-token", "x" * 24],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and "--workers > 1 needs PostgreSQL" in lines[0] and "Traceback" not in r.stderr
