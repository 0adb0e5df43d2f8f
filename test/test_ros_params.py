"""Dynamic parameters of the running nodes, changed from another process through the real
rcl_interfaces SetParameters service (what ``ros2 param set`` calls): a change takes effect
without a restart, a bad value is refused with a reason, read-only parameters say why."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.timeout(300)


def _library(root, obs_dim: int, action_dim: int):
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage

    lib = SkillLibrary(root)
    torch.manual_seed(0)
    for name in ("drawer close", "door lock"):
        lib.add(SkillPackage.create(SkillModule(obs_dim, action_dim, 16), name, [f"{name} task"]))
    return lib


def _median_period(msgs) -> float:
    t = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs])
    return float(np.median(np.diff(t)))


def test_skill_node_rate_and_active_skills_change_at_run_time(tmp_path):
    from scfl_nodes.nodes.testing import RosHarness

    lib = _library(tmp_path / "library", 8, 4)
    with RosHarness(tmp_path / "ros") as ros:
        from rcl_interfaces.msg import ParameterType
        from rcl_interfaces.srv import DescribeParameters
        from scfl_interfaces.msg import BaseAction, ResidualAction

        ros.start("skill_node", {"library_path": str(lib.root), "control_rate_hz": 50.0, "publish_markers": False})
        actions = ros.subscribe(ResidualAction, "/scfl/action", 1000)
        base = ros.publisher(BaseAction, "/scfl/base_action")
        ros.wait_for(lambda: base.get_subscription_count() > 0, 90, "skill_node subscribed")
        base.publish(BaseAction(action=[0.1, 0.2, 0.3, 0.4], observation_embedding=[0.5] * 8, sequence=1))
        ros.wait_for(lambda: len(actions) >= 30, 60, "control cycles at 50 Hz")
        assert _median_period(actions[-25:]) == pytest.approx(0.02, abs=0.01)

        # control rate: 50 -> 10 Hz without a restart
        result = ros.set_parameters("/skill_node", control_rate_hz=10.0)
        assert result[0].successful, result[0].reason
        n = len(actions)
        ros.wait_for(lambda: len(actions) >= n + 12, 60, "control cycles at 10 Hz")
        assert _median_period(actions[n + 1:]) == pytest.approx(0.1, abs=0.02)

        # bad values: refused with a reason, nothing changes
        out_of_range = ros.set_parameters("/skill_node", control_rate_hz=5000.0)
        assert not out_of_range[0].successful and "control_rate_hz" in out_of_range[0].reason
        unknown = ros.set_parameters("/skill_node", active_skills=["no_such_skill"])
        assert not unknown[0].successful
        assert "no_such_skill" in unknown[0].reason and "drawer_close" in unknown[0].reason, unknown[0].reason
        read_only = ros.set_parameters("/skill_node", library_path="/tmp/elsewhere")
        assert not read_only[0].successful and "read-only" in read_only[0].reason.lower(), read_only[0].reason

        # active skills pinned at run time: the next cycles apply exactly that skill
        result = ros.set_parameters("/skill_node", active_skills=["door_lock"])
        assert result[0].successful, result[0].reason
        ros.wait_for(lambda: list(actions[-1].skill_ids) == ["door_lock"], 30, "the pinned skill in the cycles")
        assert list(actions[-1].weights) == [1.0]
        assert ros.set_parameters("/skill_node", active_skills=[""])[0].successful  # back to the router
        ros.wait_for(lambda: list(actions[-1].skill_ids) == [], 30, "no skills without a router choice")

        # descriptors: dynamic ones say so, read-only ones say why
        desc = ros.call(DescribeParameters, "/skill_node/describe_parameters",
                        DescribeParameters.Request(names=["control_rate_hz", "library_path"])).descriptors
        assert not desc[0].read_only and "dynamic" in desc[0].description
        assert desc[1].read_only and "restart" in desc[1].description
        assert desc[0].type == ParameterType.PARAMETER_DOUBLE
        codes = ros.close()
    assert codes["skill_node"] == 0


def test_vla_node_instruction_changes_at_run_time(tmp_path):
    from scfl_nodes.nodes.common import numpy_to_image, sensor_qos
    from scfl_nodes.nodes.testing import RosHarness

    with RosHarness(tmp_path) as ros:
        from scfl_interfaces.msg import BaseAction, Observation
        from sensor_msgs.msg import Image

        ros.start("vla_node", {"instruction": "push the open drawer closed"})
        bases = ros.subscribe(BaseAction, "/scfl/base_action", 100)
        images = ros.publisher(Image, "/camera/camera/color/image_raw", sensor_qos())
        states = ros.publisher(Observation, "/scfl/observation_state", 50)
        stop = threading.Event()

        def feed():  # a camera + state source at 10 Hz
            while not stop.is_set():
                stamp = ros.node.get_clock().now().to_msg()
                obs = Observation(state=[0.0] * 39)
                obs.header.stamp = stamp
                states.publish(obs)
                images.publish(numpy_to_image(np.zeros((8, 8, 3), np.uint8), stamp, "camera_color_optical_frame"))
                time.sleep(0.1)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            ros.wait_for(lambda: bases, 120, "base actions")
            assert bases[-1].instruction == "push the open drawer closed"
            result = ros.set_parameters("/vla_node", instruction="lock the door by turning the lock knob down")
            assert result[0].successful, result[0].reason
            ros.wait_for(lambda: bases[-1].instruction == "lock the door by turning the lock knob down", 30,
                         "the new instruction in the base actions")
            blank = ros.set_parameters("/vla_node", instruction="   ")
            assert not blank[0].successful and "blank" in blank[0].reason, blank[0].reason
            read_only = ros.set_parameters("/vla_node", model="other-model")
            assert not read_only[0].successful and "read-only" in read_only[0].reason.lower()
            time.sleep(0.5)
            assert bases[-1].instruction == "lock the door by turning the lock knob down"
        finally:
            stop.set()
            feeder.join(2)
        codes = ros.close()
    assert codes["vla_node"] == 0


def test_camera_exposure_is_dynamic_and_refused_by_a_source_without_it(tmp_path):
    from scfl_nodes.nodes.testing import RosHarness

    with RosHarness(tmp_path) as ros:
        ros.start("camera_node", {"camera_type": "sim", "width": 32, "height": 32, "fps": 5.0})
        ros.wait_for(lambda: any(s.name.endswith("/camera_node") and s.message == "streaming"
                                 for s in ros.diagnostics()), 180, "the simulated camera streaming")
        refused = ros.set_parameters("/camera_node", exposure=100.0)
        assert not refused[0].successful and "metaworld source has no exposure control" in refused[0].reason, \
            refused[0].reason
        out_of_range = ros.set_parameters("/camera_node", exposure=-5.0)
        assert not out_of_range[0].successful and "exposure" in out_of_range[0].reason
        read_only = ros.set_parameters("/camera_node", width=64)
        assert not read_only[0].successful and "read-only" in read_only[0].reason.lower()
        codes = ros.close()
    assert codes["camera_node"] == 0
