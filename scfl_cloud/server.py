"""Run the cloud under uvicorn: ``python -m scfl_cloud.server`` or ``scfl cloud serve``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .settings import CloudSettings, default_cloud_home, load_or_create_admin_token


def add_serve_arguments(p: argparse.ArgumentParser, default_config: str | None = None) -> None:
    """Flags override the ``cloud:`` section of the config file, which overrides the built-in defaults."""
    home = default_cloud_home()
    p.add_argument("--config", default=default_config,
                   help="scfl.yaml whose `cloud:` section gives the defaults" + (
                       f" (default {default_config})" if default_config else " (default: built-in defaults)"))
    p.add_argument("--db", default=None,
                   help=f"SQLAlchemy URL: sqlite:///path or postgresql://user@host/db (default sqlite:///{home}/scfl.db)")
    p.add_argument("--storage", default=None, help=f"directory for ciphertext blobs (default {home})")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    p.add_argument("--admin-token", default=None,
                   help="admin bearer token (default: $SCFL_CLOUD_ADMIN_TOKEN, else created in <storage>/admin_token)")
    p.add_argument("--max-upload-mb", type=float, default=None, help="largest accepted upload in MiB (default 32)")
    p.add_argument("--prune-deltas", action="store_true", default=None,
                   help="delete per-robot delta ciphertexts once their round ends (the default)")
    p.add_argument("--keep-deltas", action="store_true", default=None,
                   help="keep per-robot delta ciphertexts after their round ends (weaker privacy)")
    p.add_argument("--min-participants", type=int, default=None,
                   help="never publish an aggregate of fewer robots (default 3)")
    p.add_argument("--secure-aggregation", choices=["auto", "off"], default=None,
                   help="auto (default): rounds of quorum >= 3 run secure aggregation with dropout recovery; "
                        "off: only rounds an admin enables")
    p.add_argument("--tls-cert", default=None, help="PEM certificate (chain): serve HTTPS")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--insecure-http", action="store_true",
                   help="allow plain HTTP on a non-loopback address (tokens and uploads travel in clear)")
    p.add_argument("--private-status", action="store_true", default=None, help="require a token for / and /cloud/status")
    p.add_argument("--orphan-grace-s", type=float, default=None,
                   help="start-up orphan collection spares blobs younger than this (default 0 for one "
                        "process; 600 with --workers > 1, --no-aggregation or `scfl cloud worker`)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def add_scale_arguments(p: argparse.ArgumentParser) -> None:
    """`scfl cloud serve` only: API processes and whether they aggregate (docs/deployment.md)."""
    p.add_argument("--workers", type=int, default=1,
                   help="API server processes on this port (PostgreSQL only when > 1; default 1)")
    p.add_argument("--no-aggregation", action="store_true",
                   help="run no aggregation thread here; `scfl cloud worker` processes fold and publish")


def _cloud_config(args: argparse.Namespace):
    from scfl_nodes.core.config import CloudConfig, load_config

    return load_config(args.config).cloud if args.config else CloudConfig()


def settings_from_args(args: argparse.Namespace) -> CloudSettings:
    """Merge flags over the config file; raises ValueError (incl. ConfigError) with one line."""
    cfg = _cloud_config(args)
    storage = Path(os.path.expanduser(args.storage)) if args.storage else cfg.storage_path
    storage.mkdir(parents=True, exist_ok=True)
    db = args.db or cfg.db_url or f"sqlite:///{storage / 'scfl.db'}"
    token = args.admin_token or os.environ.get("SCFL_CLOUD_ADMIN_TOKEN") or load_or_create_admin_token(storage)
    max_mb = args.max_upload_mb if args.max_upload_mb is not None else cfg.max_upload_mb
    if args.host is None:
        args.host = cfg.host
    if args.port is None:
        args.port = cfg.port
    cert = args.tls_cert or cfg.tls_cert or None
    key = args.tls_key or cfg.tls_key or None
    if cert is None and not is_loopback(args.host) and not getattr(args, "insecure_http", False):
        raise ValueError(f"refusing plain HTTP on non-loopback address {args.host}: give --tls-cert/--tls-key "
                         "(cloud.tls_cert/tls_key) or pass --insecure-http")
    prune = cfg.prune_deltas if args.prune_deltas is None else True
    workers = getattr(args, "workers", 1)
    aggregate = not getattr(args, "no_aggregation", False)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers > 1 and not db.startswith("postgresql"):
        raise ValueError("--workers > 1 needs PostgreSQL (--db postgresql://...): processes coordinate through it")
    shared = workers > 1 or not aggregate or getattr(args, "standalone_worker", False)
    grace = args.orphan_grace_s if args.orphan_grace_s is not None else (600.0 if shared else 0.0)
    if args.keep_deltas:
        prune = False
    return CloudSettings(db_url=db, storage_dir=storage, admin_token=token,
                         max_upload_bytes=int(round(max_mb * 2**20)),
                         prune_deltas_after_publish=prune,
                         public_status=not args.private_status and cfg.public_status,
                         worker_poll_s=cfg.worker_poll_s, fold_batch=cfg.fold_batch,
                         fold_checkpoint_s=cfg.fold_checkpoint_s,
                         min_participants=args.min_participants if args.min_participants is not None
                         else cfg.min_participants,
                         secure_aggregation=args.secure_aggregation or cfg.secure_aggregation,
                         secagg_stage_timeout_s=cfg.secagg_stage_timeout_s,
                         tls_cert=Path(os.path.expanduser(cert)) if cert else None,
                         tls_key=Path(os.path.expanduser(key)) if key else None,
                         aggregate=aggregate, orphan_grace_s=grace)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: the only places plain HTTP is allowed by default."""
    import ipaddress

    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_SETTINGS_ENV = "SCFL_CLOUD_SETTINGS_JSON"  # parent -> uvicorn worker processes (env, never argv)


def _settings_to_env(settings: CloudSettings) -> str:
    import dataclasses
    import json

    return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()})


def app_from_env():
    """uvicorn factory for ``--workers N``: each API process builds its app from the parent's settings."""
    import json

    from .app import create_app

    raw = json.loads(os.environ[_SETTINGS_ENV])
    for k in ("storage_dir", "tls_cert", "tls_key"):
        raw[k] = Path(raw[k]) if raw[k] else None
    return create_app(CloudSettings(**raw))


def _setup_logging(log_level: str) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def serve(settings: CloudSettings, host: str, port: int, log_level: str = "info", workers: int = 1) -> None:
    """One API process (with its aggregation thread unless settings.aggregate is False), or
    ``workers`` processes on one port sharing PostgreSQL and the blob store."""
    import uvicorn

    from .app import create_app

    _setup_logging(log_level)
    db = settings.db_url.split("@")[-1]  # never print a password from the URL
    scheme = "https" if settings.tls_cert else "http"
    tls = dict(ssl_certfile=str(settings.tls_cert), ssl_keyfile=str(settings.tls_key)) if settings.tls_cert else {}
    if workers > 1:
        from .db import make_engine, migrate

        from .service import _load_or_create_signing_key

        engine = make_engine(settings.db_url)
        migrate(engine)  # once, before the processes start (they find the schema at head)
        engine.dispose()
        _load_or_create_signing_key(settings.signing_key_path)  # one key for all of them
        os.environ[_SETTINGS_ENV] = _settings_to_env(settings)
        print(f"scfl cloud: {workers} API processes on {scheme}://{host}:{port} (db {db}, storage "
              f"{settings.storage_dir}, aggregation {'in each' if settings.aggregate else 'external'})",
              file=sys.stderr, flush=True)
        uvicorn.run("scfl_cloud.server:app_from_env", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level, timeout_graceful_shutdown=5, **tls)
        return
    app = create_app(settings)  # migrates before the port opens
    print(f"scfl cloud: serving on {scheme}://{host}:{port} (db {db}, storage {settings.storage_dir})",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5, **tls)


def run_worker(settings: CloudSettings, log_level: str = "info") -> None:
    """A standalone aggregation worker (``scfl cloud worker``): closes, folds and publishes
    rounds of the shared database until SIGTERM/SIGINT. Any number may run, on any machine
    that reaches PostgreSQL and the blob store; they split rounds through round claims."""
    import signal

    from .service import CloudService
    from .worker import AggregationWorker

    _setup_logging(log_level)
    service = CloudService(settings)  # migrates
    service.collect_orphans()
    worker = AggregationWorker(service)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop(timeout=0))
    signal.signal(signal.SIGINT, lambda *_: worker.stop(timeout=0))
    print(f"scfl cloud worker: pid {os.getpid()} aggregating (db {settings.db_url.split('@')[-1]})",
          file=sys.stderr, flush=True)
    try:
        worker.run()
    finally:
        service.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scfl_cloud.server", description=__doc__)
    add_serve_arguments(parser)
    add_scale_arguments(parser)
    parser.add_argument("--worker", dest="standalone_worker", action="store_true",
                        help="run a standalone aggregation worker instead of the API (= scfl cloud worker)")
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"scfl cloud serve: error: {exc}", file=sys.stderr)
        return 2
    if args.standalone_worker:
        run_worker(settings, args.log_level)
    else:
        serve(settings, args.host, args.port, args.log_level, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
