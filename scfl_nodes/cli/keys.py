"""`scfl keys`: create fleet encryption keys and robot signing keys (files mode 0600)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="create fleet encryption keys and robot signing keys")
    sub = parser.add_subparsers(dest="keys_command", metavar="KIND")

    fleet = sub.add_parser("fleet", help="fleet secret key (robots) + cloud context (cloud, no secret)")
    fleet.add_argument("--backend", choices=("rlwe", "tenseal"), default="rlwe")
    fleet.add_argument("--params", default=None, help="parameter set id (default: the backend's 128-bit+ set)")
    fleet.add_argument("--out", required=True, help="directory for fleet.key and cloud.ctx")
    fleet.set_defaults(func=_fleet)

    robot = sub.add_parser("robot", help="a robot's Ed25519 signing key pair")
    robot.add_argument("--out", required=True, help="directory for robot.key and robot.pub")
    robot.set_defaults(func=_robot)

    show = sub.add_parser("show", help="print backend, parameters and key id of a key or context file")
    show.add_argument("path")
    show.set_defaults(func=_show)

    table = sub.add_parser("params", help="list the parameter sets with estimated security and capacity")
    table.add_argument("--clip", type=float, default=1.0, help="clip bound for the max-robots column")
    table.set_defaults(func=_params)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _params(args: argparse.Namespace) -> int:
    from scfl_nodes.core import crypto

    if not args.clip > 0:
        raise CliError(f"--clip must be > 0, got {args.clip}")
    print(f"{'params_id':30s} {'backend':8s} {'n':>5s} {'log2 q':>6s} {'t':>11s} {'bits':>5s} {'max robots':>10s} {'noise 2^-40':>11s} {'correlated':>10s}  default")
    for p in crypto.PARAM_SETS.values():
        default = "yes" if crypto.DEFAULT_PARAMS[p.backend] == p.params_id else ""
        refused = "" if p.security_bits >= 128 else " (refused: < 128-bit)"
        print(
            f"{p.params_id:30s} {p.backend:8s} {p.n:5d} {p.log_q:6g} {p.plain_modulus:11d} {p.security_bits:5.0f} "
            f"{p.max_clients(args.clip):10d} {p.max_noise_clients:11d} {p.worst_case_noise_clients:10d}  {default}{refused}"
        )
    return 0


def _refuse_existing(*paths: Path) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise CliError(f"{', '.join(existing)} already exist(s); refusing to overwrite keys (choose another --out)")


def _fleet(args: argparse.Namespace) -> int:
    from scfl_nodes.core import crypto

    out = Path(args.out).expanduser()
    key_path, ctx_path = out / "fleet.key", out / "cloud.ctx"
    _refuse_existing(key_path, ctx_path)
    try:
        key = crypto.generate_fleet_keys(args.backend, params_id=args.params)
        key.save(key_path)
        key.cloud_context().save(ctx_path)
    except crypto.CryptoError as exc:
        raise CliError(str(exc)) from None
    params = key.params
    print(f"fleet key   {key_path}  (secret: copy only to the fleet's robots)")
    print(f"cloud ctx   {ctx_path}  (upload to the cloud; holds no secret)")
    print(
        f"backend {key.backend}  params {key.params_id}  key id {key.key_id}  "
        f"~{params.security_bits:.0f}-bit  max clients at clip 1.0: {params.max_clients(1.0)}"
    )
    return 0


def _robot(args: argparse.Namespace) -> int:
    from scfl_nodes.core import crypto

    out = Path(args.out).expanduser()
    key_path, pub_path = out / "robot.key", out / "robot.pub"
    _refuse_existing(key_path, pub_path)
    key = crypto.generate_signing_key()
    key.save(key_path)
    key.save_public(pub_path)
    print(f"signing key {key_path}  public key {pub_path}  (register robot.pub with the cloud)")
    print(f"public key (hex) {key.public_bytes().hex()}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from scfl_nodes.core import crypto
    from scfl_nodes.core.crypto.wire import MAGIC_CLOUD_CONTEXT, MAGIC_FLEET_KEY, unpack

    path = Path(args.path).expanduser()
    if not path.is_file():
        raise CliError(f"{path} does not exist")
    blob = path.read_bytes()
    magic = blob[:8]
    if magic not in (MAGIC_FLEET_KEY, MAGIC_CLOUD_CONTEXT):
        if len(blob) == 32:
            print(f"Ed25519 public key {blob.hex()}")
            return 0
        raise CliError(f"{path} is not an scfl fleet key or cloud context")
    try:
        header, _, _, _ = unpack(blob, magic, 0)
    except crypto.CryptoError as exc:
        raise CliError(f"{path}: {exc}") from None
    params = crypto.get_params(header["params_id"], header["backend"])
    print(
        f"{header['kind']}  backend {header['backend']}  params {header['params_id']}  key id {header['key_id']}  "
        f"~{params.security_bits:.0f}-bit  n={params.n} log2(q)={params.log_q:g} t={params.plain_modulus}"
    )
    return 0
