#!/usr/bin/env python
"""ROS 2 graph benchmark -> bench/results/ros.json.

1. End-to-end latency, image message -> final action: this process publishes 640x480 rgb8
   images (+ the matching Meta-World state) at 30 fps; vla_node (frozen scfl base policy) and
   skill_node (3 active residual skills, router_node picks them via the service) run as
   separate processes. Latency = arrival of the first ResidualAction that used a frame's base
   action - the frame's stamp (includes DDS transport twice, inference and waiting for the next
   control cycle). Median / p99.
2. Achieved skill_node control rate (ResidualAction header stamps) at the configured rates.
3. Camera topic throughput across processes: bag_player replays a 640x480 rgb8 30 fps bag
   (generated here) and this process counts what arrives (fps, MB/s, loss, transport latency);
   then the same bag as fast as possible (rate 100) for the ceiling.

    python bench/bench_ros.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
TRANSPORTS = os.environ.get("FASTDDS_BUILTIN_TRANSPORTS") or "LARGE_DATA"  # as scripts/env.sh sets it


def _stats(values_ms) -> dict:
    v = np.asarray(values_ms, dtype=float)
    if v.size == 0:
        return {"count": 0}
    return {"count": int(v.size), "median_ms": round(float(np.median(v)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3),
            "mean_ms": round(float(v.mean()), 3), "max_ms": round(float(v.max()), 3)}


def _make_library(root: Path, obs_dim: int):
    import torch

    from scfl_nodes.core.sim import TASK_INSTRUCTIONS
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage

    lib = SkillLibrary(root)
    torch.manual_seed(0)
    for task, instruction in TASK_INSTRUCTIONS.items():
        lib.add(SkillPackage.create(SkillModule(obs_dim, 4, 256), task.removesuffix("-v3").replace("-", " "), [instruction]))
    return lib


def bench_latency_and_rate(tmp: Path, duration_s: float, control_rates: list[float]) -> dict:
    from scfl_nodes.core.sim import instruction_for, make_env, reset_episode
    from scfl_nodes.core.vla import load_base_policy
    from scfl_nodes.nodes.common import latched_qos, numpy_to_image
    from scfl_nodes.nodes.testing import RosHarness

    policy = load_base_policy("scfl-metaworld-base")
    lib = _make_library(tmp / "library", policy.embedding_dim)
    task = "drawer-close-v3"
    env = make_env(task, 0)
    states = [reset_episode(env, 0, i).astype(np.float32) for i in range(30)]
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    out = {"image": "640x480 rgb8", "camera_fps": 30.0, "skills_active": 3, "skill_hidden": 256, "runs": []}
    for rate in control_rates:
        with RosHarness(tmp / f"ros_{int(rate)}", transports=TRANSPORTS) as ros:
            from rclpy.qos import qos_profile_sensor_data
            from scfl_interfaces.msg import BaseAction, Observation, ResidualAction
            from scfl_interfaces.srv import SkillRequest
            from sensor_msgs.msg import Image
            from std_msgs.msg import String

            ros.start("router_node", {"library_path": str(lib.root)})
            ros.start("skill_node", {"library_path": str(lib.root), "control_rate_hz": rate})
            ros.start("vla_node")
            base_stamp: dict[int, int] = {}
            first_action: dict[int, float] = {}
            action_stamps: list[int] = []
            lock = threading.Lock()

            def on_base(msg):
                with lock:
                    base_stamp[msg.sequence] = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

            def on_action(msg):
                now = ros.node.get_clock().now().nanoseconds
                with lock:
                    action_stamps.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
                    if msg.skill_ids and msg.base_sequence not in first_action:
                        first_action[msg.base_sequence] = now

            ros.subscribe(BaseAction, "/scfl/base_action", 100)
            with ros._lock:
                ros.node.create_subscription(BaseAction, "/scfl/base_action", on_base, 100)
                ros.node.create_subscription(ResidualAction, "/scfl/action", on_action, 1000)
            img_pub = ros.publisher(Image, "/camera/camera/color/image_raw", qos_profile_sensor_data)
            obs_pub = ros.publisher(Observation, "/scfl/observation_state", 10)
            ros.publisher(String, "/scfl/instruction", latched_qos()).publish(String(data=instruction_for(task)))
            resp = ros.call(SkillRequest, "/router_node/request_skills",
                            SkillRequest.Request(task_description=instruction_for(task), max_skills=3), timeout=180)
            assert resp.success, resp.message
            ros.wait_for(lambda: img_pub.get_subscription_count() > 0, 60, "vla_node image subscription")
            time.sleep(1.0)
            period = 1.0 / 30.0
            t_next = time.monotonic()
            t_end = t_next + duration_s
            i = 0
            while time.monotonic() < t_end:
                stamp = ros.node.get_clock().now().to_msg()
                obs = Observation(state=states[i % len(states)].tolist())
                obs.header.stamp = stamp
                obs_pub.publish(obs)
                img_pub.publish(numpy_to_image(image, stamp, "camera_color_optical_frame"))
                i += 1
                t_next += period
                time.sleep(max(0.0, t_next - time.monotonic()))
            time.sleep(1.0)
            with lock:
                latencies = [(first_action[s] - base_stamp[s]) / 1e6 for s in first_action if s in base_stamp]
                stamps = np.asarray(action_stamps[len(action_stamps) // 10:], dtype=np.int64)
            achieved = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) * 1e-9) if len(stamps) > 2 else 0.0
            gaps = np.diff(stamps) * 1e-6 if len(stamps) > 2 else np.zeros(0)
            run = {
                "control_rate_hz": rate,
                "achieved_rate_hz": round(float(achieved), 2),
                "cycle_gap_ms": _stats(gaps),
                "images_published": i,
                "base_actions": len(base_stamp),
                "image_to_final_action": _stats(latencies),
            }
            out["runs"].append(run)
            print(f"bench_ros: control {rate:.0f} Hz -> achieved {achieved:.1f} Hz; image->action "
                  f"median {run['image_to_final_action'].get('median_ms')} ms p99 {run['image_to_final_action'].get('p99_ms')} ms; "
                  f"{len(base_stamp)}/{i} frames got a base action", flush=True)
    return out


def bench_camera_throughput(tmp: Path, seconds: float) -> dict:
    from scfl_nodes.core import rosbag_io
    from scfl_nodes.nodes.testing import RosHarness

    frames = int(seconds * 30)
    bag = tmp / "camera_640x480"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    t0 = 1_700_000_000 * 10**9
    with rosbag_io.BagWriter(bag, "sqlite3") as w:
        for i in range(frames):
            t = t0 + int(i * 1e9 / 30)
            w.write(rosbag_io.COLOR_IMAGE_TOPIC, t, rosbag_io.image_message(images[i % 8], t, "camera_color_optical_frame"))
    out = {"image": "640x480 rgb8", "frame_bytes": 640 * 480 * 3, "frames": frames, "runs": []}
    for rate in (1.0, 100.0):
        with RosHarness(tmp / f"cam_{int(rate)}", transports=TRANSPORTS) as ros:
            from rclpy.qos import qos_profile_sensor_data
            from sensor_msgs.msg import Image

            arrivals, lat = [], []

            def on_image(msg):
                now = ros.node.get_clock().now().nanoseconds
                arrivals.append(time.monotonic())
                lat.append((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)

            with ros._lock:
                ros.node.create_subscription(Image, "/camera/camera/color/image_raw", on_image, qos_profile_sensor_data)
            player = ros.start("bag_player", {"bag_path": str(bag), "rate": rate, "start_delay_s": 2.0,
                                              "wait_for_subscribers": ["/camera/camera/color/image_raw"]})
            ros.wait_for(lambda: player.proc.poll() is not None, 300, "the end of the replay")
            time.sleep(0.5)
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
        fps = (len(arrivals) - 1) / span if len(arrivals) > 1 else 0.0
        run = {"playback_rate": rate, "target_fps": 30.0 * rate if rate < 50 else "max", "received": len(arrivals),
               "loss_fraction": round(1 - len(arrivals) / frames, 4), "received_fps": round(fps, 2),
               "throughput_MB_s": round(fps * 640 * 480 * 3 / 1e6, 2),
               "transport_latency": _stats(lat) if rate == 1.0 else {"note": "not meaningful when publishing as fast as possible"}}
        out["runs"].append(run)
        print(f"bench_ros: camera replay rate {rate}: {len(arrivals)}/{frames} frames, {fps:.1f} fps, "
              f"{run['throughput_MB_s']} MB/s", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (CI)")
    p.add_argument("--out", default=str(RESULTS / "ros.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    duration = 5.0 if args.quick else 15.0
    rates = [50.0] if args.quick else [50.0, 200.0]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ros-") as tmp:
        tmp = Path(tmp)
        latency = bench_latency_and_rate(tmp, duration, rates)
        camera = bench_camera_throughput(tmp, 3.0 if args.quick else 6.0)
    result = {
        "bench": "ros",
        "created": started,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
        "fastdds_builtin_transports": TRANSPORTS,
        "note": "every node is its own process on the same machine (DDS over shared memory/loopback); "
                "the CPU is shared with the benchmark process and other work (see loadavg)",
        "quick": args.quick,
        "pipeline": latency,
        "camera_topic": camera,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"bench_ros: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
