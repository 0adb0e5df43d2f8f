"""The robot-side data path as a real multi-process ROS graph.

bag_player replays the bundled Meta-World bag -> camera + state topics -> vla_node (frozen
base policy) -> skill_node, with a SkillRequest service call to router_node. Every final action
must equal base + sum_i w_i * skill_i(obs_embedding, base) recomputed here with the core
(same skill packages, same base policy), and every base action must be the base policy's
output on a recorded frame. Then a new skill version is hot-swapped without a gap in cycles.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sched_util import thread_scheduling

pytestmark = pytest.mark.timeout(300)


BAG = Path(__file__).parent / "data" / "demo_bag"


def _make_library(root, obs_dim, action_dim):
    from scfl_nodes.core.sim import TASK_INSTRUCTIONS
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage

    lib = SkillLibrary(root)
    torch.manual_seed(1)
    for task, instruction in TASK_INSTRUCTIONS.items():
        name = task.removesuffix("-v3").replace("-", " ")
        lib.add(SkillPackage.create(SkillModule(obs_dim, action_dim, 32), name, [instruction]))
    return lib


def test_bag_to_final_action_equals_core_composition(tmp_path):
    from scfl_nodes.core import rosbag_io
    from scfl_nodes.core.skills import SkillPackage
    from scfl_nodes.core.vla import load_base_policy
    from scfl_nodes.nodes.testing import RosHarness

    policy = load_base_policy("scfl-metaworld-base")
    lib = _make_library(tmp_path / "library", policy.embedding_dim, 4)
    instruction = next(rosbag_io.decode(m).data for m in rosbag_io.read_bag(BAG, ["/scfl/instruction"]))
    states = np.stack([np.asarray(rosbag_io.decode(m).state, np.float32)
                       for m in rosbag_io.read_bag(BAG, ["/scfl/observation_state"])])
    expected_base, expected_emb = policy.act(states, [instruction] * len(states))

    with RosHarness(tmp_path / "ros") as ros:
        from scfl_interfaces.msg import BaseAction, ResidualAction, SkillInstalled
        from scfl_interfaces.srv import SkillRequest

        ros.start("router_node", {"library_path": str(lib.root)})
        skill_node = ros.start("skill_node", {"library_path": str(lib.root), "control_rate_hz": 50.0})
        ros.start("vla_node", {"model": "scfl-metaworld-base"})  # the state-based base: the bag records states
        from visualization_msgs.msg import MarkerArray

        bases = ros.subscribe(BaseAction, "/scfl/base_action", 100)
        markers = ros.subscribe(MarkerArray, "/scfl/markers")
        actions = ros.subscribe(ResidualAction, "/scfl/action", 1000)
        resp = ros.call(SkillRequest, "/router_node/request_skills",
                        SkillRequest.Request(task_description=instruction, max_skills=2), timeout=120)
        assert resp.success, resp.message
        assert len(resp.skill_ids) == 2 and resp.skill_ids[0] == "drawer_close" and resp.source == "local"
        assert abs(sum(resp.weights) - 1.0) < 1e-5 and resp.inference_time_ms > 0

        player = ros.start("bag_player", {"bag_path": str(BAG), "wait_for_subscribers": [
            "/camera/camera/color/image_raw", "/scfl/observation_state"], "start_delay_s": 1.0})
        ros.wait_for(lambda: player.proc.poll() is not None, 90, "the end of the replay")
        assert player.proc.returncode == 0, ros.logs()
        ros.wait_for(lambda: len(bases) >= 20, 30, "base actions")
        composed = lambda: [a for a in actions if list(a.skill_ids) == list(resp.skill_ids)]  # noqa: E731
        ros.wait_for(lambda: len(composed()) >= 20, 30, "composed actions")

        # --- hot swap: a new version of the top skill, announced like the federation bridge does
        top = resp.skill_ids[0]
        new = lib.get(top)
        with torch.no_grad():
            for p in new.module.parameters():
                p.mul_(-1.0)
        path = lib.add(new.derive(new.module))
        swap_pub = ros.publisher(SkillInstalled, "/scfl/skill_installed")
        ros.wait_for(lambda: swap_pub.get_subscription_count() > 0, 30, "skill_node subscription")
        swap_pub.publish(SkillInstalled(skill_id=top, version=2, package_path=str(path)))
        ros.wait_for(lambda: any(a.skill_versions[0] == 2 for a in composed()), 30, "the hot-swapped version")
        ros.wait_for(lambda: sum(a.skill_versions[0] == 2 for a in composed()) >= 10, 30, "cycles with v2")
        # the control loop runs SCHED_FIFO (config/nodes.yaml thread_priority 49); skill loading,
        # background work, runs at normal priority on its own thread
        # (threads spawned by the FIFO main thread inherit FIFO: after a load, the normal ones are the loader and what it started)
        pid = skill_node.proc.pid
        policies = [policy for policy, _ in thread_scheduling(pid).values()]
        if os.sched_getscheduler(pid) == os.SCHED_FIFO:  # else no right to real-time scheduling here
            assert os.sched_getparam(pid).sched_priority == 49
            assert policies.count(os.SCHED_OTHER) >= 1 and policies.count(os.SCHED_FIFO) >= 2, policies
        # rviz: the active skills and their weights as markers
        text = lambda: [m.text for arr in markers for m in arr.markers if m.ns == "scfl_skills"]  # noqa: E731
        ros.wait_for(lambda: any(f"{top} v2" in t for t in text()), 10, "skill markers")
        assert any(m.ns == "scfl_skill_weights" for m in markers[-1].markers)

    # vla_node: every base action is the frozen policy's output on one recorded frame, in order
    frame_of = []
    for b in bases:
        err = np.abs(expected_base - np.asarray(b.action)).max(axis=1)
        i = int(err.argmin())
        assert err[i] < 1e-5, "base action does not match any recorded frame"
        np.testing.assert_allclose(b.observation_embedding, expected_emb[i], atol=1e-5)
        assert b.age_ms >= 0 and b.instruction == instruction
        frame_of.append(i)
    assert frame_of == sorted(frame_of) and len(set(frame_of)) >= 20

    # skill_node: final = base + sum_i w_i s_i(emb, base), recomputed with the core skill modules
    by_seq = {b.sequence: b for b in bases}
    modules = {(sid, v): SkillPackage.load(lib.path(sid, v)).module.eval()
               for sid in resp.skill_ids for v in (1, 2) if lib.path(sid, v).exists()}
    checked = 0
    cycles = [a.cycle for a in actions]
    for a in actions:
        if list(a.skill_ids) != list(resp.skill_ids) or a.base_sequence not in by_seq:
            continue
        b = by_seq[a.base_sequence]
        base = torch.tensor(b.action).unsqueeze(0)
        emb = torch.tensor(b.observation_embedding).unsqueeze(0)
        expected = base.clone()
        with torch.no_grad():
            for sid, v, w in zip(a.skill_ids, a.skill_versions, resp.weights):
                expected += w * modules[(sid, v)](emb, base)
        np.testing.assert_allclose(a.base_action, b.action, atol=0)
        np.testing.assert_allclose(a.action, expected[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(np.asarray(a.action) - np.asarray(a.base_action), a.residual, atol=1e-6)
        checked += 1
    assert checked >= 30
    # the hot swap did not drop a cycle: consecutive cycle numbers throughout
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles)))
