"""Runtime settings of the cloud service (one frozen object shared by app, worker and CLI)."""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path
from typing import Optional

DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class CloudSettings:
    """Everything the server needs; validated here so a bad flag fails before binding a port."""

    db_url: str
    storage_dir: Path
    admin_token: str
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_context_bytes: int = 256 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024  # every JSON request body
    worker_poll_s: float = 0.5
    fold_batch: int = 32  # deltas per checkpoint of a round's running sum (worker.fold_batch)
    upload_threads: int = 4  # uploads verified and stored at once (app.py upload_threads)
    fold_checkpoint_s: float = 2.0  # ... or sooner, once its oldest uncommitted fold is this old
    # retention: per-robot ciphertexts are deleted once their round is published/expired/cancelled
    prune_deltas_after_publish: bool = True
    public_status: bool = True
    # no aggregate of fewer robots is ever published (a 1- or 2-robot "sum" reveals deltas to key holders)
    min_participants: int = 3
    # "auto": every round of quorum >= 3 runs secure aggregation (masks + dropout recovery,
    # scfl_cloud/secagg.py) unless the operator opens it with secure_aggregation=false; "off": only on request
    secure_aggregation: str = "auto"
    secagg_stage_timeout_s: float = 60.0  # how long each key stage of an automatic secure round waits
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None
    # False: this API process runs no aggregation thread; `scfl cloud worker` processes fold
    aggregate: bool = True
    # start-up orphan collection spares blobs younger than this: with several processes on one
    # store, a young unreferenced blob may be another process's upload or sum not committed yet
    orphan_grace_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.db_url or "://" not in self.db_url:
            raise ValueError(f"db url must look like sqlite:///path or postgresql+psycopg://..., got {self.db_url!r}")
        if len(self.admin_token) < 16:
            raise ValueError("admin token must be at least 16 characters")
        if self.max_upload_bytes < 1024:
            raise ValueError(f"max upload size must be >= 1024 bytes, got {self.max_upload_bytes}")
        if self.worker_poll_s <= 0:
            raise ValueError("worker poll interval must be > 0")
        if not 0 <= self.fold_checkpoint_s <= 3600:
            raise ValueError(f"fold_checkpoint_s must be in [0, 3600], got {self.fold_checkpoint_s}")
        if self.fold_batch < 1:
            raise ValueError("fold batch must be >= 1")
        if self.orphan_grace_s < 0:
            raise ValueError(f"orphan grace must be >= 0 s, got {self.orphan_grace_s}")
        if self.min_participants < 1:
            raise ValueError(f"min participants must be >= 1, got {self.min_participants}")
        if self.secure_aggregation not in ("auto", "off"):
            raise ValueError(f"secure aggregation must be auto or off, got {self.secure_aggregation!r}")
        if not 0 < self.secagg_stage_timeout_s <= 86_400:
            raise ValueError("secure-aggregation stage timeout must be in (0, 86400] s")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both a TLS certificate and its key, or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS file {path} does not exist")

    @property
    def signing_key_path(self) -> Path:
        """The cloud's Ed25519 key that signs published aggregates (0600, created on first start)."""
        return Path(self.storage_dir) / "cloud_signing_key.pem"

    @property
    def blob_dir(self) -> Path:
        return Path(self.storage_dir) / "blobs"


def normalize_db_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and route them to the psycopg 3 driver we ship."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def default_cloud_home() -> Path:
    home = os.environ.get("SCFL_HOME") or str(Path.home() / ".scfl")
    return Path(home) / "cloud"


def load_or_create_admin_token(storage_dir: Path) -> str:
    """Read ``<storage>/admin_token`` or create it (0600) so a fresh server is never open to anyone."""
    path = Path(storage_dir) / "admin_token"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)  # hex: `--admin-token TOKEN` never starts with "-"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token
