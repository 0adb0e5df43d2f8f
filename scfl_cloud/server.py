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
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


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
    if args.keep_deltas:
        prune = False
    return CloudSettings(db_url=db, storage_dir=storage, admin_token=token,
                         max_upload_bytes=int(round(max_mb * 2**20)),
                         prune_deltas_after_publish=prune,
                         public_status=not args.private_status and cfg.public_status,
                         worker_poll_s=cfg.worker_poll_s, fold_batch=cfg.fold_batch,
                         min_participants=args.min_participants if args.min_participants is not None
                         else cfg.min_participants,
                         secure_aggregation=args.secure_aggregation or cfg.secure_aggregation,
                         secagg_stage_timeout_s=cfg.secagg_stage_timeout_s,
                         tls_cert=Path(os.path.expanduser(cert)) if cert else None,
                         tls_key=Path(os.path.expanduser(key)) if key else None)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: the only places plain HTTP is allowed by default."""
    import ipaddress

    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(settings: CloudSettings, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    app = create_app(settings)  # migrates before the port opens
    db = settings.db_url.split("@")[-1]  # never print a password from the URL
    scheme = "https" if settings.tls_cert else "http"
    print(f"scfl cloud: serving on {scheme}://{host}:{port} (db {db}, storage {settings.storage_dir})",
          file=sys.stderr, flush=True)
    tls = dict(ssl_certfile=str(settings.tls_cert), ssl_keyfile=str(settings.tls_key)) if settings.tls_cert else {}
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5, **tls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scfl_cloud.server", description=__doc__)
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"scfl cloud serve: error: {exc}", file=sys.stderr)
        return 2
    serve(settings, args.host, args.port, args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
