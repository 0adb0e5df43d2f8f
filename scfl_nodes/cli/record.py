"""``scfl record``: record one demonstration from a running robot graph (recorder_node).

Calls ``<namespace>/recorder_node/start``, records for ``--duration`` seconds (or until
Ctrl-C) and calls ``.../stop``; the bag path is printed. The recorder writes the graph's own
messages (docs/demonstrations.md, format 4), which ``scfl train-skill --demonstrations`` and
trainer_node's ``TrainSkill`` action read directly.
"""

from __future__ import annotations

import argparse
import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "record",
        help="record a demonstration from the running robot graph (recorder_node) into a rosbag2",
        description="Start recorder_node, record for --duration seconds (default: until Ctrl-C), stop, print the bag.",
    )
    p.add_argument("--namespace", default="", metavar="NS", help="robot namespace of the graph (e.g. robot1)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds to record (default: until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait for recorder_node")
    p.set_defaults(func=run)


def _call(node, client, timeout: float):
    import rclpy
    from std_srvs.srv import Trigger

    future = client.call_async(Trigger.Request())
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    return future.result() if future.done() else None


def run(args: argparse.Namespace) -> int:
    from . import CliError
    from ..nodes.common import InterfacesNotBuiltError, ensure_interfaces

    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration must be > 0, got {args.duration}")
    if args.timeout <= 0:
        raise CliError(f"--timeout must be > 0, got {args.timeout}")
    try:
        ensure_interfaces()
    except InterfacesNotBuiltError as exc:
        raise CliError(str(exc)) from None
    import rclpy
    from std_srvs.srv import Trigger

    ns = args.namespace.strip("/")
    prefix = f"/{ns}/recorder_node" if ns else "/recorder_node"
    rclpy.init()
    node = rclpy.create_node("scfl_record")
    try:
        start = node.create_client(Trigger, f"{prefix}/start")
        stop = node.create_client(Trigger, f"{prefix}/stop")
        if not start.wait_for_service(timeout_sec=args.timeout):
            raise CliError(f"no recorder_node at {prefix} after {args.timeout:g} s (is the graph running with "
                           "recorder_node, in this ROS_DOMAIN_ID?)")
        resp = _call(node, start, args.timeout)
        if resp is None or not resp.success:
            raise CliError(f"recorder_node did not start: {resp.message if resp else 'no answer'}")
        print(f"recording to {resp.message} " + (f"for {args.duration:g} s" if args.duration else "(Ctrl-C to stop)"),
              flush=True)
        try:
            deadline = time.monotonic() + args.duration if args.duration else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.05 if deadline is None else min(0.05, max(deadline - time.monotonic(), 0.0)))
        except KeyboardInterrupt:
            pass  # Ctrl-C ends the demonstration: stop and keep the bag
        done = _call(node, stop, args.timeout)
        if done is None or not done.success:
            raise CliError(f"recorder_node did not stop cleanly: {done.message if done else 'no answer'}")
        print(f"saved {done.message}")
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
