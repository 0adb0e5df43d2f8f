#!/usr/bin/env python
"""ROS 2 graph benchmark -> bench/results/ros.json.

1. The graph as a robot runs it: launch/scfl.launch.py from the checkout's ros_ws install
   (scripts/build_ros.sh) through the real ``launch``/``launch_ros`` (system or vendored), the way
   ``ros2 launch`` runs it, in namespace robot1, included by a bringup file that adds command_node
   (ros.nodes leaves it out: it needs a robot). camera_node plays a 640x480 30 fps clip of the
   Meta-World camera (camera_type video), vla_node runs the vision policy
   (scfl-metaworld-vision), router_node picks 3 residual skills (SkillRequest from here),
   skill_node runs at its configured rate, command_node turns each final action into a
   JointTrajectory from the /joint_states this process publishes at 100 Hz (Panda home posture).
   Every latency is between publish times on the publishers' own clocks (one machine): the
   frame's stamp (camera_node stamps it just before publishing) and the DDS source timestamps
   of vla_node's BaseAction, skill_node's ResidualAction and command_node's JointTrajectory, so
   this process's own scheduling delay when receiving enters none of them. Measured: (a) image
   -> final action (the first ResidualAction that used a frame's base action), split into image
   -> base action and base action -> final action, (b) image -> JointTrajectory, (c) achieved
   camera rate (CameraInfo stamps) and (d) skill_node control rate (ResidualAction stamps) vs
   configured, (e) the command stage's added latency (JointTrajectory published - the final
   action it answers published), paired exactly: command_node stamps its TwistStamped with the
   action's stamp and publishes it with the trajectory (same DDS publication sequence number);
   command_node's own /diagnostics figure (action received -> published) is recorded next to it.
   Stopped with SIGINT to the launch process group, as a terminal's Ctrl-C does; the exit code
   and a clean shutdown are recorded.
2. Camera topic throughput across processes: bag_player replays a 640x480 rgb8 30 fps bag
   (generated here) and this process counts what arrives (fps, MB/s, loss, transport latency);
   then the same bag as fast as possible (rate 100) for the ceiling. bag_player's exit code after
   each playback is recorded (bounded waits: a player that does not end is killed and recorded).

    SCFL_VENDOR_ROS2=../shared/vendor/ros2 bash scripts/build_ros.sh && source scripts/env.sh
    python bench/bench_ros.py [--quick]      # full: about 3 min on an idle machine; --quick: about 1 min
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
# as scripts/env.sh sets it: the camera graph's Fast DDS profile unless the caller chose transports
TRANSPORTS = (os.environ.get("FASTDDS_BUILTIN_TRANSPORTS") or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
              or str(ROOT / "config" / "fastdds_shm.xml"))


def _stats(values_ms) -> dict:
    v = np.asarray(values_ms, dtype=float)
    if v.size == 0:
        return {"count": 0}
    return {"count": int(v.size), "median_ms": round(float(np.median(v)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3),
            "mean_ms": round(float(v.mean()), 3), "max_ms": round(float(v.max()), 3)}


VIDEO_FRAMES = 30  # rendered once, played forwards and backwards: a 10 s loop without a jump

#: what `ros2 launch` does with a robot's bringup file that includes scfl.launch.py and adds
#: command_node (ros.nodes leaves it out: it needs the robot's joint_states) in the same namespace
BRINGUP = """
import os, sys
import launch
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource
from launch_ros.actions import Node
from ament_index_python.packages import get_package_share_directory
args = [a for a in sys.argv[1:] if ":=" in a]
values = dict(a.split(":=", 1) for a in args)
path = os.path.join(get_package_share_directory("scfl_nodes"), "launch", "scfl.launch.py")
service = launch.LaunchService(argv=sys.argv[1:])
service.include_launch_description(launch.LaunchDescription([
    IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=[tuple(a.split(":=", 1)) for a in args]),
    Node(package="scfl_nodes", executable="command_node", name="command_node", namespace=values["namespace"],
         parameters=[values["params_file"]], output="screen", emulate_tty=True),
]))
sys.exit(service.run())
"""


def _make_library(root: Path, obs_dim: int):
    import torch

    from scfl_nodes.core.sim import TASK_INSTRUCTIONS
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage

    lib = SkillLibrary(root)
    torch.manual_seed(0)
    for task, instruction in TASK_INSTRUCTIONS.items():
        lib.add(SkillPackage.create(SkillModule(obs_dim, 4, 256), task.removesuffix("-v3").replace("-", " "), [instruction]))
    return lib


def _render_video(path: Path, task: str, frames: int) -> Path:
    """A 640x480 30 fps MJPG clip of the Meta-World camera: camera_node's video source plays it in
    real time (what the vision policy was trained on, without paying the CPU renderer per frame)."""
    import cv2

    from scfl_nodes.core.perception import open_camera

    source = open_camera("metaworld", task=task, seed=0, episode=0, camera="corner", width=640, height=480)
    stream = iter(source.frames())
    try:
        images = [next(stream).color for _ in range(frames)]
    finally:
        stream.close()
        source.close()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for image in (images + images[::-1]) * 5:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _wait(predicate, timeout_s: float) -> bool:
    from scfl_nodes.nodes.testing import poll_until

    return bool(poll_until(predicate, timeout_s))


def _rate(stamps_ns) -> float:
    s = np.sort(np.asarray(stamps_ns, dtype=np.int64))
    return float((len(s) - 1) / ((s[-1] - s[0]) * 1e-9)) if len(s) > 2 and s[-1] > s[0] else 0.0


def _command_pairs(actions: dict, twists, trajectories) -> dict:
    """Each final action -> the publish time of the JointTrajectory that answers it, exactly:
    command_node stamps its TwistStamped with the action's stamp and publishes the twist and the
    arm trajectory together for every command, so the n-th twist and the n-th trajectory (DDS
    publication sequence numbers of the two writers) answer the same action."""
    traj_by_seq = {seq: t_pub for seq, t_pub in trajectories}
    out = {}
    for action_stamp, seq in twists:
        if action_stamp in actions and seq in traj_by_seq:
            out[action_stamp] = traj_by_seq[seq]
    return out


def bench_launch(tmp: Path, warmup_s: float, duration_s: float, namespace: str = "robot1") -> dict:
    """The graph as `ros2 launch` starts it, measured from this process."""
    import signal
    import subprocess

    import yaml

    from scfl_nodes.core.paths import package_path
    from scfl_nodes.core.sim import instruction_for
    from scfl_nodes.core.vla import load_base_policy
    from scfl_nodes.nodes.common import apply_dds_environment, ros_subprocess_env
    from scfl_nodes.nodes.testing import RosHarness

    model = "scfl-metaworld-vision"
    task = "drawer-close-v3"
    home = tmp / "home"
    _make_library(home / "skills", load_base_policy(model).embedding_dim)  # skill_library.storage_path
    video = _render_video(tmp / "camera_640x480_30fps.avi", task, VIDEO_FRAMES)
    params = yaml.safe_load(package_path("config/nodes.yaml").read_text())
    params["/**/camera_node"]["ros__parameters"].update(device=str(video), width=640, height=480, fps=30.0)
    params["/**/vla_node"]["ros__parameters"]["model"] = model
    control_rate = float(params["/**/skill_node"]["ros__parameters"]["control_rate_hz"])
    camera_fps = float(params["/**/camera_node"]["ros__parameters"]["fps"])
    params_file = tmp / "nodes.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    from scfl_nodes.core.retarget import load_robot

    robot = load_robot("panda")
    names = list(robot.joint_names) + ["panda_finger_joint1", "panda_finger_joint2"]
    q_home = [float(v) for v in robot.home] + [0.02, 0.02]

    ns = f"/{namespace}"
    launch_args = [f"namespace:={namespace}", "camera_type:=video", f"params_file:={params_file}",
                   "sigterm_timeout:=60"]
    with RosHarness(tmp / "ros", transports=TRANSPORTS) as ros:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import TwistStamped
        from lifecycle_msgs.srv import GetState
        from sensor_msgs.msg import CameraInfo, JointState
        from trajectory_msgs.msg import JointTrajectory

        from scfl_interfaces.msg import BaseAction, ResidualAction
        from scfl_interfaces.srv import SkillRequest

        # Times are the publishers' own: a message's header stamp and its DDS source timestamp
        # (the publish time on the publisher's clock; every process runs on this machine), so
        # this process's own scheduling delay when receiving does not enter any latency.
        lock = threading.Lock()
        rec = {"on": False, "info": [], "base": [], "action": [], "twist": [], "traj": []}
        command_diag: list[str] = []
        scheduling: dict[str, str] = {}

        def stamp_ns(msg) -> int:
            return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

        def on_info(msg):
            with lock:
                if rec["on"]:
                    rec["info"].append(stamp_ns(msg))

        def on_base(msg, info):  # (sequence, image stamp, vla_node publish time, inference ms)
            with lock:
                if rec["on"]:
                    rec["base"].append((msg.sequence, stamp_ns(msg), info["source_timestamp"], msg.inference_time_ms))

        def on_action(msg, info):  # (stamp, skill_node publish time, base sequence, skills)
            with lock:
                if rec["on"]:
                    rec["action"].append((stamp_ns(msg), info["source_timestamp"], msg.base_sequence, len(msg.skill_ids)))

        def on_twist(msg, info):  # (stamp of the action it answers, publication sequence number)
            with lock:
                if rec["on"]:
                    rec["twist"].append((stamp_ns(msg), info["publication_sequence_number"]))

        def on_traj(msg, info):  # (publication sequence number, command_node publish time)
            with lock:
                if rec["on"] and msg.points:
                    rec["traj"].append((info["publication_sequence_number"], info["source_timestamp"]))

        def on_diag(msg):  # command_node's own count: action received -> commands published
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                for node in ("skill_node", "command_node"):  # thread_priority's outcome (SCHED_FIFO or why not)
                    if status.name.endswith(f"{ns}/{node}") and "scheduling" in values:
                        scheduling[node] = values["scheduling"]
                if status.name.endswith(f"{ns}/command_node"):
                    value = values.get("stage_latency_ms")
                    if value and rec["on"]:
                        command_diag.append(value)

        with ros._lock:
            ros.node.create_subscription(CameraInfo, f"{ns}/camera/camera/color/camera_info", on_info, 100)
            ros.node.create_subscription(BaseAction, f"{ns}/scfl/base_action", on_base, 100)
            ros.node.create_subscription(ResidualAction, f"{ns}/scfl/action", on_action, 1000)
            ros.node.create_subscription(TwistStamped, f"{ns}/servo_node/delta_twist_cmds", on_twist, 1000)
            ros.node.create_subscription(JointTrajectory, f"{ns}/joint_trajectory_controller/joint_trajectory",
                                         on_traj, 1000)
            ros.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
        joints = ros.publisher(JointState, f"{ns}/joint_states", 10)
        stop = threading.Event()

        def joint_state_broadcaster():  # the robot's /joint_states at 100 Hz, a valid Panda posture
            next_t = time.monotonic()
            while not stop.is_set():
                msg = JointState(name=names, position=q_home)
                msg.header.stamp = ros.node.get_clock().now().to_msg()
                joints.publish(msg)
                next_t += 0.01
                stop.wait(max(0.0, next_t - time.monotonic()))

        broadcaster = threading.Thread(target=joint_state_broadcaster, daemon=True)
        broadcaster.start()
        script = tmp / "bringup_launch.py"
        script.write_text(BRINGUP)
        log_path = tmp / "launch.log"
        env = ros_subprocess_env(domain_id=ros.domain_id)
        env.update(SCFL_HOME=str(home), PYTHONUNBUFFERED="1")
        apply_dds_environment(env, TRANSPORTS)
        t_launch = time.monotonic()
        with open(log_path, "w") as log:
            launcher = subprocess.Popen([sys.executable, str(script), *launch_args], env=env, cwd=tmp, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        exit_code, startup_s = None, None
        try:
            def nodes_up():
                if launcher.poll() is not None:  # fail now, not after the timeout
                    raise RuntimeError(f"the launch exited with code {launcher.returncode} before the nodes were up")
                names_up = {n for n, n_ns in ros.node.get_node_names_and_namespaces() if n_ns == ns}
                return names_up >= {"camera_node", "vla_node", "router_node", "skill_node", "command_node"}

            ros.wait_for(nodes_up, 600, "the launched nodes")
            for node in ("camera_node", "vla_node"):
                ros.wait_for(lambda: ros.call(GetState, f"{ns}/{node}/get_state", GetState.Request(), timeout=60)
                             .current_state.label == "active", 600, f"{node} active")
            resp = ros.call(SkillRequest, f"{ns}/router_node/request_skills",
                            SkillRequest.Request(task_description=instruction_for(task), max_skills=3), timeout=300)
            assert resp.success, resp.message
            with lock:
                rec["on"] = True
            ros.wait_for(lambda: len(rec["traj"]) > 5 and any(a[3] == len(resp.skill_ids) for a in rec["action"]),
                         300, "final actions with the requested skills and joint trajectories")
            startup_s = time.monotonic() - t_launch
            time.sleep(warmup_s)
            with lock:
                for key in ("info", "base", "action", "twist", "traj"):
                    rec[key] = []
                command_diag.clear()
            t0 = time.monotonic()
            time.sleep(duration_s)
            with lock:
                rec["on"] = False
                data = {k: list(v) for k, v in rec.items() if k != "on"}
            seconds = time.monotonic() - t0
        except BaseException:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(30)
            stop.set()
            print(log_path.read_text(errors="replace")[-6000:], file=sys.stderr)
            raise
        finally:
            stop.set()
            broadcaster.join(2)
        # Ctrl-C of `ros2 launch`: SIGINT to the whole process group, as a terminal sends it
        t_stop = time.monotonic()
        os.killpg(launcher.pid, signal.SIGINT)
        try:
            exit_code = launcher.wait(240)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(30)
        stop_s = time.monotonic() - t_stop
    text = log_path.read_text(errors="replace")

    base = {seq: (image, published, infer) for seq, image, published, infer in data["base"]}
    actions = sorted(a for a in data["action"] if a[3] > 0)  # composed with skills
    first_use: dict[int, tuple] = {}  # base sequence -> the first final action that used it
    for a in actions:
        if a[2] in base:
            first_use.setdefault(a[2], a)
    trajectory_of = _command_pairs({a[0]: a for a in actions}, data["twist"], data["traj"])
    image_to_action = [(a[1] - base[s][0]) / 1e6 for s, a in first_use.items()]
    image_to_base = [(base[s][1] - base[s][0]) / 1e6 for s in first_use]
    base_to_action = [(a[1] - base[s][1]) / 1e6 for s, a in first_use.items()]
    image_to_traj = [(trajectory_of[a[0]] - base[s][0]) / 1e6 for s, a in first_use.items() if a[0] in trajectory_of]
    command_added = [(trajectory_of[a[0]] - a[1]) / 1e6 for a in actions if a[0] in trajectory_of]
    action_stamps = [a[0] for a in data["action"]]
    gaps = np.diff(np.sort(np.asarray(action_stamps, dtype=np.int64))) / 1e6 if len(action_stamps) > 2 else []
    camera_rate = _rate(data["info"])
    control = _rate(action_stamps)
    cmd_stats, img_stats = _stats(command_added), _stats(image_to_action)
    out = {
        "launch": "launch/scfl.launch.py (ros_ws install, vendored launch/launch_ros) included by a bringup file "
                  "that adds command_node, as `ros2 launch` runs it",
        "launch_arguments": [a if not a.startswith("params_file") else "params_file:=<config/nodes.yaml + camera "
                             "device, vla model>" for a in launch_args],
        "nodes": ["camera_node", "vla_node", "router_node", "skill_node", "command_node"],
        "camera": "camera_type video: a 640x480 30 fps MJPG clip of the Meta-World corner camera, played in real time",
        "image": "640x480 rgb8",
        "vla_model": model,
        "skills_active": len(resp.skill_ids),
        "skill_hidden": 256,
        "joint_states": "published by the benchmark at 100 Hz (Panda home posture)",
        "startup_s": round(startup_s, 1),
        "measured_s": round(seconds, 1),
        "camera_fps": camera_fps,
        "achieved_camera_fps": round(camera_rate, 2),
        "base_action_rate_hz": round(_rate([b[1] for b in data["base"]]), 2),
        "frames_with_a_base_action": round(len(data["base"]) / max(len(data["info"]), 1), 3),
        "control_rate_hz": control_rate,
        "achieved_rate_hz": round(control, 2),
        "control_rate_error": round(abs(control - control_rate) / control_rate, 4),
        "cycle_gap_ms": _stats(gaps),
        "latency_note": "publish times on the publishers' clocks (one machine): image = camera_node's stamp "
                        "(just before it publishes the frame), base action / final action / JointTrajectory = "
                        "the DDS source timestamp of vla_node's / skill_node's / command_node's message; the "
                        "first final action that used a frame's base action answers that frame",
        "image_to_final_action": img_stats,
        "image_to_base_action": _stats(image_to_base),
        "base_action_to_final_action": _stats(base_to_action),
        "inference_ms": _stats([base[s][2] for s in first_use]),
        "image_to_joint_trajectory": _stats(image_to_traj),
        "command_stage_added": cmd_stats,
        "command_stage_note": "JointTrajectory published - the final action it answers published (one DDS hop, "
                              "command_node's wait and work); paired exactly: the TwistStamped carries the "
                              "action's stamp and is published with the trajectory",
        "command_node_reported": command_diag[-1] if command_diag else None,
        "scheduling": dict(scheduling),
        "command_node_reported_note": "command_node's last /diagnostics stage_latency_ms of the window: its last "
                                      "500 commands, action received (DDS reception) -> commands published",
        "trajectories": len(data["traj"]),
        "actions": len(data["action"]),
        "actions_with_skills": len(actions),
        "actions_without_trajectory": len(actions) - sum(a[0] in trajectory_of for a in actions),
        "launch_exit_code": exit_code,
        "shutdown_s": round(stop_s, 1),
        "clean_shutdown": exit_code == 0 and text.count("process has finished cleanly") == 5,
    }
    out["targets"] = {  # issues 11 and 12, on the 2-core machine
        "camera_fps_sustained": {"target": ">= 0.95 x 30 fps", "measured": round(camera_rate, 2),
                                 "met": camera_rate >= 0.95 * camera_fps},
        "control_rate_within_5_percent": {"target": f"{control_rate:.0f} Hz +- 5 %", "measured": round(control, 2),
                                          "met": out["control_rate_error"] <= 0.05},
        "command_stage_p99_ms_below_5": {"target": "p99 < 5 ms", "measured": cmd_stats.get("p99_ms"),
                                         "met": bool(command_added) and cmd_stats["p99_ms"] < 5.0},
        "image_to_action_p99_ms_below_40": {"target": "p99 < 40 ms while sustaining 30 fps",
                                            "measured": img_stats.get("p99_ms"),
                                            "met": bool(image_to_action) and img_stats["p99_ms"] < 40.0
                                            and camera_rate >= 0.95 * camera_fps},
    }
    print(f"bench_ros: launch: camera {camera_rate:.1f}/{camera_fps:.0f} fps, control {control:.1f}/{control_rate:.0f} Hz; "
          f"image->action median {img_stats.get('median_ms')} p99 {img_stats.get('p99_ms')} ms; "
          f"image->trajectory p99 {out['image_to_joint_trajectory'].get('p99_ms')} ms; command stage "
          f"median {cmd_stats.get('median_ms')} p99 {cmd_stats.get('p99_ms')} ms ({len(command_added)}/{len(actions)} "
          f"actions answered); launch exit {exit_code} after SIGINT", flush=True)
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
            # bounded waits: a player that does not end is recorded (and killed), not waited for
            _wait(lambda: "done: published" in player.log() or player.proc.poll() is not None, 120)
            t_done = time.monotonic()
            ended = _wait(lambda: player.proc.poll() is not None, 90)  # > run_node's TEARDOWN_TIMEOUT_S
            exit_s = time.monotonic() - t_done
            if not ended:
                print(f"bench_ros: bag_player still running {exit_s:.0f} s after its playback; killed\n"
                      f"{player.log()[-3000:]}", file=sys.stderr, flush=True)
                player.proc.kill()
                player.proc.wait(10)
            time.sleep(0.5)
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
        fps = (len(arrivals) - 1) / span if len(arrivals) > 1 else 0.0
        run = {"playback_rate": rate, "target_fps": 30.0 * rate if rate < 50 else "max", "received": len(arrivals),
               "loss_fraction": round(1 - len(arrivals) / frames, 4), "received_fps": round(fps, 2),
               "throughput_MB_s": round(fps * 640 * 480 * 3 / 1e6, 2),
               "transport_latency": _stats(lat) if rate == 1.0 else {"note": "not meaningful when publishing as fast as possible"},
               "playback_finished": "done: published" in player.log(),
               "player_found_subscriber": "nobody subscribed" not in player.log(),
               "player_exit_code": player.proc.returncode if ended else None,
               "player_exit_s_after_playback": round(exit_s, 1)}
        out["runs"].append(run)
        print(f"bench_ros: camera replay rate {rate}: {len(arrivals)}/{frames} frames, {fps:.1f} fps, "
              f"{run['throughput_MB_s']} MB/s; bag_player exit {run['player_exit_code']}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (CI)")
    p.add_argument("--out", default=str(RESULTS / "ros.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warmup, duration = (5.0, 20.0) if args.quick else (10.0, 60.0)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ros-") as tmp:
        tmp = Path(tmp)
        pipeline = bench_launch(tmp, warmup, duration)
        camera = bench_camera_throughput(tmp, 3.0 if args.quick else 6.0)
    result = {
        "bench": "ros",
        "created": started,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
        "fastdds_transports": TRANSPORTS,
        "note": "every node is its own process on the same machine (DDS over shared memory/loopback); "
                "the CPU is shared with the benchmark process and other work (see loadavg): on the project's "
                "2-core machine other engineers' tests and builds ran at the same time",
        "nice": os.nice(0),
        "quick": args.quick,
        "targets": pipeline["targets"],
        "pipeline": pipeline,
        "camera_topic": camera,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"bench_ros: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
