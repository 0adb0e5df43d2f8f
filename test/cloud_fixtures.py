"""Fixtures for the cloud tests: a throwaway PostgreSQL cluster, per-test databases on
SQLite and PostgreSQL, a fleet key, and helpers to build real signed encrypted deltas.

The PostgreSQL cluster is started by the fixture itself (initdb + pg_ctl on a free loopback
port, as the ``postgres`` OS user when running as root) and stopped afterwards. If the server
binaries are absent the PostgreSQL parameters skip with the reason (CI installs them from
scripts/apt-packages.txt).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

from scfl_cloud.testing import free_port


def _pg_bin() -> Path | None:
    override = os.environ.get("SCFL_PG_BIN")
    candidates = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


class PgCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="scfl-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o755)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        r = self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"), "-w", "-t", "60", "start")
        if r.returncode != 0:
            log = (self.root / "pg.log").read_text() if (self.root / "pg.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr[-2000:]} {log[-2000:]}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        import psycopg

        name = f"scfl_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql, see scripts/apt-packages.txt)")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def make_db_url(kind: str, request, tmp_dir: Path) -> str:
    """A fresh, empty database of ``kind`` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_dir / 'scfl.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


DB_KINDS = ["sqlite", "postgresql"]


# ----------------------------------------------------------------------------- crypto helpers
@pytest.fixture(scope="session")
def fleet_key():
    from scfl_nodes.core.crypto import generate_fleet_keys

    return generate_fleet_keys("rlwe")


SHAPES = [["b", [32]], ["w", [48, 32]]]  # ~1.5k values (canonical order: sorted names); small = fast tests
CLIP = 1.0


class RobotHelper:
    """A registered robot: its signing key, token and a deterministic plaintext delta per round."""

    def __init__(self, robot_id: str, admin, fleet_key, seed: int) -> None:
        from scfl_nodes.core.crypto import generate_signing_key

        self.robot_id = robot_id
        self.signing_key = generate_signing_key()
        self.token = admin.register_robot(robot_id, self.signing_key.public_bytes())
        self.fleet_key = fleet_key
        self.rng = np.random.default_rng(seed)

    def delta(self, skill_id: str, round_id: int, base_version: int = 0, *, num_clients: int = 8,
              shapes=SHAPES, signing_key=None):
        """Return (plaintext tensors, signed ciphertext bytes)."""
        from scfl_nodes.core.crypto import encrypt_delta

        tensors = {name: self.rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in shapes}
        enc = encrypt_delta(self.fleet_key, tensors, skill_id=skill_id, base_version=base_version, round_id=round_id,
                            robot_id=self.robot_id, signing_key=signing_key or self.signing_key, clip=CLIP,
                            num_clients=num_clients)
        return tensors, enc.to_bytes()


def expected_sum(fleet_key, tensor_list, shapes=SHAPES) -> dict[str, np.ndarray]:
    """What decrypting the aggregate must give EXACTLY: the dequantized sum of quantized deltas."""
    from scfl_nodes.core.crypto import dequantize, quantize

    total = sum(quantize(t, CLIP, fleet_key.params.scale) for t in tensor_list)
    return dequantize(total, sorted(shapes), fleet_key.params.scale)  # values are laid out by sorted name


def blob_files(storage: Path) -> set[str]:
    root = Path(storage) / "blobs"
    return {p.parent.name + p.name for p in root.glob("??/*") if p.is_file()}


def format1_delta(fleet_key, tensors: dict, *, skill_id: str, round_id: int, robot_id: str, signing_key,
                  base_version: int = 0, num_clients: int = 8) -> bytes:
    """A signed delta exactly as a robot of the previous build wrote it: container and header
    format 1, ``a`` expanded with SHAKE-128 (the cloud must still accept and fold it)."""
    import os

    from scfl_nodes.core.crypto import quantize, rlwe
    from scfl_nodes.core.crypto.rng import RandomSource
    from scfl_nodes.core.crypto.wire import MAGIC_DELTA, pack

    params = fleet_key.params
    plain = quantize(tensors, CLIP, params.scale).view(np.uint64) & np.uint64(params.plain_modulus - 1)
    seed = os.urandom(16)
    b = fleet_key._secret.encrypt(plain, seed, RandomSource(), rlwe.A_EXPANSIONS[1])
    header = {"version": 1, "backend": "rlwe", "params_id": params.params_id, "key_id": fleet_key.key_id,
              "skill_id": skill_id, "base_version": base_version, "round_id": round_id, "robot_id": robot_id,
              "shapes": [[k, list(np.shape(tensors[k]))] for k in sorted(tensors)], "num_values": int(plain.size),
              "nonce": seed.hex(), "clip": CLIP, "num_clients": num_clients, "weight": 1.0, "mask_cohort": None,
              "created": 0.0}
    prefix, digest = pack(MAGIC_DELTA, header, rlwe.pack_coeffs(b), version=1)
    return prefix + digest + signing_key.sign(digest)
