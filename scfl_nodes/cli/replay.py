"""`scfl replay BAG`: replay a recording through the robot graph and keep every frame's actions.

Runs the real graph (bag_player -> vla_node -> skill_node, router_node for the skills) as
separate ROS processes with config/nodes.yaml, records each processed frame's base action
and the first control cycle that used it (residual, final), and writes them to an ``.npz``
(``stamp_ns, sequence, base, residual, final, embedding``, plus ``skill_ids`` / ``weights``),
optionally a plot and a video with the actions drawn on the frames. Recorded stamps are kept
(``restamp: false``) so every row names its frame in the bag.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLOR_TOPIC = "/camera/camera/color/image_raw"


def register(subparsers) -> None:
    p = subparsers.add_parser("replay", help="replay a rosbag2 recording through the graph; write base/residual/final actions")
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap), e.g. from `ros2 bag record -a` with realsense-ros")
    p.add_argument("--out", required=True, help="output .npz with base, residual and final actions per processed frame")
    p.add_argument("--plot", default=None, help="also write a PNG plot of the actions")
    p.add_argument("--video", default=None, help="also write an MP4 of the frames with the actions drawn on them")
    p.add_argument("--instruction", default=None, help="task instruction (default: the bag's /scfl/instruction)")
    p.add_argument("--model", default=None, help="base model (default: vla_node's model in config/nodes.yaml)")
    p.add_argument("--library", default=None, help="skill library (default: skill_library.storage_path of the config)")
    p.add_argument("--max-skills", type=int, default=3)
    p.add_argument("--rate", type=float, default=0.5, help="playback speed (lower = fewer frames dropped on a slow CPU)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.set_defaults(func=_replay)


def _bag_instruction(bag: Path) -> str | None:
    from scfl_nodes.core import rosbag_io

    info = rosbag_io.bag_info(bag)
    if "/scfl/instruction" not in info["topics"]:
        return None
    return next(rosbag_io.decode(m).data for m in rosbag_io.read_bag(bag, ["/scfl/instruction"]))


def _replay(args: argparse.Namespace) -> int:
    import numpy as np

    from scfl_nodes.cli import CliError
    from scfl_nodes.core import rosbag_io

    bag, out = Path(args.bag), Path(args.out)
    try:
        info = rosbag_io.bag_info(bag)
    except (rosbag_io.BagError, OSError) as exc:
        raise CliError(str(exc)) from None
    if out.suffix != ".npz":
        raise CliError(f"--out must end in .npz, got {out}")
    raw = COLOR_TOPIC if COLOR_TOPIC in info["topics"] else None
    comp = COLOR_TOPIC + "/compressed" if COLOR_TOPIC + "/compressed" in info["topics"] else None
    if raw is None and comp is None:
        raise CliError(f"{bag} has no {COLOR_TOPIC} (or /compressed) colour stream; topics: {', '.join(sorted(info['topics']))}")
    instruction = args.instruction or _bag_instruction(bag)
    if not instruction:
        raise CliError(f"{bag} has no /scfl/instruction; pass --instruction TEXT")
    rows = _run_graph(args, bag, instruction, info)
    if not rows:
        raise CliError("the graph produced no actions (see the node logs above)")
    arrays = {k: np.asarray([r[k] for r in rows]) for k in ("stamp_ns", "sequence", "base", "residual", "final", "embedding")}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays, skill_ids=np.asarray(rows[-1]["skill_ids"]), weights=np.asarray(rows[-1]["weights"]),
             instruction=np.asarray(instruction), bag=np.asarray(str(bag)))
    frames_in_bag = info["topics"][raw or comp][1]
    print(json.dumps({"out": str(out), "frames_in_bag": frames_in_bag, "frames_processed": len(rows),
                      "skills": list(rows[-1]["skill_ids"]), "instruction": instruction}))
    if args.plot:
        _plot(arrays, Path(args.plot), instruction)
    if args.video:
        _video(bag, raw or comp, arrays, Path(args.video))
    return 0


def _run_graph(args, bag: Path, instruction: str, info) -> list[dict]:
    import time

    import numpy as np

    from scfl_nodes.nodes.common import camera_transports
    from scfl_nodes.nodes.testing import RosHarness

    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="scfl_replay_"))
    vla = {"model": args.model} if args.model else {}
    lib = {"library_path": str(Path(args.library).resolve())} if args.library else {}
    with RosHarness(workdir, transports=camera_transports()) as ros:
        from scfl_interfaces.msg import BaseAction, ResidualAction
        from scfl_interfaces.srv import SkillRequest

        ros.start("router_node", lib)
        ros.start("skill_node", lib)
        ros.start("vla_node", {**vla, "instruction": instruction})
        bases = ros.subscribe(BaseAction, "/scfl/base_action", 1000)
        actions = ros.subscribe(ResidualAction, "/scfl/action", 100000)
        resp = ros.call(SkillRequest, "/router_node/request_skills",
                        SkillRequest.Request(task_description=instruction, max_skills=args.max_skills), timeout=120)
        skills = list(resp.skill_ids) if resp.success else []
        if not resp.success:
            print(f"scfl replay: no skills ({resp.message}); final = base")
        time.sleep(2.0)  # skill_node loads the skills from the latched SkillWeights (it publishes only once bases flow)
        player = ros.start("bag_player", {"bag_path": str(bag.resolve()), "rate": args.rate, "restamp": False,
                                          "start_delay_s": 1.0, "wait_for_subscribers": [COLOR_TOPIC]})
        ros.wait_for(lambda: player.proc.poll() is not None, args.timeout, "the end of the replay")
        time.sleep(1.0)
        ros.wait_for(lambda: bases and any(a.base_sequence == bases[-1].sequence for a in actions), 30,
                     "the final action of the last frame")
        log_dir = workdir
    rows = []
    first = {}
    for a in actions:
        if list(a.skill_ids) == skills:
            first.setdefault(a.base_sequence, a)
    for b in bases:
        a = first.get(b.sequence)
        if a is None:
            continue
        rows.append({"stamp_ns": b.header.stamp.sec * 10**9 + b.header.stamp.nanosec, "sequence": b.sequence,
                     "base": np.asarray(b.action, np.float32), "residual": np.asarray(a.residual, np.float32),
                     "final": np.asarray(a.action, np.float32),
                     "embedding": np.asarray(b.observation_embedding, np.float32),
                     "skill_ids": list(a.skill_ids), "weights": list(a.weights)})
    print(f"scfl replay: node logs in {log_dir}")
    return rows


def _plot(arrays, path: Path, instruction: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = (arrays["stamp_ns"] - arrays["stamp_ns"][0]) * 1e-9
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    for ax, key in zip(axes, ("base", "residual", "final")):
        for d in range(arrays[key].shape[1]):
            ax.plot(t, arrays[key][:, d], marker=".", label=f"a[{d}]")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend(ncol=arrays["base"].shape[1], fontsize=8)
    axes[0].set_title(f"replay: {instruction}")
    axes[-1].set_xlabel("recorded time (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _video(bag: Path, topic: str, arrays, path: Path, fps: float = 10.0) -> None:
    import cv2
    import numpy as np

    from scfl_nodes.core import rosbag_io
    from scfl_nodes.core.perception.image_codec import rgb_frame

    by_stamp = {int(s): i for i, s in enumerate(arrays["stamp_ns"])}
    writer = None
    try:
        for m in rosbag_io.read_bag(bag, [topic]):
            msg = rosbag_io.decode(m)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            if stamp not in by_stamp:
                continue
            i = by_stamp[stamp]
            frame = np.ascontiguousarray(rgb_frame(msg)[..., ::-1])
            if writer is None:
                h, w = frame.shape[:2]
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            for row, key in enumerate(("base", "residual", "final")):
                text = f"{key:8s} " + " ".join(f"{v:+.2f}" for v in arrays[key][i])
                cv2.putText(frame, text, (10, 25 + 25 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
            writer.write(frame)
    finally:
        if writer is not None:
            writer.release()
