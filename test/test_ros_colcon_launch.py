"""The package as a ROS 2 user gets it: `colcon build` of a clean copy of the repository, then
launch/scfl.launch.py run exactly as `ros2 launch scfl_nodes scfl.launch.py namespace:=robot1`
does (launch.LaunchService, launch_ros; the real upstream packages, from the system or from
../shared/vendor/ros2), checked from another process: nodes, topics, services, parameters,
lifecycle states, a SkillRequest, actions flowing, a complete TF tree, and a clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scfl_nodes.nodes.common import apply_dds_environment

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[1]
NODES = ["camera_node", "vla_node", "router_node", "skill_node"]

#: what `ros2 launch <package> <file> [args]` does (ros2launch.api.launch_a_launch_file)
ROS2_LAUNCH = textwrap.dedent("""
    import os, sys
    import launch
    from launch.launch_description_sources import AnyLaunchDescriptionSource
    from ament_index_python.packages import get_package_share_directory
    package, file, *args = sys.argv[1:]
    path = os.path.join(get_package_share_directory(package), "launch", file)
    service = launch.LaunchService(argv=args)
    service.include_launch_description(launch.LaunchDescription([launch.actions.IncludeLaunchDescription(
        AnyLaunchDescriptionSource(path), launch_arguments=[tuple(a.split(":=", 1)) for a in args])]))
    sys.exit(service.run())
""")


def launch_env(install: Path, domain_id: int, home: Path) -> dict:
    """The environment `source install/setup.bash` gives, with nothing from the checkout."""
    pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    pkg = install / "scfl_nodes"
    overlay = ROOT / "ros_ws" / "install"  # scripts/build_ros.sh: tf2_msgs where the system has none
    pythonpath = [str(pkg / "lib" / pyver / "site-packages"), str(overlay / "lib" / pyver / "site-packages")]
    try:
        import launch_ros  # noqa: F401  (system ROS) -- else the vendored upstream copy
        vendor = Path(launch_ros.__file__).resolve().parents[1]
        if "vendor" in vendor.parts:
            pythonpath.append(str(vendor))
    except ImportError:
        pytest.skip("neither a system `launch` nor ../shared/vendor/ros2/python")
    # without the ros-* wheels' bootstrap guard, so that a child re-execs with their library path
    # added to ours (on a system ROS install the variable does not exist)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    env.update(
        AMENT_PREFIX_PATH=os.pathsep.join([str(pkg), str(overlay), sys.prefix]),
        PYTHONPATH=os.pathsep.join(pythonpath),
        LD_LIBRARY_PATH=os.pathsep.join([str(pkg / "lib"), str(overlay / "lib")]),
        ROS_DOMAIN_ID=str(domain_id), SCFL_HOME=str(home), PYTHONUNBUFFERED="1",
    )
    apply_dds_environment(env, "DEFAULT")  # as the harness this test talks through
    return env


def test_colcon_install_layout(colcon_install):
    share = colcon_install / "scfl_nodes" / "share" / "scfl_nodes"
    lib = colcon_install / "scfl_nodes" / "lib" / "scfl_nodes"
    from scfl_nodes.nodes.graph import NODES as ALL_NODES

    for node in ALL_NODES:
        assert os.access(lib / node, os.X_OK), node
    for rel in ("launch/scfl.launch.py", "config/scfl.yaml", "config/nodes.yaml", "config/scfl.rviz",
                "data/base_policy/config.json", "data/demo_bag/metadata.yaml", "package.xml"):
        assert (share / rel).is_file(), rel
    assert sorted(p.name for p in (share / "urdf").iterdir()) == sorted(p.name for p in (ROOT / "urdf").iterdir())
    index = colcon_install / "scfl_nodes" / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "scfl_nodes").is_file() and (index / "scfl_interfaces").is_file()
    # every run-time file resolves into the install, not a checkout
    probe = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from scfl_nodes.core.paths import checkout_root, package_path
        from scfl_nodes.core.config import default_config_path
        from scfl_nodes.core.vla.base_policy import default_base_policy_dir
        from scfl_nodes.core.retarget.robot import project_urdf_dir
        from scfl_nodes.nodes.bag_player import DEFAULT_BAG
        from scfl_nodes.nodes.common import default_params_file
        assert checkout_root() is None
        for p in (default_config_path(), default_base_policy_dir(), project_urdf_dir(), DEFAULT_BAG, default_params_file()):
            assert p.exists(), p
            print(p)
    """)], env=launch_env(colcon_install, 0, colcon_install), cwd=colcon_install, capture_output=True, text=True,
        timeout=300)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    paths = probe.stdout.split()
    assert len(paths) == 5 and all(p.startswith(str(share)) for p in paths), paths


def test_real_launch_of_the_colcon_install(colcon_install, tmp_path):
    import numpy as np
    import torch

    from scfl_nodes.core.frames import StaticTransform, reachable_from
    from scfl_nodes.core.sim import TASK_INSTRUCTIONS
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage
    from scfl_nodes.core.vla import load_base_policy
    from scfl_nodes.nodes.testing import RosHarness

    home = tmp_path / "home"
    lib = SkillLibrary(home / "skills")  # skill_library.storage_path = ${SCFL_HOME}/skills
    torch.manual_seed(0)
    emb = load_base_policy("scfl-metaworld-base").embedding_dim
    for task, instruction in TASK_INSTRUCTIONS.items():
        lib.add(SkillPackage.create(SkillModule(emb, 4, 16), task.removesuffix("-v3").replace("-", " "), [instruction]))

    with RosHarness(tmp_path / "ros") as ros:
        from diagnostic_msgs.msg import DiagnosticArray  # noqa: F401
        from lifecycle_msgs.srv import GetState
        from rcl_interfaces.srv import GetParameters
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from scfl_interfaces.msg import BaseAction, Observation, ResidualAction
        from scfl_interfaces.srv import SkillRequest

        tf = ros.subscribe(TFMessage, "/tf_static", QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        images = ros.subscribe(Image, "/robot1/camera/camera/color/image_raw", 10)  # default QoS: reliable
        infos = ros.subscribe(CameraInfo, "/robot1/camera/camera/color/camera_info", 10)
        states = ros.subscribe(Observation, "/robot1/scfl/observation_state", 10)
        bases = ros.subscribe(BaseAction, "/robot1/scfl/base_action", 10)
        actions = ros.subscribe(ResidualAction, "/robot1/scfl/action", 10)
        markers = ros.subscribe(MarkerArray, "/robot1/scfl/markers", 10)

        script = tmp_path / "ros2_launch.py"
        script.write_text(ROS2_LAUNCH)
        log = open(tmp_path / "launch.log", "w")
        launcher = subprocess.Popen([sys.executable, str(script), "scfl_nodes", "scfl.launch.py", "namespace:=robot1",
                                     # nodes on a loaded 2-core CI runner can need more than launch's 5 s to stop
                                     "sigterm_timeout:=60"],
                                    env=launch_env(colcon_install, ros.domain_id, home), cwd=tmp_path,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def output() -> str:
            log.flush()
            return (tmp_path / "launch.log").read_text(errors="replace")

        try:
            def nodes_up():
                return {n for n, ns in ros.node.get_node_names_and_namespaces() if ns == "/robot1"} >= set(NODES)

            ros.wait_for(nodes_up, 300, f"nodes {NODES} under /robot1")
            ros.wait_for(lambda: len(actions) >= 5 and len(bases) >= 3, 400, "base and final actions flowing")
            topics = dict(ros.node.get_topic_names_and_types())
            for topic, kind in [("/robot1/camera/camera/color/image_raw", "sensor_msgs/msg/Image"),
                                ("/robot1/scfl/base_action", "scfl_interfaces/msg/BaseAction"),
                                ("/robot1/scfl/action", "scfl_interfaces/msg/ResidualAction"),
                                ("/tf_static", "tf2_msgs/msg/TFMessage")]:
                assert kind in topics.get(topic, []), (topic, topics.get(topic))
            ros.wait_for(lambda: "scfl_interfaces/srv/SkillRequest" in dict(ros.node.get_service_names_and_types())
                         .get("/robot1/router_node/request_skills", []), 300, "router_node's SkillRequest service")

            for node in ("camera_node", "vla_node"):  # brought to active by the launch file's lifecycle events
                state = ros.call(GetState, f"/robot1/{node}/get_state", GetState.Request(), timeout=60)
                assert state.current_state.label == "active", (node, state.current_state)
            params = ros.call(GetParameters, "/robot1/camera_node/get_parameters",
                              GetParameters.Request(names=["camera_type", "autostart", "qos"]), timeout=60).values
            assert (params[0].string_value, params[1].bool_value, params[2].string_value) == ("sim", False, "reliable")
            params = ros.call(GetParameters, "/robot1/vla_node/get_parameters",
                              GetParameters.Request(names=["backend"]), timeout=60).values
            assert params[0].string_value == "torch"

            response = ros.call(SkillRequest, "/robot1/router_node/request_skills",
                                SkillRequest.Request(task_description="push the open drawer closed", max_skills=2),
                                timeout=120)
            assert response.success and response.skill_ids and response.skill_ids[0] == "drawer_close", response
            ros.wait_for(lambda: any(list(a.skill_ids) == list(response.skill_ids) for a in list(actions)), 120,
                         "final actions composed with the requested skills")
            final = [a for a in list(actions) if list(a.skill_ids) == list(response.skill_ids)][-1]
            assert len(final.action) == 4 and np.all(np.isfinite(final.action))
            assert np.allclose(np.asarray(final.action) - np.asarray(final.base_action), final.residual, atol=1e-5)
            ros.wait_for(lambda: images and infos and states and markers and tf, 60, "every stamped topic")

            # TF: every frame_id the nodes publish is on the static tree rooted at world
            transforms = [StaticTransform(t.header.frame_id, t.child_frame_id, (0, 0, 0), (0, 0, 0, 1))
                          for m in list(tf) for t in m.transforms]
            tree = reachable_from("world", transforms)
            assert {"world", "base_link", "camera_link", "camera_color_optical_frame"} <= tree, tree
            published = {m.header.frame_id for m in [*images, *infos, *states, *bases, *actions]}
            published |= {mk.header.frame_id for arr in list(markers) for mk in arr.markers}
            assert published and published <= tree, (published - tree, tree)
        except BaseException:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(30)
            raise AssertionError(output()[-12000:])

        # Ctrl-C in the terminal of `ros2 launch`: the terminal signals the whole foreground process
        # group, so launch (interactive) leaves SIGINT delivery to it and only escalates later
        os.killpg(launcher.pid, signal.SIGINT)
        try:
            code = launcher.wait(240)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            raise AssertionError("launch did not stop 240 s after SIGINT\n" + output()[-12000:])
    text = output()
    assert code == 0, text[-12000:]
    for noise in ("exception was never retrieved", "Traceback", "escalating to 'SIGTERM'", "process has died",
                  "ERROR]"):
        assert noise not in text, (noise, text[-12000:])
    for node in NODES:
        assert f"[{node}-" in text and "process has finished cleanly" in text, text[-12000:]
    assert text.count("process has finished cleanly") == len(NODES), text[-12000:]
    # the nodes ran from the colcon install (its share/ params file), not from the checkout
    assert f"(params {colcon_install / 'scfl_nodes' / 'share' / 'scfl_nodes' / 'config' / 'nodes.yaml'}," in text, text[:3000]
