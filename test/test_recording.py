"""Robot recordings (recorder_node's bags) as demonstrations: stamp pairing of base actions
with the demonstrator's command, the action-space mapping, one-line errors, and
``scfl train-skill`` training from such bags directly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from scfl_nodes.core import rosbag_io
from scfl_nodes.core.training import DemonstrationError, load_demonstrations, read_rosbag_episode
from scfl_nodes.core.training.recording import (
    RECORDING_INFO_TOPIC,
    JointCommand,
    TwistCommand,
    command_mapping,
    recording_info,
)

NS = 1_000_000_000


def _header(t_ns):
    return rosbag_io._header(t_ns, "base")


def _base_action(t_ns, action, embedding, seq, instruction="close the drawer"):
    T = rosbag_io.typestore().types
    return T["scfl_interfaces/msg/BaseAction"](
        header=_header(t_ns), instruction=instruction, action=np.asarray(action, np.float32),
        observation_embedding=np.asarray(embedding, np.float32), inference_time_ms=1.0, age_ms=1.0,
        sequence=seq, backend="torch")


def _twist(t_ns, values):
    T = rosbag_io.typestore().types
    v3 = T["geometry_msgs/msg/Vector3"]
    lin = v3(x=float(values[0]), y=float(values[1]), z=float(values[2]))
    ang = v3(x=0.0, y=0.0, z=float(values[3]))
    return T["geometry_msgs/msg/TwistStamped"](header=_header(t_ns), twist=T["geometry_msgs/msg/Twist"](linear=lin, angular=ang))


def write_recording(path, steps=20, *, with_commands=True, lag_ns=30_000_000, mapping=None, action_dim=4, seed=0,
                    command_offset=0):
    """A bag as recorder_node writes it: commands stamped with the image, base actions later."""
    rng = np.random.default_rng(seed)
    mapping = mapping or TwistCommand()
    info = recording_info("/r/scfl/base_action", "/r/scfl/teleop_cmd", mapping, "/r/scfl/instruction")
    expected = {"obs": [], "base": [], "expert": []}
    with rosbag_io.BagWriter(path) as w:
        w.write(RECORDING_INFO_TOPIC, NS, rosbag_io.string_message(info))
        w.write("/r/scfl/instruction", NS, rosbag_io.string_message("close the drawer"))
        for i in range(steps):
            t = 2 * NS + i * 100_000_000  # image stamps at 10 Hz
            cmd = rng.normal(size=4).astype(np.float32)
            base = rng.normal(size=action_dim).astype(np.float32)
            emb = rng.normal(size=8).astype(np.float32)
            if with_commands and i >= command_offset:
                w.write("/r/scfl/teleop_cmd", t + 1000, _twist(t, cmd))
                expected["expert"].append(cmd)
                expected["obs"].append(emb)
                expected["base"].append(base)
            w.write("/r/scfl/base_action", t + lag_ns, _base_action(t, base, emb, i))
    return {k: np.array(v) for k, v in expected.items()}


def test_recording_pairs_base_actions_with_commands_by_stamp(tmp_path):
    expected = write_recording(tmp_path / "demo", steps=20, command_offset=3)
    ep = read_rosbag_episode(tmp_path / "demo")
    assert ep.length == 17  # base actions before the demonstrator's first command are not steps
    np.testing.assert_array_equal(ep.observation, expected["obs"])
    np.testing.assert_array_equal(ep.base_action, expected["base"])
    np.testing.assert_allclose(ep.expert_action, expected["expert"], rtol=0, atol=1e-6)
    assert ep.task == "close the drawer"
    # the loader finds it like any other demonstration
    assert load_demonstrations(tmp_path)[0].length == 17


def test_stale_commands_do_not_pair(tmp_path):
    path = tmp_path / "demo"
    rng = np.random.default_rng(0)
    info = recording_info("/scfl/base_action", "/scfl/teleop_cmd", TwistCommand(), "/scfl/instruction",
                          max_command_age_s=0.5)
    with rosbag_io.BagWriter(path) as w:
        w.write(RECORDING_INFO_TOPIC, NS, rosbag_io.string_message(info))
        w.write("/scfl/teleop_cmd", NS, _twist(NS, [1, 2, 3, 4]))  # the teleop went quiet after this
        for i in range(20):
            t = NS + i * 100_000_000
            w.write("/scfl/base_action", t, _base_action(t, rng.normal(size=4), rng.normal(size=8), i))
    ep = read_rosbag_episode(path)
    assert ep.length == 6  # images at 0.0 .. 0.5 s after the command
    np.testing.assert_allclose(ep.expert_action, np.tile([1, 2, 3, 4], (6, 1)))


def test_command_mappings():
    t = TwistCommand(("linear.x", "angular.y"), scale=2.0)
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import JointState

    msg = t.fill(TwistStamped(), [0.5, -1.0])
    assert msg.twist.linear.x == 0.25 and msg.twist.angular.y == -0.5
    np.testing.assert_allclose(t.to_action(msg), [0.5, -1.0])
    j = JointCommand(("j2", "j1"))
    np.testing.assert_allclose(j.to_action(JointState(name=["j1", "j2"], position=[1.0, 2.0])), [2.0, 1.0])
    with pytest.raises(DemonstrationError, match="lacks joint"):
        j.to_action(JointState(name=["j1"], position=[1.0]))
    with pytest.raises(ValueError, match="twist command fields"):
        command_mapping("twist", ["linear.w"])
    with pytest.raises(ValueError, match="joint names"):
        command_mapping("joints", [])


@pytest.mark.parametrize("case, message", [
    ("no_commands", "no demonstrator commands on /r/scfl/teleop_cmd"),
    ("dims", "the command maps to 4 values but the base action has 3"),
    ("joints_for_twist", "expected scfl_interfaces/msg/BaseAction and sensor_msgs/msg/JointState"),
])
def test_bad_recordings_one_line_errors(tmp_path, case, message):
    if case == "no_commands":
        write_recording(tmp_path / "demo", with_commands=False)
    elif case == "dims":
        write_recording(tmp_path / "demo", action_dim=3)
    else:
        write_recording(tmp_path / "demo", mapping=JointCommand(("a", "b", "c", "d")))
    with pytest.raises(DemonstrationError) as err:
        read_rosbag_episode(tmp_path / "demo")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_train_skill_cli_reads_recordings(tmp_path):
    for n in range(3):
        write_recording(tmp_path / "recs" / f"demo_{n}", steps=15, seed=n)
    lib = tmp_path / "lib"
    cmd = [sys.executable, "-m", "scfl_nodes", "train-skill", "--demonstrations", str(tmp_path / "recs"),
           "--skill-name", "Close drawer", "--epochs", "3", "--library", str(lib), "--hidden", "16", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    from scfl_nodes.core.skills import SkillLibrary

    manifest = SkillLibrary(lib).manifest("close_drawer", 1)
    assert manifest.obs_dim == 8 and manifest.action_dim == 4
    assert manifest.training["samples"] == 45 and "close the drawer" in manifest.task_descriptions
    # a bad recording among them: one line, exit 2, nothing new in the library
    write_recording(tmp_path / "recs" / "demo_bad", with_commands=False)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "no demonstrator commands" in out.stderr and "Traceback" not in out.stderr
    assert SkillLibrary(lib).versions("close_drawer") == [1]


@pytest.mark.parametrize("mapping, storage", [(TwistCommand(), "sqlite3"), (JointCommand(("j1", "j2", "j3", "j4")), "mcap")])
def test_write_recorded_episode_round_trip(tmp_path, mapping, storage):
    from scfl_nodes.core.training import synthetic_episodes
    from scfl_nodes.core.training.recording import write_recorded_episode

    ep = synthetic_episodes(1, 25, 16, 4, task="close the drawer", seed=3)[0]
    write_recorded_episode(tmp_path / "rec", ep, mapping, storage=storage, namespace="robot1")
    back = read_rosbag_episode(tmp_path / "rec")
    np.testing.assert_array_equal(back.observation, ep.observation)
    np.testing.assert_array_equal(back.base_action, ep.base_action)
    np.testing.assert_allclose(back.expert_action, ep.expert_action, rtol=0, atol=1e-6)
    assert back.task == "close the drawer" and back.length == 25


@pytest.mark.timeout(300)
def test_recorder_node_and_scfl_record_joint_commands(tmp_path):
    """recorder_node in a real graph (joint commands this time), driven by ``scfl record``."""
    import os
    import threading

    from scfl_nodes.nodes.common import apply_dds_environment, ros_subprocess_env
    from scfl_nodes.nodes.testing import RosHarness

    joints = ["j1", "j2", "j3", "j4"]
    with RosHarness(tmp_path / "ros") as ros:
        from scfl_interfaces.msg import BaseAction
        from sensor_msgs.msg import JointState

        ros.start("recorder_node", {"recordings_path": str(tmp_path / "recs"), "command_type": "joints",
                                    "command_topic": "scfl/joint_command", "command_fields": joints,
                                    "record_images": False, "storage": "mcap"}, namespace="robot1")
        base_pub = ros.publisher(BaseAction, "/robot1/scfl/base_action", 50)
        cmd_pub = ros.publisher(JointState, "/robot1/scfl/joint_command", 50)
        ros.wait_for(lambda: base_pub.get_subscription_count() and cmd_pub.get_subscription_count(), 120,
                     "recorder subscriptions")
        stop = threading.Event()
        sent = []

        def publish():
            i = 0
            while not stop.is_set():
                stamp = ros.node.get_clock().now().to_msg()
                cmd = JointState(name=list(reversed(joints)), position=[float(i), 0.5, -0.5, 2.0 * i])
                cmd.header.stamp = stamp
                cmd_pub.publish(cmd)
                base = BaseAction(instruction="close the drawer", action=[0.1] * 4, observation_embedding=[float(i)] * 6,
                                  sequence=i)
                base.header.stamp = stamp
                base_pub.publish(base)
                sent.append(i)
                i += 1
                stop.wait(0.05)

        worker = threading.Thread(target=publish, daemon=True)
        worker.start()
        try:
            env = ros_subprocess_env(domain_id=ros.domain_id)
            apply_dds_environment(env, ros.transports)
            out = subprocess.run([sys.executable, "-m", "scfl_nodes", "record", "--namespace", "robot1",
                                  "--duration", "2"], capture_output=True, text=True, timeout=180, env=env)
        finally:
            stop.set()
            worker.join(5)
    assert out.returncode == 0, out.stderr
    bag = out.stdout.strip().splitlines()[-1].removeprefix("saved ")
    assert os.path.isdir(bag) and bag.startswith(str(tmp_path / "recs"))
    ep = read_rosbag_episode(bag)
    assert 10 <= ep.length <= len(sent) and ep.task == "close the drawer" and ep.obs_dim == 6
    i = ep.observation[:, 0]  # the step index travels in the embedding
    np.testing.assert_allclose(ep.expert_action, np.stack([2.0 * i, -0.5 * np.ones_like(i), 0.5 * np.ones_like(i), i], 1))
    # no recorder in this domain: one line, exit 2
    bad = subprocess.run([sys.executable, "-m", "scfl_nodes", "record", "--namespace", "nobody", "--timeout", "2",
                          "--duration", "1"], capture_output=True, text=True, timeout=120,
                         env=ros_subprocess_env(domain_id=97))
    assert bad.returncode == 2 and "no recorder_node at /nobody/recorder_node" in bad.stderr
    assert "Traceback" not in bad.stderr
