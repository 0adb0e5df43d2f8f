"""``scfl up``: start the scfl ROS 2 node graph without ``ros2 launch`` (pip-only machines).

Starts the same nodes with the same parameters as ``launch/scfl.launch.py``: the ``ros``
section of scfl.yaml names the nodes and the params file, command-line flags override it
exactly like launch arguments. One process per node; Ctrl-C (or SIGTERM) stops them all
cleanly; if a node exits on its own, the others are stopped and its log tail is shown.
"""

from __future__ import annotations

import argparse

from scfl_nodes.cli import CliError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "up",
        help="start the ROS 2 node graph (same as launch/scfl.launch.py, no ros2 launch needed)",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default=None, help="scfl.yaml (default: config/scfl.yaml of this checkout)")
    p.add_argument("--params-file", default=None, help="override ros.params_file (per-node ros__parameters)")
    p.add_argument("--namespace", default=None, help="override ros.namespace")
    p.add_argument("--use-sim-time", choices=("true", "false"), default=None, help="override ros.use_sim_time")
    p.add_argument("--camera-type", default=None, help="override ros.camera_type")
    p.add_argument("--vla-backend", default=None, help="override ros.vla_backend")
    p.add_argument("--cloud-url", default=None, help="override ros.cloud_url")
    p.add_argument("--nodes", default=None, help="comma-separated nodes to start (override ros.nodes)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the nodes (default: inherited)")
    p.add_argument("--log-dir", default=None, help="write each node's output to <log-dir>/<node>.log instead of the terminal")
    p.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    p.set_defaults(func=run)


def resolve_graph(args):
    """(ros config, params file, {node: overrides}) after applying the command-line overrides."""
    import dataclasses

    from scfl_nodes.core.config import ConfigError, default_config_path, load_config
    from scfl_nodes.nodes.graph import node_overrides, resolve_params_file

    config_path = args.config or str(default_config_path())
    overrides = {}
    for flag, key in (("params_file", "params_file"), ("namespace", "namespace"), ("camera_type", "camera_type"),
                      ("vla_backend", "vla_backend"), ("cloud_url", "cloud_url")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.use_sim_time is not None:
        overrides["use_sim_time"] = args.use_sim_time == "true"
    if args.nodes is not None:
        overrides["nodes"] = [n.strip() for n in args.nodes.split(",") if n.strip()]
    try:
        ros = load_config(config_path, overrides={"ros": overrides} if overrides else None).ros
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    params_file = resolve_params_file(ros.params_file, config_path)
    if not params_file.is_file():
        raise CliError(f"params file {params_file} does not exist (ros.params_file in {config_path})")
    return ros, params_file, node_overrides(ros)


def run(args) -> int:
    import os
    import signal
    import tempfile
    import threading
    from pathlib import Path

    from scfl_nodes.nodes.common import InterfacesNotBuiltError, ensure_interfaces
    from scfl_nodes.nodes.graph import NodeProcess, wait_all

    ros, params_file, per_node = resolve_graph(args)
    try:
        ensure_interfaces()
    except InterfacesNotBuiltError as exc:
        raise CliError(str(exc)) from None
    if args.domain_id is not None and not 0 <= args.domain_id <= 232:
        raise CliError(f"--domain-id must be in [0, 232], got {args.domain_id}")
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="scfl-up-")
    processes = [
        NodeProcess(name, [params_file], params, namespace=ros.namespace, domain_id=args.domain_id,
                    log_path=(log_dir / f"{name}.log") if log_dir else None)
        for name, params in per_node.items()
    ]
    if args.dry_run:
        for proc in processes:
            print(f"{proc.name}: {' '.join(proc.command(tmp.name)[:-2] if proc.params else proc.command(tmp.name))}"
                  + (f"  # parameter overrides: {proc.params}" if proc.params else ""))
        tmp.cleanup()
        return 0
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for proc in processes:
            proc.start(tmp.name)
        print(f"scfl up: started {', '.join(f'{p.name} (pid {p.proc.pid})' for p in processes)}"
              f"{' in namespace ' + ros.namespace if ros.namespace else ''}"
              f"; ROS_DOMAIN_ID={args.domain_id if args.domain_id is not None else os.environ.get('ROS_DOMAIN_ID', '0')}"
              f"; Ctrl-C stops all", flush=True)
        dead = wait_all(processes, stop.is_set)
        code = 0
        for proc in dead:
            rc = proc.proc.returncode
            print(f"scfl up: {proc.name} exited with code {rc}; stopping the other nodes", flush=True)
            tail = proc.log()[-1500:] if proc.log_path else ""
            if tail:
                print(tail, flush=True)
            code = 1
    finally:
        codes = {p.name: p.stop(timeout=10.0) for p in processes}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        tmp.cleanup()
    unclean = {n: c for n, c in codes.items() if c not in (0, None) and not any(n == d.name for d in dead)}
    if unclean:
        print(f"scfl up: nodes that did not stop cleanly: {unclean}", flush=True)
        code = code or 1
    else:
        print("scfl up: all nodes stopped", flush=True)
    return code
