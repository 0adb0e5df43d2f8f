"""The scfl node graph, described once for ``launch/scfl.launch.py`` and ``scfl up``.

Both read the ``ros`` section of ``config/scfl.yaml`` (validated by
:class:`scfl_nodes.core.config.RosConfig`) and the per-node ``ros__parameters`` in the params
file it names (``config/nodes.yaml``). :func:`launch_arguments` lists the launch arguments
with their descriptions; :func:`node_overrides` maps them onto node parameters. No rclpy
import here: the launch file runs in the ``ros2 launch`` process, ``scfl up`` without ROS.

:class:`NodeProcess` starts one node as a subprocess (used by ``scfl up`` and the tests).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from scfl_nodes.core.paths import package_path

#: every node of the suite: (executable / module name, what it does)
NODES: dict[str, str] = {
    "camera_node": "camera frames (RealSense / ZED / UVC / video file) -> sensor_msgs/Image + CameraInfo",
    "vla_node": "frozen base VLA on camera frames -> BaseAction",
    "router_node": "~/request_skills service: task -> skills + weights (local gating or cloud)",
    "skill_node": "control loop: base action + sum of weighted residual skills -> ResidualAction",
    "retarget_node": "~/retarget service: human hand + object poses -> robot joint trajectory",
    "command_node": "final action + /joint_states -> MoveIt Servo twist + joint_trajectory_controller trajectories (IK)",
    "federation_bridge_node": "encrypted, signed skill deltas <-> cloud (persistent outbox)",
    "bag_player": "replays a rosbag2 (sqlite3 / mcap) with recorded timing",
    "recorder_node": "~/start, ~/stop: demonstrations (camera, base action, demonstrator command) -> rosbag2",
    "trainer_node": "~/train_skill action (TrainSkill): recordings -> new local skill version -> scfl/local_update",
}

#: managed (lifecycle) nodes: ``autostart`` parameter; scfl.launch.py drives their transitions
LIFECYCLE_NODES = ("camera_node", "vla_node")

#: launch argument -> (description, {node: parameter it sets})
LAUNCH_ARGUMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "params_file": ("YAML file with ros__parameters for every node (config/nodes.yaml)", {}),
    "namespace": ("ROS namespace for all nodes (empty = global), e.g. robot1", {}),
    "use_sim_time": ("use /clock (simulation or bag replay with publish_clock) instead of wall time", {}),
    "camera_type": (
        "camera source of camera_node: realsense, realsense_playback, zed, uvc, video, sim",
        {"camera_node": "camera_type"},
    ),
    "vla_backend": ("inference backend of the frozen base VLA in vla_node (torch, onnxruntime, ...)",
                    {"vla_node": "backend"}),
    "cloud_url": ("base URL of the scfl cloud (router_node in cloud mode, federation_bridge_node)",
                  {"router_node": "cloud_url", "federation_bridge_node": "cloud_url"}),
}


def launch_arguments() -> dict[str, str]:
    """Launch argument names -> descriptions (what ``ros2 launch ... --show-args`` prints)."""
    return {name: desc for name, (desc, _) in LAUNCH_ARGUMENTS.items()}


def resolve_params_file(params_file: str, config_path: str | os.PathLike | None = None) -> Path:
    """A relative ``params_file`` is relative to the directory of scfl.yaml."""
    path = Path(os.path.expanduser(params_file))
    if not path.is_absolute():
        base = Path(config_path).resolve().parent if config_path else package_path("config")
        path = base / path
    return path


def node_overrides(ros_cfg: Any) -> dict[str, dict[str, Any]]:
    """Per-node parameter overrides implied by the ros section (on top of the params file)."""
    out: dict[str, dict[str, Any]] = {name: {"use_sim_time": bool(ros_cfg.use_sim_time)} for name in ros_cfg.nodes}
    for arg, (_, targets) in LAUNCH_ARGUMENTS.items():
        for node, param in targets.items():
            if node in out:
                out[node][param] = getattr(ros_cfg, arg)
    return out


def write_overrides_yaml(overrides: dict[str, dict[str, Any]], directory: str | os.PathLike) -> Path:
    """A params file with the overrides (keyed ``/**/<node>`` so any namespace matches)."""
    import yaml

    data = {f"/**/{node}": {"ros__parameters": params} for node, params in overrides.items() if params}
    fd, path = tempfile.mkstemp(prefix="scfl-overrides-", suffix=".yaml", dir=str(directory))
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=True)
    return Path(path)


@dataclasses.dataclass
class NodeProcess:
    """One scfl node running in its own process (``python -m scfl_nodes.nodes.<name>``)."""

    name: str
    params_files: Sequence[str | os.PathLike] = ()
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    namespace: str = ""
    domain_id: int | None = None
    log_path: str | os.PathLike | None = None
    env: dict | None = None
    proc: subprocess.Popen | None = None

    def command(self, tmpdir: str | os.PathLike) -> list[str]:
        if self.name not in NODES:
            raise ValueError(f"unknown node {self.name!r}; known: {', '.join(NODES)}")
        cmd = [sys.executable, "-m", f"scfl_nodes.nodes.{self.name}", "--ros-args"]
        for f in self.params_files:
            cmd += ["--params-file", str(f)]
        if self.params:
            cmd += ["--params-file", str(write_overrides_yaml({self.name: self.params}, tmpdir))]
        if self.namespace:
            cmd += ["-r", f"__ns:=/{self.namespace.strip('/')}"]
        return cmd

    def start(self, tmpdir: str | os.PathLike | None = None) -> "NodeProcess":
        from scfl_nodes.nodes.common import ros_subprocess_env

        tmpdir = tmpdir or tempfile.mkdtemp(prefix="scfl-node-")
        env = ros_subprocess_env(self.env, self.domain_id)
        out = open(self.log_path, "ab") if self.log_path else None  # None: share our terminal
        try:
            self.proc = subprocess.Popen(self.command(tmpdir), stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            if self.log_path:
                out.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (clean shutdown), SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self) -> str:
        if not self.log_path or not Path(self.log_path).exists():
            return ""
        return Path(self.log_path).read_text(errors="replace")


def _die_with_parent() -> None:
    """Linux: SIGTERM the node when the process that started it dies, even by SIGKILL.

    Nodes run in their own session (a terminal's Ctrl-C reaches only ``scfl up``, which then
    stops them in order), so without this a killed ``scfl up`` or test would leave orphaned
    nodes publishing on the DDS domain. The signal follows the spawning *thread*: start
    nodes from a thread that outlives them (the main thread).
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: orphans are possible, stop() still cleans up normally


def wait_all(processes: Sequence[NodeProcess], stop_requested, poll_s: float = 0.2) -> list[NodeProcess]:
    """Block until ``stop_requested()`` or a process dies; returns the processes that died."""
    while not stop_requested():
        dead = [p for p in processes if not p.alive()]
        if dead:
            return dead
        time.sleep(poll_s)
    return []
