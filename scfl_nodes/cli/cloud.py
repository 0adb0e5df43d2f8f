"""`scfl cloud`: run the cloud skill library / aggregator and administer a fleet."""

from __future__ import annotations

import argparse
import json
import os


def register(subparsers) -> None:
    p = subparsers.add_parser("cloud", help="cloud skill library and federated aggregator (FastAPI)")
    sub = p.add_subparsers(dest="cloud_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    serve = sub.add_parser("serve", help="run the server (migrates the database first)")
    from scfl_cloud.server import add_serve_arguments
    from scfl_nodes.core.config import default_config_path

    from scfl_cloud.server import add_scale_arguments

    add_serve_arguments(serve, default_config=str(default_config_path()))
    add_scale_arguments(serve)
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run a standalone aggregation worker on the shared database "
                                           "(any number, any machine; docs/deployment.md)")
    add_serve_arguments(worker, default_config=str(default_config_path()))
    worker.set_defaults(func=_worker, standalone_worker=True)

    admin = sub.add_parser("admin", help="fleet management through the HTTP API (needs the admin token)")
    admin.add_argument("--url", default=os.environ.get("SCFL_CLOUD_URL", "http://127.0.0.1:8000"))
    admin.add_argument("--admin-token", default=os.environ.get("SCFL_CLOUD_ADMIN_TOKEN"),
                       help="default $SCFL_CLOUD_ADMIN_TOKEN")
    admin.add_argument("--ca-cert", default=os.environ.get("SCFL_CLOUD_CA"),
                       help="PEM CA certificate that signed the server's (default $SCFL_CLOUD_CA; else system CAs)")
    admin.add_argument("--insecure-http", action="store_true", help="allow plain http:// to a non-loopback host")
    asub = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    reg = asub.add_parser("register-robot", help="register a robot's Ed25519 public key; prints its token")
    reg.add_argument("robot_id")
    reg.add_argument("public_key", help="file with the raw 32-byte public key, or a RobotSigningKey file")
    rnd = asub.add_parser("open-round", help="open a federated round")
    rnd.add_argument("skill_id")
    rnd.add_argument("--base-version", type=int, default=0)
    rnd.add_argument("--quorum", type=int, required=True)
    rnd.add_argument("--deadline-s", type=float, default=3600.0)
    rnd.add_argument("--min-participants", type=int, default=None,
                     help="deltas needed to publish (default and floor: the cloud's, 3)")
    rnd.add_argument("--plain", action="store_true",
                     help="no secure aggregation in this round (default: the cloud's setting, on for quorum >= 3)")
    can = asub.add_parser("cancel-round", help="cancel an unfinished round (nothing is published)")
    can.add_argument("round_id", type=int)
    drop = asub.add_parser("drop-delta", help="drop one robot's delta from an unfinished or quarantined round")
    drop.add_argument("round_id", type=int)
    drop.add_argument("robot_id")
    ctx = asub.add_parser("put-context", help="register the fleet's public context file (no secret key)")
    ctx.add_argument("path")
    sk = asub.add_parser("create-skill", help="create a skill's metadata")
    sk.add_argument("name")
    sk.add_argument("--task", action="append", default=[], help="task description (repeatable)")
    sk.add_argument("--skill-id", default=None)
    asub.add_parser("status", help="print /cloud/status as JSON")
    asub.add_parser("robots", help="list registered robots")
    admin.set_defaults(func=_admin)


def _run_cloud_process(args: argparse.Namespace, what: str, run) -> int:
    """Settings from the command line (one-line errors), then ``run(settings)`` until it stops."""
    from scfl_nodes.cli import CliError
    from scfl_cloud.server import settings_from_args

    if args.config and not os.path.isfile(args.config):
        raise CliError(f"config file {args.config} does not exist")
    try:
        settings = settings_from_args(args)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc).strip().splitlines()[0]) from None
    try:
        run(settings)
    except Exception as exc:  # e.g. database unreachable: one line, not a traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CliError(f"cannot start {what}: {type(exc).__name__}: {first}") from None
    return 0


def _serve(args: argparse.Namespace) -> int:
    from scfl_cloud.server import serve

    return _run_cloud_process(args, "the cloud",
                              lambda settings: serve(settings, args.host, args.port, args.log_level, workers=args.workers))


def _worker(args: argparse.Namespace) -> int:
    from scfl_cloud.server import run_worker

    return _run_cloud_process(args, "the aggregation worker", lambda settings: run_worker(settings, args.log_level))


def _read_public_key(path: str) -> bytes:
    from scfl_nodes.cli import CliError

    if not os.path.isfile(path):
        raise CliError(f"public key file {path} does not exist")
    raw = open(path, "rb").read()
    if len(raw) == 32:
        return raw
    try:
        from scfl_nodes.core.crypto import load_signing_key  # robot-side key file: derive the public half

        return load_signing_key(path).public_bytes()
    except Exception:
        raise CliError(f"{path}: expected a raw 32-byte Ed25519 public key or a robot signing key file") from None


def _admin(args: argparse.Namespace) -> int:
    from scfl_nodes.cli import CliError
    from scfl_cloud.client import CloudClient, CloudError

    if not args.admin_token and args.admin_command not in ("status",):
        raise CliError("admin token required: --admin-token or $SCFL_CLOUD_ADMIN_TOKEN")
    try:
        c = CloudClient(args.url, admin_token=args.admin_token, ca_cert=args.ca_cert, insecure_http=args.insecure_http)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    with c:
        try:
            if args.admin_command == "register-robot":
                print(c.register_robot(args.robot_id, _read_public_key(args.public_key)))
            elif args.admin_command == "open-round":
                out = c.open_round(args.skill_id, args.base_version, args.quorum, args.deadline_s,
                                   min_participants=args.min_participants,
                                   secure_aggregation=False if args.plain else None)
                print(json.dumps(out, indent=2))
            elif args.admin_command == "cancel-round":
                print(json.dumps(c.cancel_round(args.round_id), indent=2))
            elif args.admin_command == "drop-delta":
                print(json.dumps(c.drop_delta(args.round_id, args.robot_id), indent=2))
            elif args.admin_command == "put-context":
                if not os.path.isfile(args.path):
                    raise CliError(f"context file {args.path} does not exist")
                print(json.dumps(c.put_fleet_context(open(args.path, "rb").read()), indent=2))
            elif args.admin_command == "create-skill":
                print(json.dumps(c.create_skill(args.name, args.task, skill_id=args.skill_id), indent=2))
            elif args.admin_command == "status":
                print(json.dumps(c.status(), indent=2))
            elif args.admin_command == "robots":
                print(json.dumps(c.list_robots(), indent=2))
        except CloudError as exc:
            raise CliError(str(exc)) from None
    return 0
