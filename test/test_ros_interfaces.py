"""The generated scfl_interfaces package (scripts/build_ros.sh): every msg/srv is built, imports, serialises, and a
custom service and message cross process boundaries; the build script is idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)


ROOT = Path(__file__).resolve().parents[1]


def test_build_script_is_idempotent_and_covers_every_file():
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_ros.sh")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    # second run: nothing changed, so nothing is rebuilt
    again = subprocess.run(["bash", str(ROOT / "scripts" / "build_ros.sh")], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
    # ros_ws is a `colcon build --merge-install --symlink-install` of the whole package
    install = ROOT / "ros_ws" / "install"
    from scfl_nodes.nodes.graph import NODES

    for node in NODES:
        assert os.access(install / "lib" / "scfl_nodes" / node, os.X_OK), node
    launch_file = install / "share" / "scfl_nodes" / "launch" / "scfl.launch.py"
    assert launch_file.is_symlink() and launch_file.resolve() == (ROOT / "launch" / "scfl.launch.py").resolve()
    for pkg in ("scfl_nodes", "scfl_interfaces", "tf2_msgs"):
        assert (install / "share" / "ament_index" / "resource_index" / "packages" / pkg).is_file(), pkg

    from scfl_nodes.nodes.common import ensure_interfaces

    ensure_interfaces()
    import importlib

    from rclpy.serialization import deserialize_message, serialize_message

    for kind in ("msg", "srv"):
        files = sorted((ROOT / kind).glob(f"*.{kind}"))
        assert files
        module = importlib.import_module(f"scfl_interfaces.{kind}")
        for f in files:
            cls = getattr(module, f.stem)
            for sub in ([cls] if kind == "msg" else [cls.Request, cls.Response]):
                msg = sub()
                assert deserialize_message(serialize_message(msg), sub) == msg


def test_custom_service_and_message_across_processes(tmp_path):
    from scfl_nodes.nodes.testing import RosHarness, poll_until

    server = tmp_path / "server.py"
    server.write_text(textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        from scfl_nodes.nodes.common import ensure_interfaces
        ensure_interfaces()
        import rclpy
        from scfl_interfaces.msg import SkillWeights
        from scfl_interfaces.srv import SkillRequest
        rclpy.init()
        node = rclpy.create_node("interface_echo")
        pub = node.create_publisher(SkillWeights, "echo/weights", 10)
        def answer(req, resp):
            resp.skill_ids = [f"{req.task_description}-{i}" for i in range(req.max_skills)]
            resp.weights = [1.0 / req.max_skills] * req.max_skills
            resp.inference_time_ms = 1.25
            resp.success = True
            msg = SkillWeights(task_description=req.task_description, skill_ids=resp.skill_ids, weights=resp.weights)
            msg.header.frame_id = "echo"
            pub.publish(msg)
            return resp
        node.create_service(SkillRequest, "echo/request_skills", answer)
        try:
            rclpy.spin(node)
        except BaseException:
            pass
    """))
    with RosHarness(tmp_path / "ros") as ros:
        from scfl_nodes.nodes.common import ros_subprocess_env

        proc = subprocess.Popen([sys.executable, str(server), str(ROOT)], env=ros_subprocess_env(domain_id=ros.domain_id),
                                stderr=subprocess.PIPE, text=True)
        try:
            from scfl_interfaces.msg import SkillWeights
            from scfl_interfaces.srv import SkillRequest

            got = ros.subscribe(SkillWeights, "/echo/weights")
            ros.wait_for(lambda: ros.node.count_publishers("/echo/weights") > 0, 60, "the echo publisher")
            # each answer publishes one message; the server's publisher may not have matched our
            # subscription yet when it answers (discovery is asymmetric under load): ask again
            deadline = time.monotonic() + 60
            while True:
                resp = ros.call(SkillRequest, "/echo/request_skills",
                                SkillRequest.Request(task_description="open the door", max_skills=4), timeout=60)
                assert resp.success and resp.skill_ids == [f"open the door-{i}" for i in range(4)]
                assert list(resp.weights) == [0.25] * 4 and resp.inference_time_ms == pytest.approx(1.25)
                if poll_until(lambda: got, 2.0) or time.monotonic() > deadline:
                    break
            ros.wait_for(lambda: got, 1, "the custom message")
            assert got[0].header.frame_id == "echo" and list(got[0].skill_ids) == list(resp.skill_ids)
        finally:
            proc.terminate()
            try:
                proc.wait(60)  # a loaded machine can take seconds to tear down a participant
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
