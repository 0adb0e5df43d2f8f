"""Start-up behaviour of the nodes: bad parameters -> one clear line and exit code 2;
a missing camera or cloud -> the node keeps running and says so on /diagnostics."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(300)


BAD_PARAMETERS = [
    ("skill_node", ["control_rate_hz:=0.0"], "control_rate_hz"),
    ("vla_node", ["backend:=magic"], "parameter 'backend' must be one of torch"),
    ("router_node", ["mode:=telepathy"], "parameter 'mode' must be one of local, cloud"),
    ("camera_node", ["camera_type:=kinect"], "parameter 'camera_type' must be one of realsense"),
    ("camera_node", ["width:=-5"], "width"),
    ("bag_player", ["bag_path:=/nonexistent/bag"], "is not a rosbag2 directory"),
    ("retarget_node", ["robot:=nonexistent_robot"], "cannot build the retargeter: unknown robot"),
    ("skill_node", ["control_rate_hz:=fast"], "control_rate_hz"),
    ("skill_node", ["active_skills:=[no_such_skill]"], "parameter 'active_skills': skill(s) no_such_skill not installed"),
    ("command_node", ["robot:=nonexistent_robot"], "cannot load the robot: unknown robot"),
    ("command_node", ["velocity_scale:=3.0"], "velocity_scale"),
    ("command_node", ["action_frame_rpy:=[0.0, 1.0]"], "action_frame_rpy"),
    ("recorder_node", ["command_fields:=[linear.w]"], "parameter 'command_fields': twist command fields must be among"),
    ("recorder_node", ["storage:=tape"], "parameter 'storage' must be one of sqlite3, mcap"),
    ("trainer_node", ["nice:=40"], "nice"),
]


def test_bad_parameters_fail_at_startup_with_one_line():
    from scfl_nodes.nodes.common import ros_subprocess_env

    env = ros_subprocess_env(domain_id=98)
    procs = []
    for node, params, expected in BAD_PARAMETERS:  # all at once: start-up dominates the runtime
        args = [a for p in params for a in ("-p", p)]
        procs.append((node, params, expected, subprocess.Popen(
            [sys.executable, "-m", f"scfl_nodes.nodes.{node}", "--ros-args", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)))
    for node, params, expected, proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 2, (node, params, proc.returncode, err)
        assert "Traceback" not in err and "Traceback" not in out, (node, err)
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"{node}: error: ") and expected in last, (node, last)


def test_nodes_survive_missing_camera_and_cloud(tmp_path):
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage
    from scfl_nodes.nodes.testing import RosHarness

    lib = SkillLibrary(tmp_path / "library")
    lib.add(SkillPackage.create(SkillModule(8, 4, 8), "close drawer", ["push the drawer closed"]))
    with RosHarness(tmp_path / "ros") as ros:
        from scfl_interfaces.srv import SkillRequest

        camera = ros.start("camera_node", {"camera_type": "uvc", "device": "/dev/video99", "reconnect_s": 0.5})
        router = ros.start("router_node", {"mode": "cloud", "cloud_url": "http://127.0.0.1:9",
                                           "cloud_timeout_s": 0.5, "library_path": str(lib.root)})
        vla = ros.start("vla_node", {"image_timeout_s": 0.5})

        def status(node, level):
            return [s for s in ros.diagnostics() if s.name.endswith(f"/{node}") and s.level == bytes([level])]

        ros.wait_for(lambda: status("camera_node", 2), 60, "camera_node diagnostics ERROR")
        assert "camera unavailable" in status("camera_node", 2)[-1].message
        ros.wait_for(lambda: [s for s in status("vla_node", 1) if "images" in s.message], 90,
                     "vla_node diagnostics WARN (no images)")
        # cloud down: the router still answers from the local library and reports WARN
        resp = ros.call(SkillRequest, "/router_node/request_skills",
                        SkillRequest.Request(task_description="close the drawer", max_skills=1), timeout=120)
        assert resp.success and resp.source == "local" and resp.skill_ids == ["close_drawer"]
        ros.wait_for(lambda: status("router_node", 1), 30, "router_node diagnostics WARN (cloud unreachable)")
        assert "cloud unreachable" in status("router_node", 1)[-1].message
        time.sleep(1.0)
        assert camera.alive() and router.alive() and vla.alive(), ros.logs()
        codes = ros.close()
    assert codes == {"camera_node": 0, "router_node": 0, "vla_node": 0}, codes  # clean Ctrl-C shutdown
