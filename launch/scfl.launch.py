"""Launch the scfl node graph on a robot with ROS 2 installed.

    ros2 launch scfl_nodes scfl.launch.py
    ros2 launch scfl_nodes scfl.launch.py namespace:=robot1 camera_type:=realsense cloud_url:=https://fleet.example.org
    ros2 launch scfl_nodes scfl.launch.py --show-args

Argument defaults come from the ``ros`` section of config/scfl.yaml (the same file
``scfl up --config config/scfl.yaml`` reads on a pip-only machine), the per-node
ros__parameters from ``params_file`` (config/nodes.yaml). Which nodes start is
``ros.nodes`` in scfl.yaml. The argument list and how each argument maps onto node
parameters live in :mod:`scfl_nodes.nodes.graph`, shared with ``scfl up``.

camera_node and vla_node are managed (lifecycle) nodes: they start with ``autostart:=false``
and this file configures them (camera opened, model loaded) and activates them once
configured, through launch_ros' lifecycle events. A node whose configure fails (e.g. no
camera) logs why and stays unconfigured; ``ros2 lifecycle set`` can retry it.

When the environment chooses no Fast DDS transports (neither ``FASTDDS_BUILTIN_TRANSPORTS`` nor
``FASTDDS_DEFAULT_PROFILES_FILE``), the nodes get the camera graph's profile
(config/fastdds_shm.xml: 640x480 frames need a larger shared-memory segment; docs/ros.md).
"""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from scfl_nodes.core.config import default_config_path, load_config
from scfl_nodes.nodes.common import camera_transports
from scfl_nodes.nodes.graph import LAUNCH_ARGUMENTS, LIFECYCLE_NODES, node_overrides, resolve_params_file


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _start_nodes(context, config_path: str):
    """Resolve the arguments and create one Node action per entry of ros.nodes."""
    import dataclasses

    base = load_config(config_path).ros
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    ros = dataclasses.replace(
        base,
        params_file=values["params_file"],
        namespace=values["namespace"],
        use_sim_time=values["use_sim_time"].strip().lower() in ("true", "1", "yes"),
        camera_type=values["camera_type"],
        vla_backend=values["vla_backend"],
        cloud_url=values["cloud_url"],
    )
    params_file = str(resolve_params_file(ros.params_file, config_path))
    actions = [LogInfo(msg=f"scfl: starting {', '.join(ros.nodes)} (params {params_file}, namespace '{ros.namespace}')")]
    env = context.environment
    if not env.get("FASTDDS_BUILTIN_TRANSPORTS") and not env.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        actions.append(SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", camera_transports()))
    for name, overrides in node_overrides(ros).items():
        if name not in LIFECYCLE_NODES:
            actions.append(Node(package="scfl_nodes", executable=name, name=name, namespace=ros.namespace,
                                parameters=[params_file, overrides], output="screen", emulate_tty=True))
            continue
        node = LifecycleNode(package="scfl_nodes", executable=name, name=name, namespace=ros.namespace,
                             parameters=[params_file, {**overrides, "autostart": False}], output="screen",
                             emulate_tty=True)
        activate = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                               transition_id=Transition.TRANSITION_ACTIVATE))
        actions += [
            # configured -> activate (only after configure: a later deactivate is left alone)
            RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                   goal_state="inactive", entities=[activate])),
            node,
            EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                        transition_id=Transition.TRANSITION_CONFIGURE)),
        ]
    return actions


def generate_launch_description() -> LaunchDescription:
    config_path = str(default_config_path())
    defaults = load_config(config_path).ros
    arguments = [
        DeclareLaunchArgument(name, default_value=_as_text(getattr(defaults, name)), description=description)
        for name, (description, _targets) in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_start_nodes, args=[config_path])])
