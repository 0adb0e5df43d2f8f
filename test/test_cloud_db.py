"""Persistence layer: Alembic migrations agree with the models on SQLite and PostgreSQL, the
blob store is content-addressed and atomic, and `scfl cloud serve` works as documented."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from cloud_fixtures import DB_KINDS, make_db_url
from cloud_fixtures import pg_cluster  # noqa: F401  (fixture)
from scfl_cloud.blobstore import BlobNotFound, LocalBlobStore
from scfl_cloud.db import current_revision, make_engine, migrate

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("db_kind", DB_KINDS)
def test_migrations_match_models_and_round_trip(request, tmp_path, db_kind):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from scfl_cloud.db import alembic_config
    from scfl_cloud.models import Base

    engine = make_engine(make_db_url(db_kind, request, tmp_path))
    try:
        assert current_revision(engine) is None
        migrate(engine)
        assert current_revision(engine) == "0004"
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        migrate(engine)  # idempotent: the server runs it on every start
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert current_revision(engine) is None
        migrate(engine, "0001")  # an old database is upgraded in place, rows kept, new column defaulted
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO skills (skill_id, name, description, task_descriptions, extra, created_at)"
                                 " VALUES ('s', 'n', '', '[]', '{}', 0)")
            conn.exec_driver_sql("INSERT INTO fleet_contexts VALUES ('k', 'rlwe', 'p', 'h', 0)")
            conn.exec_driver_sql("INSERT INTO rounds (skill_id, base_version, key_id, quorum, deadline_at, state,"
                                 " opened_at, accepted_count, folded_count, aggregation_seconds)"
                                 " VALUES ('s', 0, 'k', 3, 1, 'open', 0, 0, 0, 0)")
        migrate(engine)
        assert current_revision(engine) == "0004"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT quorum, min_participants FROM rounds").all() == [(3, 1)]
    finally:
        engine.dispose()


def test_blob_store_is_content_addressed_and_atomic(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    digest = store.put(b"ciphertext" * 1000)
    assert digest == __import__("hashlib").sha256(b"ciphertext" * 1000).hexdigest()
    assert store.put(b"ciphertext" * 1000) == digest  # idempotent
    assert store.get(digest) == b"ciphertext" * 1000 and store.size(digest) == 10000
    assert b"".join(store.iter_chunks(digest, chunk_size=999)) == b"ciphertext" * 1000
    assert store.path(digest).parent.name == digest[:2]
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []  # no temp file left behind
    for bad in ("0" * 64, "../../etc/passwd", "zz" * 32):
        with pytest.raises(BlobNotFound):
            store.get(bad)
    # a temp file from a crashed write is garbage and is removed on open
    (tmp_path / "blobs" / "tmp" / "deadbeef.partial").write_bytes(b"half")
    LocalBlobStore(tmp_path / "blobs")
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    store.delete(digest)
    assert not store.exists(digest)
    store.delete(digest)  # deleting twice is fine



@pytest.mark.parametrize("direct_io", [True, False])
def test_blob_store_writes_every_length_exactly(tmp_path, direct_io):
    """Whole pages go out with O_DIRECT through a reused aligned staging buffer, the last
    partial page normally: every length around the page and staging-buffer edges, and a
    memoryview of a larger buffer, read back byte for byte under their SHA-256 name."""
    import hashlib
    import os

    from scfl_cloud.blobstore import _DIRECT_ALIGN, _STAGE_BYTES

    store = LocalBlobStore(tmp_path / "blobs", direct_io=direct_io)
    lengths = [1, _DIRECT_ALIGN - 1, _DIRECT_ALIGN, _DIRECT_ALIGN + 1, _STAGE_BYTES - 1, _STAGE_BYTES,
               _STAGE_BYTES + 7, 3 * _STAGE_BYTES + _DIRECT_ALIGN + 3]
    for n in lengths:
        data = os.urandom(n)
        digest = store.put(data)
        assert digest == hashlib.sha256(data).hexdigest() and store.get(digest) == data, n
        assert store.path(digest).read_bytes() == data and store.size(digest) == n
    big = os.urandom(2 * _STAGE_BYTES + 5)
    view = memoryview(big)[3:-1]
    assert store.get(store.put(view)) == big[3:-1]
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def _scfl(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "scfl_nodes", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_scfl_cloud_serve_defaults_and_admin_cli(tmp_path):
    from scfl_cloud.client import CloudClient
    from scfl_cloud.testing import free_port

    env = {**os.environ, "SCFL_HOME": str(tmp_path / "home")}
    env.pop("SCFL_CLOUD_ADMIN_TOKEN", None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scfl_nodes", "cloud", "serve", "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = CloudClient(f"http://127.0.0.1:{port}")
        health = client.wait_ready(timeout=60)
        assert health["db"] == "sqlite" and health["worker_alive"]
        home = tmp_path / "home" / "cloud"
        assert (home / "scfl.db").is_file()  # sane default: SQLite under $SCFL_HOME/cloud
        token_file = home / "admin_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        out = _scfl("cloud", "admin", "--url", client.base_url, "--admin-token", token, "create-skill", "wave",
                    "--task", "wave hello", "--skill-id", "skill_cli", env=env)
        assert out.returncode == 0, out.stderr
        out = _scfl("cloud", "admin", "--url", client.base_url, "--admin-token", "wrong-token-xxxxxxxx",
                    "robots", env=env)
        assert out.returncode == 2 and out.stderr.startswith("scfl cloud: error: 401 unauthorized")
        assert "Traceback" not in out.stderr
        status = client.status()
        assert status["skills"] == 1
    finally:
        proc.terminate()
        proc.wait(20)


def test_scfl_cloud_serve_reports_bad_database_in_one_line(tmp_path):
    env = {**os.environ, "SCFL_HOME": str(tmp_path / "home")}
    for db in ("postgresql://nobody@127.0.0.1:1/nothing", "mysql://x@y/z", "not-a-url"):
        t0 = time.monotonic()
        out = _scfl("cloud", "serve", "--db", db, "--port", "1", env=env)
        assert out.returncode == 2, (db, out.stderr)
        assert out.stderr.startswith("scfl cloud: error:") and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert time.monotonic() - t0 < 60
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("cloud:\n  port: 70000\n")
    out = _scfl("cloud", "serve", "--config", str(bad_cfg), env=env)
    assert out.returncode == 2 and "cloud.port" in out.stderr
