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
import math
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
    from scfl_nodes.core.sim import instruction_for, make_env, reset_episode, scripted_expert

    out = Path(args.out)
    if out.exists():
        if not args.force:
            print(f"make_demo_bag: error: {out} exists (use --force to replace it)", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    env = make_env(args.task, args.seed, render_mode="rgb_array", width=args.size, height=args.size,
                   camera_name="corner")
    # Cheap rendering: no shadows/reflections/MSAA (100+ fps on CPU with EGL).
    env.model.vis.quality.offsamples = 0
    env.model.vis.quality.shadowsize = 0
    expert = scripted_expert(args.task)
    instruction = instruction_for(args.task)
    obs = reset_episode(env, args.seed, 0)
    fovy = float(env.model.cam_fovy[env.model.camera("corner").id])
    f = 0.5 * args.size / math.tan(math.radians(fovy) / 2)
    # Meta-World physics steps per camera frame, so the bag shows visible motion.
    steps_per_frame = 3
    t0 = 1_700_000_000 * 10**9
    dt = int(1e9 / args.fps)
    with bio.BagWriter(out, args.storage) as bag:
        bag.write(bio.INSTRUCTION_TOPIC, t0, bio.string_message(instruction))
        for i in tqdm(range(args.frames), desc="demo bag", unit="frame"):
            stamp = t0 + i * dt
            image = np.asarray(env.render(), dtype=np.uint8)[::-1].copy()  # MuJoCo renders bottom-up
            action = expert.act(obs)
            bag.write(bio.OBSERVATION_TOPIC, stamp, bio.observation_message(obs.astype(np.float32), stamp, "world"))
            bag.write(bio.COLOR_INFO_TOPIC, stamp,
                      bio.camera_info_message(args.size, args.size, f, f, args.size / 2, args.size / 2, stamp, OPTICAL_FRAME))
            bag.write(bio.COLOR_IMAGE_TOPIC, stamp, bio.image_message(image, stamp, OPTICAL_FRAME))
            bag.write("/scfl/expert_action", stamp, bio.float32_multiarray(action))
            for _ in range(steps_per_frame):
                obs, *_ = env.step(np.clip(expert.act(obs), -1, 1))
    env.close()
    info = bio.bag_info(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"make_demo_bag: wrote {out} ({info['storage']}, {info['message_count']} messages, "
          f"{info['duration_s']:.1f} s, {size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
