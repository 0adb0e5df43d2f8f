#!/usr/bin/env python
"""TrainSkill action benchmark -> bench/results/train_action.json.

trainer_node and skill_node run as separate processes (as on a robot). This process publishes
BaseAction messages (128-d base embedding, as vla_node would) at 30 Hz, skill_node composes the
skill being trained at its configured control rate, and one TrainSkill goal trains that skill
from 10 demonstrations recorded in recorder_node's format (100 steps each, 10 s at 10 Hz).
Measured: the action's wall time (goal sent -> result), and skill_node's achieved rate
(ResidualAction header stamps) in a window before training and during training (target:
within 5% of the configured rate).

    python bench/bench_train_action.py [--quick]
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
SKILL = "close_drawer"


def _rate(stamps_ns: list[int], t0: int, t1: int) -> float:
    window = [t for t in stamps_ns if t0 <= t <= t1]
    return (len(window) - 1) / ((window[-1] - window[0]) * 1e-9) if len(window) > 2 else 0.0


def run(tmp: Path, demos: int, steps: int, control_rate: float, epochs: int) -> dict:
    import torch

    from scfl_nodes.core.config import load_config
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage
    from scfl_nodes.core.training import synthetic_episodes
    from scfl_nodes.core.training.recording import write_recorded_episode
    from scfl_nodes.nodes.common import latched_qos
    from scfl_nodes.nodes.testing import RosHarness

    emb, action_dim = 128, 4
    hidden = load_config().skill.hidden
    recordings = []
    for i, ep in enumerate(synthetic_episodes(demos, steps, emb, action_dim, task="push the drawer closed", seed=1)):
        recordings.append(str(write_recorded_episode(tmp / "recordings" / f"demo_{i:02d}", ep)))
    lib = SkillLibrary(tmp / "library")
    torch.manual_seed(0)
    lib.add(SkillPackage.create(SkillModule(emb, action_dim, hidden), "close drawer", ["push the drawer closed"],
                                skill_id=SKILL))
    with RosHarness(tmp / "ros") as ros:
        from action_msgs.msg import GoalStatus
        from scfl_interfaces.action import TrainSkill
        from scfl_interfaces.msg import BaseAction, ResidualAction, SkillWeights

        ros.start("skill_node", {"library_path": str(lib.root), "control_rate_hz": control_rate,
                                 "publish_markers": False})
        ros.start("trainer_node", {"library_path": str(lib.root)})
        stamps: list[int] = []
        lock = threading.Lock()

        def on_action(msg):
            if msg.skill_ids:
                with lock:
                    stamps.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)

        with ros._lock:
            ros.node.create_subscription(ResidualAction, "/scfl/action", on_action, 1000)
        ros.publisher(SkillWeights, "/scfl/skill_weights", latched_qos()).publish(SkillWeights(
            task_description="push the drawer closed", skill_ids=[SKILL], skill_versions=[0], weights=[1.0]))
        base_pub = ros.publisher(BaseAction, "/scfl/base_action", 10)
        stop = threading.Event()
        rng = np.random.default_rng(0)

        def publish_base():  # what vla_node would publish at a 30 fps camera
            seq = 0
            while not stop.is_set():
                msg = BaseAction(instruction="push the drawer closed", action=rng.normal(size=action_dim).tolist(),
                                 observation_embedding=rng.normal(size=emb).tolist(), sequence=seq, backend="bench")
                msg.header.stamp = ros.node.get_clock().now().to_msg()
                base_pub.publish(msg)
                seq += 1
                stop.wait(1 / 30)

        publisher = threading.Thread(target=publish_base, daemon=True)
        publisher.start()
        try:
            ros.wait_for(lambda: len(stamps) > 20, 180, "composed actions")
            time.sleep(5.0)
            now = lambda: ros.node.get_clock().now().nanoseconds  # noqa: E731
            t_idle1 = now()
            idle_rate = _rate(list(stamps), t_idle1 - 5 * 10**9, t_idle1)
            feedback = []
            t0 = time.perf_counter()
            t_train0 = now()
            handle = ros.send_goal(TrainSkill, "/trainer_node/train_skill",
                                   TrainSkill.Goal(skill=SKILL, recordings=recordings, epochs=epochs),
                                   feedback=lambda fb: feedback.append(fb.feedback), timeout=120)
            res = ros.goal_result(handle, 3600)
            wall = time.perf_counter() - t0
            t_train1 = now()
            assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.message
            training_rate = _rate(list(stamps), t_train0, t_train1)
        finally:
            stop.set()
            publisher.join(timeout=5)
    result = res.result
    return {
        "demonstrations": demos, "steps_per_demonstration": steps, "samples": int(result.samples),
        "obs_dim": emb, "action_dim": action_dim, "skill_hidden": hidden, "epochs_requested": epochs,
        "epochs_run": int(feedback[-1].epoch) if feedback else None, "feedback_messages": len(feedback),
        "action_wall_time_s": round(wall, 2),
        "validation_loss": round(float(result.validation_loss), 6),
        "base_validation_loss": round(float(result.base_validation_loss), 6),
        "installed_version": int(result.version),
        "control_rate_configured_hz": control_rate,
        "control_rate_idle_hz": round(idle_rate, 2),
        "control_rate_while_training_hz": round(training_rate, 2),
        "control_rate_while_training_pct_of_configured": round(100 * training_rate / control_rate, 1),
        "within_5pct": bool(training_rate >= 0.95 * control_rate),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer epochs (CI)")
    p.add_argument("--demos", type=int, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--control-rate", type=float, default=50.0)
    p.add_argument("--out", default=str(RESULTS / "train_action.json"))
    args = p.parse_args(argv)
    epochs = 20 if args.quick else 100
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-train-action-") as tmp:
        measured = run(Path(tmp), args.demos, args.steps, args.control_rate, epochs)
    result = {
        "bench": "train_action",
        "created": started,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "note": "trainer_node and skill_node are separate processes; training runs on a niced thread with one torch "
                "thread (trainer_node defaults); the CPU is shared with the benchmark process and other work "
                "(see loadavg)",
        "quick": args.quick,
        **measured,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(measured, indent=2))
    print(f"bench_train_action: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
