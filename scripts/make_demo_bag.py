#!/usr/bin/env python
"""Generate the small rosbag2 that drives the ROS tests: one scripted-expert Meta-World episode.

Topics (all stamped with the same simulated time per frame, realsense-ros style names):
  /camera/camera/color/image_raw    sensor_msgs/msg/Image       rgb8, --size x --size
  /camera/camera/color/camera_info  sensor_msgs/msg/CameraInfo  pinhole from the MuJoCo camera fovy
  /scfl/observation_state           scfl_interfaces/msg/Observation   39-d Meta-World state
  /scfl/instruction                 std_msgs/msg/String          task instruction (first frame)
  /scfl/expert_action               std_msgs/msg/Float32MultiArray   scripted expert action

  python scripts/make_demo_bag.py                       # -> test/data/demo_bag (sqlite3)
  python scripts/make_demo_bag.py --storage mcap --out /tmp/demo_mcap --frames 100
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPTICAL_FRAME = "camera_color_optical_frame"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "test" / "data" / "demo_bag"), help="bag directory to create")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--task", default="drawer-close-v3")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--frames", type=int, default=40, help="camera frames to record")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--size", type=int, default=64, help="square image size in pixels")
    p.add_argument("--force", action="store_true", help="replace an existing bag")
    args = p.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    import shutil

    import numpy as np
    from tqdm import tqdm

    from scfl_nodes.core import rosbag_io as bio
    from scfl_nodes.core.sim import instruction_for, scripted_expert

    out = Path(args.out)
    if out.exists():
        if not args.force:
            print(f"make_demo_bag: error: {out} exists (use --force to replace it)", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    from scfl_nodes.core.perception import open_camera

    # the same renderer camera_node uses for camera_type sim (scripted expert acting)
    camera = open_camera("metaworld", task=args.task, seed=args.seed, camera="corner", width=args.size,
                         height=args.size, depth=False)
    instruction = instruction_for(args.task)
    steps_per_frame = 3  # Meta-World steps per recorded frame, so the bag shows visible motion
    t0 = 1_700_000_000 * 10**9
    dt = int(1e9 / args.fps)
    frames = camera.frames()
    with bio.BagWriter(out, args.storage) as bag, tqdm(total=args.frames, desc="demo bag", unit="frame") as bar:
        bag.write(bio.INSTRUCTION_TOPIC, t0, bio.string_message(instruction))
        for step, frame in enumerate(frames):
            if step % steps_per_frame:
                continue
            i = step // steps_per_frame
            if i >= args.frames:
                break
            stamp = t0 + i * dt
            state = np.asarray(camera.last_state, dtype=np.float32)  # the state this frame shows
            k = frame.intrinsics
            bag.write(bio.OBSERVATION_TOPIC, stamp, bio.observation_message(state, stamp, "world"))
            bag.write(bio.COLOR_INFO_TOPIC, stamp,
                      bio.camera_info_message(args.size, args.size, k.fx, k.fy, k.cx, k.cy, stamp, OPTICAL_FRAME))
            bag.write(bio.COLOR_IMAGE_TOPIC, stamp, bio.image_message(frame.color, stamp, OPTICAL_FRAME))
            bag.write("/scfl/expert_action", stamp, bio.float32_multiarray(scripted_expert(args.task).act(state)))
            bar.update()
    frames.close()
    info = bio.bag_info(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"make_demo_bag: wrote {out} ({info['storage']}, {info['message_count']} messages, "
          f"{info['duration_s']:.1f} s, {size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
