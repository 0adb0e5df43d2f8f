"""launch/scfl.launch.py (robots with ROS 2; loaded here with the real launch packages) and
`scfl up` (pip-only) start the same graph from
the same YAML; config/nodes.yaml matches what the nodes declare; `scfl up` really runs the
camera -> vla_node chain and stops cleanly on Ctrl-C."""

from __future__ import annotations

import dataclasses
import importlib
import os
import py_compile
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.timeout(240)


ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "scfl.launch.py"


def _load_launch_file():
    """The launch file as `ros2 launch` loads it (the real launch / launch_ros packages)."""
    pytest.importorskip("launch_ros", reason="no system launch_ros and no ../shared/vendor/ros2/python on PYTHONPATH")
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    return get_launch_description_from_python_launch_file(str(LAUNCH_FILE))


def test_launch_file_compiles_and_its_arguments_match_the_yaml():
    from launch import LaunchContext
    from launch.utilities import perform_substitutions

    from scfl_nodes.core.config import RosConfig, load_config
    from scfl_nodes.nodes.graph import launch_arguments

    py_compile.compile(str(LAUNCH_FILE), doraise=True)
    description = _load_launch_file()
    declared = {a.name: a for a in description.get_launch_arguments()}
    wanted = {"params_file", "namespace", "use_sim_time", "camera_type", "vla_backend", "cloud_url"}
    assert set(declared) == wanted == set(launch_arguments())
    assert wanted == {f.name for f in dataclasses.fields(RosConfig)} - {"nodes"}
    ros = load_config().ros
    raw = yaml.safe_load((ROOT / "config" / "scfl.yaml").read_text())["ros"]
    for name, arg in declared.items():
        assert len(arg.description) > 20, name
        expected = getattr(ros, name)
        expected = str(expected).lower() if isinstance(expected, bool) else str(expected)
        default = perform_substitutions(LaunchContext(), arg.default_value)
        assert default == expected == (str(raw[name]).lower() if isinstance(raw[name], bool) else str(raw[name]))


def test_launch_and_scfl_up_start_the_same_nodes():
    import importlib.util

    from launch import LaunchContext
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch_ros.actions import LifecycleNode, Node

    from scfl_nodes.cli import build_parser
    from scfl_nodes.cli.up import resolve_graph
    from scfl_nodes.core.config import default_config_path
    from scfl_nodes.nodes.graph import LIFECYCLE_NODES

    values = {"params_file": "nodes.yaml", "namespace": "robot1", "use_sim_time": "true",
              "camera_type": "realsense", "vla_backend": "onnxruntime", "cloud_url": "https://fleet.example.org"}
    spec = importlib.util.spec_from_file_location("scfl_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = LaunchContext()
    context.launch_configurations.update(values)
    actions = module._start_nodes(context, str(default_config_path()))
    launched = [a for a in actions if isinstance(a, Node)]

    args = build_parser().parse_args(["up", "--namespace", "robot1", "--use-sim-time", "true", "--camera-type",
                                      "realsense", "--vla-backend", "onnxruntime", "--cloud-url",
                                      "https://fleet.example.org"])
    ros, params_file, per_node = resolve_graph(args)
    assert [a.node_executable for a in launched] == list(per_node) == list(ros.nodes)
    for node in launched:
        assert node.node_package == "scfl_nodes"
        assert isinstance(node, LifecycleNode) == (node.node_executable in LIFECYCLE_NODES)
    # each managed node gets a configure event and an activate-after-configure handler
    assert sum(isinstance(a, EmitEvent) for a in actions) == sum(isinstance(a, RegisterEventHandler) for a in actions) \
        == len([n for n in ros.nodes if n in LIFECYCLE_NODES])
    assert per_node["camera_node"]["camera_type"] == "realsense"
    assert per_node["vla_node"]["backend"] == "onnxruntime"
    assert all(p["use_sim_time"] is True for p in per_node.values())


def test_nodes_yaml_matches_declared_parameters():
    from scfl_nodes.nodes.common import ensure_interfaces
    from scfl_nodes.nodes.graph import NODES

    ensure_interfaces()
    data = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    assert {k.split("/")[-1] for k in data} == set(NODES)
    for key, section in data.items():
        node = key.split("/")[-1]
        params = {p.name: p for p in importlib.import_module(f"scfl_nodes.nodes.{node}").PARAMS}
        given = section["ros__parameters"]
        assert set(given) == set(params), (node, set(given) ^ set(params))
        for name, value in given.items():
            params[name].check(value)  # raises NodeConfigError for a bad default in the file
            assert params[name].description


def test_scfl_up_runs_the_graph_and_stops_cleanly_on_ctrl_c(tmp_path):
    from scfl_nodes.nodes.testing import RosHarness

    nodes = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    nodes["/**/camera_node"]["ros__parameters"].update(width=64, height=64, fps=10.0)
    (tmp_path / "nodes.yaml").write_text(yaml.safe_dump(nodes))
    cfg = yaml.safe_load((ROOT / "config" / "scfl.yaml").read_text())
    cfg["ros"].update(nodes=["camera_node", "vla_node"], namespace="robot1")
    (tmp_path / "scfl.yaml").write_text(yaml.safe_dump(cfg))
    with RosHarness(tmp_path / "ros") as ros:
        from scfl_interfaces.msg import BaseAction

        bases = ros.subscribe(BaseAction, "/robot1/scfl/base_action")
        env = dict(os.environ)
        up = subprocess.Popen([sys.executable, "-m", "scfl_nodes", "up", "--config", str(tmp_path / "scfl.yaml"),
                               "--domain-id", str(ros.domain_id), "--log-dir", str(tmp_path / "logs")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            ros.wait_for(lambda: len(bases) >= 5, 120, "base actions from the sim camera through vla_node")
        except AssertionError:
            up.kill()
            raise AssertionError(up.communicate()[0] + "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log")))
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "started camera_node" in out and "all nodes stopped" in out, out
    assert bases[-1].instruction == "push the open drawer closed" and len(bases[-1].action) == 4


def test_nodes_die_with_a_killed_launcher(tmp_path):
    """A SIGKILLed `scfl up` (or test) must not leave its nodes running on the DDS domain."""
    import time

    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import sys, time\n"
        "from scfl_nodes.nodes.graph import NodeProcess\n"
        f"node = NodeProcess('retarget_node', log_path={str(tmp_path / 'node.log')!r}, domain_id=77).start({str(tmp_path)!r})\n"
        "print(node.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, str(launcher)], stdout=subprocess.PIPE, text=True)
    try:
        node_pid = int(parent.stdout.readline())
        os.kill(node_pid, 0)  # the node is running
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(node_pid, 0)
            except ProcessLookupError:
                break
            # a zombie counts as gone: its parent (the launcher) is dead and init reaps it
            if Path(f"/proc/{node_pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                break
            time.sleep(0.1)
        else:
            os.kill(node_pid, signal.SIGKILL)
            pytest.fail("the node outlived its SIGKILLed launcher by 15 s")
    finally:
        if parent.poll() is None:
            parent.kill()
