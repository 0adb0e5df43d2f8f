"""trainer_node: the ``TrainSkill`` action -- train a residual skill on the robot (paper Alg. 1, 5-7).

``~/train_skill`` (``scfl_interfaces/action/TrainSkill``) reads the goal's recordings
(recorder_node bags, or any demonstration directory of docs/demonstrations.md), fine-tunes the
skill's newest local version with the core trainer (the same code as ``scfl train-skill``),
installs the result as version + 1 in the local library and announces it on
``scfl/local_update``, which federation_bridge_node turns into an encrypted upload.

Why the control rate holds: training runs on its own thread in this process (never in
skill_node), with torch limited to ``torch_threads`` and the thread niced (``nice``), so the
scheduler prefers the control loop. One goal at a time (a second is rejected). Feedback is
sent after every epoch; a cancel stops at the next epoch and installs nothing. Bad recordings
abort the goal with the reason in ``result.message`` before anything is trained.
"""

from __future__ import annotations

import math
import os
import threading
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from scfl_nodes.nodes.common import Diagnostics, NodeConfigError, Param, declare_params, run_node

PARAMS = [
    Param("library_path", "", "skill library root; empty = skill_library.storage_path of config_file"),
    Param("config_file", "", "scfl.yaml (training and skill sections give the defaults); empty = the default config"),
    Param("update_topic", "scfl/local_update", "output: SkillInstalled for every locally trained version"),
    Param("min_samples", 10, "goals whose recordings hold fewer paired steps are aborted", min=1, max=10_000_000),
    Param("torch_threads", 1, "torch intra-op threads of the training thread", min=1, max=64),
    Param("feedback_period_s", 0.1, "minimum seconds between two feedback messages (first and last epoch always)",
          min=0.0, max=60.0),
    Param("nice", 10, "niceness of the training thread (Linux; higher = yields to the control loop)", min=0, max=19),
]


class TrainingCancelled(Exception):
    """Raised from the per-epoch hook when the client cancelled the goal."""


class TrainerNode(Node):
    def __init__(self):
        super().__init__("trainer_node")
        from rclpy.action import ActionServer
        from scfl_interfaces.action import TrainSkill
        from scfl_interfaces.msg import SkillInstalled

        from scfl_nodes.core.config import ConfigError, expand_path, load_config
        from scfl_nodes.core.skills import SkillLibrary

        self.p = declare_params(self, PARAMS)
        try:
            self.cfg = load_config(self.p["config_file"] or None)
        except ConfigError as exc:
            raise NodeConfigError(f"parameter 'config_file': {exc}") from None
        lib_path = expand_path(self.p["library_path"]) if self.p["library_path"] else self.cfg.skill_library.path
        self.library = SkillLibrary(lib_path, max_skills=self.cfg.skill_library.max_skills)
        self._TrainSkill, self._SkillInstalled = TrainSkill, SkillInstalled
        self.diag = Diagnostics(self, "trainer")
        self._busy = threading.Lock()
        self.runs = {"succeeded": 0, "aborted": 0, "canceled": 0}
        self.update_pub = self.create_publisher(SkillInstalled, self.p["update_topic"], 10)
        self._server = ActionServer(
            self, TrainSkill, "~/train_skill", execute_callback=self._execute, goal_callback=self._on_goal,
            cancel_callback=lambda _goal: self._cancel_response(), callback_group=ReentrantCallbackGroup())
        self.create_timer(1.0, lambda: self.diag.update(**self.runs), callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"TrainSkill action on {self.get_fully_qualified_name()}/train_skill; library {lib_path}")
        self.diag.set(Diagnostics.OK, "idle")

    # ------------------------------------------------------------------ action callbacks
    def _on_goal(self, goal):
        from rclpy.action import GoalResponse

        if self._busy.locked():
            self.get_logger().warning(f"rejected TrainSkill goal for {goal.skill!r}: a training run is in progress")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    @staticmethod
    def _cancel_response():
        from rclpy.action import CancelResponse

        return CancelResponse.ACCEPT

    def _execute(self, goal_handle):
        with self._busy:
            self.diag.set(Diagnostics.OK, f"training {goal_handle.request.skill!r}")
            try:
                return self._run(goal_handle)
            finally:
                self.diag.set(Diagnostics.OK, "idle")

    def _finish(self, goal_handle, state: str, message: str, **fields):
        fields = {"validation_loss": math.nan, "base_validation_loss": math.nan, **fields}
        result = self._TrainSkill.Result(success=state == "succeeded", message=message, **fields)
        getattr(goal_handle, {"succeeded": "succeed", "aborted": "abort", "canceled": "canceled"}[state])()
        self.runs[state] += 1
        text = f"TrainSkill {goal_handle.request.skill!r}: {state}: {message}"
        if state == "succeeded":  # one call site per severity: rclpy refuses a change at one site
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        return result

    def _run(self, goal_handle):
        from scfl_nodes.core.training import DemonstrationError, load_demonstrations
        from scfl_nodes.core.training.skill_training import SkillTrainingError

        goal = goal_handle.request
        nan = float("nan")
        if not goal.skill.strip():
            return self._finish(goal_handle, "aborted", "goal has an empty skill name; nothing installed")
        if not goal.recordings:
            return self._finish(goal_handle, "aborted", "goal names no recordings; nothing installed")
        # validate every recording before any training (one clear reason, nothing installed)
        episodes = []
        try:
            for path in goal.recordings:
                episodes.extend(load_demonstrations(path))
            if len({(e.obs_dim, e.action_dim) for e in episodes}) > 1:
                raise DemonstrationError("recordings have different observation/action dims "
                                         f"{sorted({(e.obs_dim, e.action_dim) for e in episodes})}")
        except DemonstrationError as exc:
            return self._finish(goal_handle, "aborted", f"bad recording: {exc}; nothing installed")
        samples = sum(e.length for e in episodes)
        if samples < self.p["min_samples"]:
            return self._finish(goal_handle, "aborted", f"bad recording: {samples} paired steps, fewer than "
                                f"min_samples={self.p['min_samples']}; nothing installed",
                                samples=samples)

        outcome: dict = {}
        last_feedback = [-math.inf]

        def on_epoch(entry: dict) -> None:
            if goal_handle.is_cancel_requested:
                raise TrainingCancelled()
            now = time.monotonic()
            if (now - last_feedback[0] < self.p["feedback_period_s"]
                    and entry["epoch"] not in (1, entry["epochs"])):
                return  # tiny epochs: feedback at a readable rate, not thousands per second
            last_feedback[0] = now
            val = entry["val_loss"]
            goal_handle.publish_feedback(self._TrainSkill.Feedback(
                epoch=entry["epoch"], epochs=entry["epochs"], loss=float(entry["train_loss"]),
                validation_loss=nan if val is None else float(val), samples=entry["samples"]))

        def train() -> None:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.p["nice"])
            except (OSError, AttributeError):
                pass  # not Linux: the thread keeps the process priority
            from scfl_nodes.core.training.residual import torch_threads
            from scfl_nodes.core.training.skill_training import train_skill_into_library

            try:
                with torch_threads(self.p["torch_threads"]):
                    outcome["result"] = train_skill_into_library(
                        self.library, goal.skill, episodes, self.cfg, tasks=[goal.task_description],
                        epochs=int(goal.epochs) or None, on_epoch=on_epoch,
                        extra_training={"recordings": list(goal.recordings)})
            except BaseException as exc:  # reported by the action thread
                outcome["error"] = exc

        # a fresh thread per goal: its niceness never leaks into the executor's threads
        worker = threading.Thread(target=train, name="train-skill", daemon=True)
        worker.start()
        worker.join()
        error = outcome.get("error")
        if isinstance(error, TrainingCancelled):
            return self._finish(goal_handle, "canceled", "cancelled; nothing installed",
                                samples=samples)
        if isinstance(error, (DemonstrationError, SkillTrainingError, ValueError)):
            return self._finish(goal_handle, "aborted", f"{error}; nothing installed",
                                samples=samples)
        if error is not None:
            return self._finish(goal_handle, "aborted", f"training failed: {type(error).__name__}: {error}",
                                samples=samples)
        package, path, metrics = outcome["result"]
        msg = self._SkillInstalled(skill_id=package.skill_id, version=package.version, package_path=str(path))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.update_pub.publish(msg)  # federation_bridge_node uploads new - parent
        val, base_val = metrics["val_loss"], metrics["val_base_mse"]
        return self._finish(
            goal_handle, "succeeded",
            f"installed {package.skill_id} v{package.version} ({metrics['epochs_run']} epochs, {samples} steps)",
            skill_id=package.skill_id, version=package.version, parent_version=package.manifest.parent_version or 0,
            validation_loss=nan if val is None else float(val),
            base_validation_loss=nan if base_val is None else float(base_val), samples=samples)


def main(args=None) -> int:
    return run_node(TrainerNode, "trainer_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
