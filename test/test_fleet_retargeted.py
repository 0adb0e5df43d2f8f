"""Retargeted demonstrations in the fleet loop: real simulator, real Pinocchio IK, real base policy.

* human-hand demos derived from the expert become valid episodes with the base's embedding;
* the object-centric relation survives: the robot's end effector keeps the hand's pose in
  the object frame (to IK tolerance), although the human scene frame is elsewhere;
* the simulated hand follows the retargeted path and the task still gets done;
* a tiny fleet with one retargeted robot runs and reports that robot class on its own.
"""

import os

import numpy as np
import pytest

from scfl_nodes.core.config import FleetConfig
from scfl_nodes.core.fleet import FleetRun
from scfl_nodes.core.fleet.retargeted_demos import PANDA_BASE_IN_WORLD, retargeted_episodes
from scfl_nodes.core.fleet.robots import build_fleet, robot_class
from scfl_nodes.core.fleet.results import format_table
from scfl_nodes.core.training.demonstrations import validate_episode
from scfl_nodes.core.vla import load_base_policy

BASE = os.environ.get("SCFL_FLEET_TEST_BASE", "scfl-metaworld-base")
TASK = "drawer-close-v3"


@pytest.fixture(scope="module")
def episodes():
    base = load_base_policy(BASE)
    return base, retargeted_episodes(TASK, 2, seed=5, base_policy=base, max_steps=150)


@pytest.mark.timeout(300)
def test_retargeted_demos_are_valid_episodes_with_the_base_embedding(episodes):
    base, eps = episodes
    assert len(eps) == 2
    for ep in eps:
        e = validate_episode(ep, action_dim=4)
        assert e.length > 10
        assert e.obs_dim == np.asarray(eps[0]["observation"]).shape[1]
        # the base ran during the replay: its actions are recorded, not zeros
        assert np.abs(ep["base_action"]).max() > 0
        assert ep["retarget"]["ik"].all_reachable
    # drawer-close is easy: the retargeted path still closes the drawer
    assert any(bool(ep["success"]) for ep in eps)


@pytest.mark.timeout(300)
def test_retargeting_keeps_the_hand_in_the_object_frame(episodes):
    _, eps = episodes
    for ep in eps:
        rt = ep["retarget"]
        demo, ik = rt["demo"], rt["ik"]
        hand_in_obj = np.linalg.inv(demo.object_pose[0]) @ demo.hand_poses
        ee_in_obj = np.linalg.inv(rt["object_pose_robot"]) @ ik.achieved
        assert np.abs(ee_in_obj[:, :3, 3] - hand_in_obj[:, :3, 3]).max() < 2e-3  # m (IK tolerance 1 mm)
        assert np.abs(ee_in_obj[:, :3, :3] - hand_in_obj[:, :3, :3]).max() < 0.05
        # the human scene is not the robot's: the relation is not trivially an identity
        assert np.abs(demo.hand_poses[:, :3, 3] - (PANDA_BASE_IN_WORLD @ ik.achieved)[:, :3, 3]).max() > 0.05
        # the simulated hand followed the retargeted path (it lags the mocap target by a few cm)
        path = (PANDA_BASE_IN_WORLD @ ik.achieved)[:, :3, 3]
        hand = np.asarray(ep["state"])[:, :3]
        n = min(len(path), len(hand))
        assert np.median(np.linalg.norm(hand[:n] - path[:n], axis=1)) < 0.05
        assert np.linalg.norm(hand[:5] - path[:5], axis=1).max() < 0.02  # free motion at the start: close


def test_fleet_config_places_retargeted_robots():
    cfg = FleetConfig(tasks=(TASK,), robots_per_task=3, few_demo_robots_per_task=1, retargeted_demo_robots=1)
    classes = [robot_class(r) for r in build_fleet(cfg)]
    assert classes == ["retargeted", "rich", "few"]
    assert [robot_class(r) for r in build_fleet(FleetConfig(tasks=(TASK,), robots_per_task=2))] == ["rich", "rich"]
    from scfl_nodes.core.config import ConfigError

    with pytest.raises(ConfigError, match="retargeted_demo_robots"):
        FleetConfig(tasks=(TASK,), robots_per_task=2, few_demo_robots_per_task=1, retargeted_demo_robots=2)


@pytest.mark.timeout(600)
def test_tiny_fleet_with_a_retargeted_robot_reports_its_class(tmp_path):
    cfg = FleetConfig(tasks=(TASK,), robots_per_task=2, few_demo_robots_per_task=1, retargeted_demo_robots=1,
                      demos_per_robot=2, few_demos=1, rounds=1, local_epochs=2, eval_episodes=2, seeds=1,
                      max_path_length=100, num_experts=2, top_k=1, skill_hidden=16, workers=1,
                      methods=("local", "fedavg_plain"), base_policy=BASE)
    res = FleetRun(cfg, tmp_path, progress=False, log=lambda s: None).run()
    for m in ("local", "fedavg_plain"):
        entry = res["methods"][m]
        assert entry["retargeted_success"]["n"] == 1 and 0.0 <= entry["retargeted_success"]["mean"] <= 1.0
        assert entry["few_demo_success"]["n"] == 1
        assert entry["rich_demo_success"]["n"] == 0  # the only data-rich robot is the retargeted one
    assert [r["retargeted"] for r in res["meta"]["robots"]] == [True, False]
    # how good each class's demonstrations were: the expert's are successful by construction
    demo_success = res["meta"]["demo_success"]
    assert set(demo_success) == {"retargeted", "few"} and demo_success["few"]["mean"] == 1.0
    assert 0.0 <= demo_success["retargeted"]["mean"] <= 1.0
    assert "retargeted-demo robots" in format_table(res)
