"""Run a real cloud server locally (uvicorn in a subprocess on a free loopback port).

Used by `scfl fleet` / `scfl demo` (the simulated fleet federates through it), the cloud's
benchmarks and the tests (``scfl_cloud.testing`` re-exports it)::

    with CloudServer(tmp_path / "cloud") as server:           # SQLite by default
        admin = server.admin_client()
        token = admin.register_robot("r1", signing_key.public_bytes())
        ...
    server.kill(); server.start()                              # crash + restart, same DB/storage
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from .client import CloudClient, CloudUnavailable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _CloudProcess:
    """A cloud subprocess with a log file: its tail for error messages, graceful stop, crash."""

    proc: Optional[subprocess.Popen] = None
    log_path: Path

    def _spawn(self, cmd: list[str], extra_env: dict) -> None:
        # the admin token travels in the environment, not argv (argv is world-readable in ps)
        env = {**os.environ, **extra_env, "SCFL_CLOUD_ADMIN_TOKEN": self.admin_token}
        repo = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Crash the process (SIGKILL): no shutdown handlers run."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class CloudServer(_CloudProcess):
    def __init__(self, storage_dir: str | os.PathLike, db_url: Optional[str] = None, *,
                 admin_token: Optional[str] = None, max_upload_bytes: Optional[int] = None,
                 extra_env: Optional[dict] = None, extra_args: Optional[list[str]] = None,
                 log_level: str = "warning", tls: Optional[tuple[str, str, str]] = None) -> None:
        """``tls``: (certificate, key, CA certificate) PEM paths: serve HTTPS, clients trust the CA."""
        self.storage_dir = Path(storage_dir)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or f"sqlite:///{self.storage_dir / 'scfl.db'}"
        self.admin_token = admin_token or secrets.token_hex(24)
        self.max_upload_bytes = max_upload_bytes
        self.extra_env = dict(extra_env or {})
        self.extra_args = list(extra_args or [])
        self.log_level = log_level
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.storage_dir / "server.log"
        self.tls = tls

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}" if self.tls else f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "CloudServer":
        """Start (or restart after kill/stop) on a fresh free port; returns when /healthz answers."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        self.port = free_port()
        cmd = [sys.executable, "-m", "scfl_cloud.server", "--db", self.db_url, "--storage", str(self.storage_dir),
               "--host", "127.0.0.1", "--port", str(self.port), "--log-level", self.log_level, *self.extra_args]
        if self.max_upload_bytes is not None:
            cmd += ["--max-upload-mb", repr(self.max_upload_bytes / 2**20)]
        if self.tls:
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        self._spawn(cmd, self.extra_env)
        deadline = time.monotonic() + timeout
        with self.client(timeout=2.0) as probe:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"cloud server exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")
                try:
                    probe.healthz()
                    return self
                except CloudUnavailable:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise TimeoutError(f"cloud server did not answer /healthz in {timeout} s:\n{self.log_tail()}")
                    time.sleep(0.1)

    def client(self, token: Optional[str] = None, **kw) -> CloudClient:
        if self.tls:
            kw.setdefault("ca_cert", str(self.tls[2]))
        return CloudClient(self.url, token=token, **kw)

    def admin_client(self, **kw) -> CloudClient:
        return self.client(admin_token=self.admin_token, **kw)

    def __enter__(self) -> "CloudServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class CloudWorker(_CloudProcess):
    """A standalone aggregation worker process (``python -m scfl_cloud.server --worker``, the
    same code as ``scfl cloud worker``) on a shared database and blob store."""

    def __init__(self, storage_dir: str | os.PathLike, db_url: str, *, admin_token: str,
                 extra_env: Optional[dict] = None, name: str = "worker", log_level: str = "info") -> None:
        self.storage_dir = Path(storage_dir)
        self.db_url = db_url
        self.admin_token = admin_token
        self.extra_env = dict(extra_env or {})
        self.log_path = self.storage_dir / f"{name}.log"
        self.log_level = log_level
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "CloudWorker":
        cmd = [sys.executable, "-m", "scfl_cloud.server", "--worker", "--db", self.db_url,
               "--storage", str(self.storage_dir), "--log-level", self.log_level]
        self._spawn(cmd, self.extra_env)
        return self

    def wait_running(self, timeout: float = 60.0) -> "CloudWorker":
        """Until the worker has migrated and entered its loop (it logs one line then)."""
        deadline = time.monotonic() + timeout
        while "aggregating" not in self.log_tail():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker did not start in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self
