"""skill_node: applies residual skills to the base action at the control rate.

Every control cycle (a timer) computes
``a = a_base + sum_i w_i * s_i(obs_embedding, a_base)`` with the core's batched
:class:`~scfl_nodes.core.skills.SkillComposer` on the LATEST base action from vla_node, and
publishes ``scfl_interfaces/ResidualAction``. Skill sets (from router_node's
``/scfl/skill_weights``, or pinned by ``active_skills``) and new skill versions
(``/scfl/skill_installed`` from the federation bridge) are loaded and composed on a loader
thread, then swapped in with one reference assignment, so a hot swap happens between two
cycles and never delays one. Every executor callback is short, so the node spins a
single-threaded executor: the control timer and the base-action callback run without a
hand-off to a worker thread (a multi-threaded rclpy executor added tens of ms of jitter on a
loaded CPU).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
import time

import numpy as np
from rclpy.node import Node

from scfl_nodes.nodes.common import (
    Diagnostics,
    NodeConfigError,
    Param,
    apply_thread_priority,
    declare_params,
    enable_dynamic_params,
    latched_qos,
    normal_scheduling,
    run_node,
    thread_priority_param,
)

PARAMS = [
    Param("library_path", "", "skill library root; empty = skill_library.storage_path of config_file"),
    Param("config_file", "", "scfl.yaml to read skill_library from; empty = the default config"),
    Param("control_rate_hz", 50.0, "control loop rate", min=1.0, max=1000.0, read_only=False),
    Param("active_skills", [""], "pin these installed skills (equal weights) instead of router_node's choice; "
          "[''] = follow the router", read_only=False),
    Param("base_action_topic", "scfl/base_action", "input: scfl_interfaces/BaseAction from vla_node"),
    Param("weights_topic", "scfl/skill_weights", "input: scfl_interfaces/SkillWeights from router_node (latched)"),
    Param("installed_topic", "scfl/skill_installed", "input: scfl_interfaces/SkillInstalled (new skill versions)"),
    Param("action_topic", "scfl/action", "output: scfl_interfaces/ResidualAction, one per control cycle"),
    Param("max_base_age_ms", 500.0, "diagnostics WARN when the newest base action is older than this", min=1.0,
          max=60000.0, read_only=False),
    Param("publish_markers", True, "publish /scfl/markers (visualization_msgs/MarkerArray) with active skills + weights"),
    Param("marker_frame", "world", "frame of the skill markers"),
    Param("torch_threads", 1, "torch intra-op threads", min=1, max=64),
    thread_priority_param(),
]


@dataclasses.dataclass(frozen=True)
class ActiveSkills:
    """An immutable snapshot the control loop reads with one attribute access."""

    composer: object | None
    skill_ids: tuple[str, ...]
    versions: tuple[int, ...]
    weights: np.ndarray
    task: str = ""


NO_SKILLS = ActiveSkills(None, (), (), np.zeros(0, np.float32))


class SkillNode(Node):
    def __init__(self):
        super().__init__("skill_node")
        from scfl_interfaces.msg import BaseAction, ResidualAction, SkillInstalled, SkillWeights

        from scfl_nodes.core.config import ConfigError, expand_path, load_config
        from scfl_nodes.core.skills import SkillLibrary

        self.p = declare_params(self, PARAMS)
        import torch

        torch.set_num_threads(self.p["torch_threads"])
        try:
            cfg = load_config(self.p["config_file"] or None)
        except ConfigError as exc:
            raise NodeConfigError(f"parameter 'config_file': {exc}") from None
        lib_path = expand_path(self.p["library_path"]) if self.p["library_path"] else cfg.skill_library.path
        self.library = SkillLibrary(lib_path)
        self.diag = Diagnostics(self, "skill_node")
        apply_thread_priority(self, self.diag, self.p["thread_priority"])
        self._ResidualAction = ResidualAction
        self._active = NO_SKILLS
        self._requested = None  # last SkillWeights message (what the router asked for)
        self._base = None  # (action, embedding, sequence, stamp_ns)
        self.cycle = 0
        self.swaps = 0
        self._cycle_times: collections.deque[float] = collections.deque(maxlen=500)
        self.overruns = 0
        self._load_lock = threading.Lock()
        # skill loading (disk + torch) off the executor, one request after the other, in order
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="skill-loader",
                                                             initializer=normal_scheduling)

        self.create_subscription(BaseAction, self.p["base_action_topic"], self._on_base, 10)
        self.create_subscription(SkillWeights, self.p["weights_topic"], lambda m: self._load(self._on_weights, m),
                                 latched_qos())
        self.create_subscription(SkillInstalled, self.p["installed_topic"], lambda m: self._load(self._on_installed, m), 10)
        self.pub = self.create_publisher(ResidualAction, self.p["action_topic"], 10)
        self._period = 1.0 / self.p["control_rate_hz"]
        self._control_timer = self.create_timer(self._period, self._control_cycle)
        self.create_timer(1.0, self._health)
        self._marker_pub = None
        if self.p["publish_markers"]:
            from visualization_msgs.msg import MarkerArray

            self._marker_pub = self.create_publisher(MarkerArray, "scfl/markers", 1)
            self.create_timer(0.5, self._publish_markers)
        enable_dynamic_params(self, PARAMS, self.p, apply=self._on_params_changed,
                              validators={"active_skills": self._check_active_skills})
        if _pinned(self.p["active_skills"]):
            self._check_active_skills(self.p["active_skills"])  # raises NodeConfigError: exit 2
            self._pin(_pinned(self.p["active_skills"]))
        self.get_logger().info(f"control loop at {self.p['control_rate_hz']:.0f} Hz, skill library {lib_path}")
        self.diag.set(Diagnostics.WARN, f"waiting for base actions on {self.p['base_action_topic']}")

    # ------------------------------------------------------------------ inputs
    def _load(self, fn, *args) -> None:
        """Run ``fn(*args)`` (loads skills) on the loader thread; failures go to the log and diagnostics."""

        def guarded():
            try:
                fn(*args)
            except Exception as exc:  # a broken skill package must not go unnoticed
                self.get_logger().error(f"loading skills failed: {type(exc).__name__}: {exc}")
                self.diag.set(Diagnostics.ERROR, f"loading skills failed: {exc}")

        try:
            self._loader.submit(guarded)
        except RuntimeError:  # the node is stopping
            pass

    def shutdown(self) -> None:
        """Called by run_node after the executor stopped: no load may start any more."""
        self._loader.shutdown(wait=False, cancel_futures=True)

    def _on_base(self, msg) -> None:
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._base = (
            np.asarray(msg.action, dtype=np.float32),
            np.asarray(msg.observation_embedding, dtype=np.float32),
            int(msg.sequence),
            stamp_ns,
        )

    def _build(self, skill_ids, versions, weights, task) -> ActiveSkills:
        """Load skill packages and build a composer (slow part, off the control loop)."""
        from scfl_nodes.core.skills import SkillComposer, SkillNotFoundError, SkillPackageError

        modules, ids, vers, ws, missing = [], [], [], [], []
        for sid, ver, w in zip(skill_ids, versions, weights):
            try:
                pkg = self.library.get(sid, int(ver) if ver else None)
            except (SkillNotFoundError, SkillPackageError) as exc:
                missing.append(f"{sid}: {exc}")
                continue
            modules.append(pkg.module.eval())
            ids.append(sid)
            vers.append(int(pkg.version))
            ws.append(float(w))
        if missing:
            self.diag.set(Diagnostics.WARN, f"skills not applied: {'; '.join(missing)}")
        if not modules:
            return ActiveSkills(None, (), (), np.zeros(0, np.float32), task)
        return ActiveSkills(SkillComposer(modules), tuple(ids), tuple(vers), np.asarray(ws, np.float32), task)

    # ------------------------------------------------------------------ run-time parameters
    def _check_active_skills(self, value):
        installed = set(self.library.skill_ids())  # read now: skills installed since start-up count
        unknown = [s for s in _pinned(value) if s not in installed]
        if unknown:
            raise NodeConfigError(f"parameter 'active_skills': skill(s) {', '.join(unknown)} not installed; "
                                  f"installed: {', '.join(sorted(installed)) or 'none'}")
        return list(value)

    def _on_params_changed(self, changed) -> None:
        if "control_rate_hz" in changed:
            self._period = 1.0 / changed["control_rate_hz"]
            self._control_timer.timer_period_ns = int(self._period * 1e9)  # next cycle runs at the new rate
        if "active_skills" in changed:
            self._load(self._apply_active_skills, _pinned(changed["active_skills"]))

    def _apply_active_skills(self, pinned) -> None:
        if pinned:
            self._pin(pinned)
        elif self._requested is not None:
            self._on_weights(self._requested)  # back to the router's last choice
        else:
            self._active = NO_SKILLS

    def _pin(self, skill_ids) -> None:
        with self._load_lock:
            weights = [1.0 / len(skill_ids)] * len(skill_ids)
            self._active = self._build(skill_ids, [0] * len(skill_ids), weights, "pinned by active_skills")
            self.swaps += 1
        self.get_logger().info(f"active skills pinned: {', '.join(self._active.skill_ids)}")

    def _on_weights(self, msg) -> None:
        if _pinned(self.p["active_skills"]):
            self._requested = msg
            self.get_logger().info(f"router chose skills for {msg.task_description!r}; active_skills pins others")
            return
        with self._load_lock:
            self._requested = msg
            versions = list(msg.skill_versions) or [0] * len(msg.skill_ids)
            active = self._build(list(msg.skill_ids), versions, list(msg.weights), msg.task_description)
            self._active = active  # atomic swap: the next cycle uses the new set
            self.swaps += 1
        self.get_logger().info(
            f"active skills for {msg.task_description!r}: "
            + (", ".join(f"{s} v{v} w={w:.3f}" for s, v, w in zip(active.skill_ids, active.versions, active.weights)) or "none")
        )

    def _on_installed(self, msg) -> None:
        with self._load_lock:
            current = self._active
            if msg.skill_id not in current.skill_ids:
                return
            versions = [int(msg.version) if s == msg.skill_id else v for s, v in zip(current.skill_ids, current.versions)]
            active = self._build(current.skill_ids, versions, current.weights, current.task)
            old = dict(zip(current.skill_ids, current.versions)).get(msg.skill_id)
            self._active = active
            self.swaps += 1
        self.get_logger().info(f"hot-swapped skill {msg.skill_id} v{old} -> v{msg.version} (cycle {self.cycle})")

    # ------------------------------------------------------------------ control loop
    def _control_cycle(self) -> None:
        t0 = time.perf_counter()
        base = self._base
        if base is None:
            return
        active = self._active  # one read: a swap cannot tear this cycle
        action, embedding, sequence, stamp_ns = base
        if active.composer is not None:
            final = active.composer.compose_numpy(embedding, action, active.weights)
        else:
            final = action
        msg = self._ResidualAction()
        now = self.get_clock().now()
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = "base_link"  # REP-105 robot base (camera_node publishes it on /tf_static)
        msg.action = final.astype(np.float32).tolist()
        msg.base_action = action.tolist()
        msg.residual = (final - action).astype(np.float32).tolist()
        msg.skill_ids = list(active.skill_ids)
        msg.skill_versions = list(active.versions)
        msg.weights = active.weights.tolist()
        msg.base_age_ms = float((now.nanoseconds - stamp_ns) / 1e6)
        msg.cycle = self.cycle
        msg.base_sequence = sequence
        self.pub.publish(msg)
        self.cycle += 1
        self._cycle_times.append(time.monotonic())
        if time.perf_counter() - t0 > self._period:
            self.overruns += 1

    def achieved_rate_hz(self) -> float:
        times = list(self._cycle_times)
        if len(times) < 2:
            return 0.0
        window = [t for t in times if t > times[-1] - 2.0]
        return (len(window) - 1) / max(window[-1] - window[0], 1e-9) if len(window) > 1 else 0.0

    def _health(self) -> None:
        base = self._base
        rate = self.achieved_rate_hz()
        self.diag.update(cycles=self.cycle, rate_hz=f"{rate:.1f}", overruns=self.overruns, swaps=self.swaps,
                         skills=",".join(self._active.skill_ids))
        if base is None:
            return
        age_ms = (self.get_clock().now().nanoseconds - base[3]) / 1e6
        self.diag.update(base_age_ms=f"{age_ms:.0f}")
        if age_ms > self.p["max_base_age_ms"]:  # stable message: logged once, the age is a value
            self.diag.set(Diagnostics.WARN, f"base action older than {self.p['max_base_age_ms']:.0f} ms "
                          "(vla_node or camera stalled?)")
        elif rate < 0.8 * self.p["control_rate_hz"] and self.cycle > 10:
            self.diag.set(Diagnostics.WARN, f"control loop below 80% of {self.p['control_rate_hz']:.0f} Hz")
        else:
            self.diag.set(Diagnostics.OK, "running")

    def _publish_markers(self) -> None:
        from visualization_msgs.msg import Marker, MarkerArray

        active = self._active
        frame = self.p["marker_frame"]
        stamp = self.get_clock().now().to_msg()
        markers = [Marker(action=Marker.DELETEALL)]
        markers[0].header.frame_id, markers[0].header.stamp = frame, stamp  # every frame_id on the TF tree
        text = Marker(ns="scfl_skills", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header.frame_id, text.header.stamp = frame, stamp
        text.pose.position.z = 1.2
        text.pose.orientation.w = 1.0
        text.scale.z = 0.05
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        lines = [f"task: {active.task or '-'}"] + [
            f"{s} v{v}: {w:.2f}" for s, v, w in zip(active.skill_ids, active.versions, active.weights)
        ]
        text.text = "\n".join(lines)
        markers.append(text)
        for i, w in enumerate(active.weights):
            bar = Marker(ns="scfl_skill_weights", id=i + 1, type=Marker.CUBE, action=Marker.ADD)
            bar.header.frame_id, bar.header.stamp = frame, stamp
            bar.pose.position.x = 0.6
            bar.pose.position.y = -0.2 + 0.1 * i
            bar.pose.position.z = 0.9 + float(w) * 0.15
            bar.pose.orientation.w = 1.0
            bar.scale.x = bar.scale.y = 0.05
            bar.scale.z = max(float(w) * 0.3, 1e-3)
            bar.color.g, bar.color.b, bar.color.a = 0.6, 1.0, 0.9
            markers.append(bar)
        self._marker_pub.publish(MarkerArray(markers=markers))


def _pinned(value) -> list[str]:
    return [s for s in value if s]


def main(args=None) -> int:
    return run_node(SkillNode, "skill_node", args, threads=1)


if __name__ == "__main__":
    raise SystemExit(main())
