"""The robot learns in ROS (issue 13): record -> train (TrainSkill action) -> federate -> install.

Two robot graphs in namespaces robot1 and robot2 (sim camera with the scripted expert as
teleoperator, vla_node, skill_node, recorder_node, trainer_node, federation_bridge_node) and a
real cloud server. Each robot records a demonstration from the running graph, trains through
the action (feedback arrives), the bridges upload encrypted deltas that the cloud sums, both
robots install the same aggregate, skill_node switches to it with consecutive cycle numbers,
and the installed weights equal the plaintext sample-weighted average (sum n_k d_k / sum n_k)
of the two local updates within quantisation. A third, cancelled run installs nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.timeout(900)

ROBOTS = ("robot1", "robot2")
SKILL = "close_drawer"
# enough optimiser steps that validation improves on the initial skill for certain: training keeps the
# best-validation weights, and 3 epochs on one short recording sometimes left the initial ones
TRAIN_EPOCHS = 25
#: steps each robot records: different counts, so a sample-weighted average differs from the mean
RECORD_STEPS = {"robot1": 12, "robot2": 24}


CLIP = 1.0  # crypto.clip (default)
SAMPLE_CAP = 100  # federation.sample_cap of the robots: w_k = n_k / 100 (> the recorded steps)


def sample_weighted_average(deltas: list[dict], samples: list[int]) -> dict:
    """Plaintext FedAvg as McMahan et al. define it: sum_k n_k delta_k / sum_k n_k."""
    return {k: sum(n * d[k] for n, d in zip(samples, deltas)) / sum(samples) for k in deltas[0]}


@pytest.fixture()
def world(tmp_path):
    from scfl_cloud.process import CloudServer

    from scfl_nodes.core.crypto import generate_fleet_keys, generate_signing_key
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage
    from scfl_nodes.core.vla import load_base_policy

    fleet_key = generate_fleet_keys("rlwe")
    # a two-robot fleet: below the cloud's default participant floor of 3
    with CloudServer(tmp_path / "cloud", extra_args=["--min-participants", "1"]) as server:  # stopped even if set-up fails
        admin = server.admin_client()
        admin.put_fleet_context(fleet_key.cloud_context())
        admin.create_skill("close drawer", ["push the drawer closed"], skill_id=SKILL)
        emb = load_base_policy("scfl-metaworld-base").embedding_dim
        torch.manual_seed(0)
        shared = SkillPackage.create(SkillModule(emb, 4, 16), "close drawer", ["push the drawer closed"], skill_id=SKILL)
        # training defaults of the robots: early stopping off, so the cancelled run is still running
        config = tmp_path / "scfl.yaml"
        config.write_text("training:\n  epochs: 3\n  lr: 0.01\n  patience: 1000000\n  seed: 0\n"
                          f"federation:\n  strategy: fedavg\n  secure_masks: false\n  weighting: samples\n"
                          f"  sample_cap: {SAMPLE_CAP}\n")  # masks: test_secagg / test_fleet_federation
        robots = {}
        for n, name in enumerate(ROBOTS):
            root = tmp_path / name
            fleet_key.save(root / "keys" / "fleet.key")
            signing = generate_signing_key()
            signing.save(root / "keys" / "robot.key")
            token = admin.register_robot(name, signing.public_bytes())
            lib = SkillLibrary(root / "library")
            lib.add(shared)  # the fleet's shared initialisation (cloud version 0)
            robots[name] = {"root": root, "lib": lib, "token": token, "seed": n + 1}
        rnd = admin.open_round(SKILL, base_version=0, quorum=len(ROBOTS), deadline_s=900)
        yield {"server": server, "admin": admin, "fleet_key": fleet_key, "robots": robots, "round": rnd,
               "config": config, "tmp": tmp_path}


def _start_robot(ros, name, robot, world):
    root, lib = robot["root"], str(robot["lib"].root)
    ns = dict(namespace=name)
    ros.start("camera_node", {"camera_type": "sim", "width": 64, "height": 64, "fps": 10.0,
                              "sim_seed": robot["seed"]}, **ns)
    ros.start("vla_node", {}, **ns)
    ros.start("skill_node", {"library_path": lib, "control_rate_hz": 20.0, "publish_markers": False}, **ns)
    ros.start("recorder_node", {"recordings_path": str(root / "recordings")}, **ns)
    ros.start("trainer_node", {"library_path": lib, "config_file": str(world["config"]), "min_samples": 5}, **ns)
    ros.start("federation_bridge_node", {
        "robot_id": name, "cloud_url": world["server"].url, "cloud_token": robot["token"],
        "fleet_key_path": str(root / "keys" / "fleet.key"), "signing_key_path": str(root / "keys" / "robot.key"),
        "outbox_path": str(root / "outbox"), "library_path": lib, "config_file": str(world["config"]),
        "retry_period_s": 0.3, "poll_period_s": 0.3, "request_timeout_s": 5.0}, **ns)


def _flat(package):
    from scfl_nodes.core.skills import skill_state_to_numpy

    return skill_state_to_numpy(package.module)


def test_two_robots_record_train_federate_install(world):
    from action_msgs.msg import GoalStatus
    from scfl_interfaces.action import TrainSkill
    from scfl_interfaces.msg import BaseAction, EncryptedDelta, ResidualAction, SkillInstalled, SkillWeights
    from std_srvs.srv import Trigger

    from scfl_nodes.core.crypto import EncryptedDelta as WireDelta
    from scfl_nodes.nodes.common import latched_qos
    from scfl_nodes.nodes.testing import RosHarness

    robots = world["robots"]
    with RosHarness(world["tmp"] / "ros") as ros:
        topics = {}
        for name, robot in robots.items():
            _start_robot(ros, name, robot, world)
            topics[name] = {
                "base": ros.subscribe(BaseAction, f"/{name}/scfl/base_action", 100),
                "actions": ros.subscribe(ResidualAction, f"/{name}/scfl/action", 5000),
                "local": ros.subscribe(SkillInstalled, f"/{name}/scfl/local_update"),
                "installed": ros.subscribe(SkillInstalled, f"/{name}/scfl/skill_installed"),
                "deltas": ros.subscribe(EncryptedDelta, f"/{name}/scfl/encrypted_delta"),
            }
            weights = ros.publisher(SkillWeights, f"/{name}/scfl/skill_weights", latched_qos())
            weights.publish(SkillWeights(task_description="push the drawer closed", skill_ids=[SKILL],
                                         skill_versions=[0], weights=[1.0], source="local"))
        for name in robots:  # the whole graph runs: camera -> vla -> skill_node with the shared skill v1
            ros.wait_for(lambda: [a for a in topics[name]["actions"] if list(a.skill_versions) == [1]], 300,
                         f"{name}: composed actions with {SKILL} v1")

        # --- record one demonstration per robot from the running graph
        bags = {}
        for name in robots:
            resp = ros.call(Trigger, f"/{name}/recorder_node/start", Trigger.Request(), timeout=120)
            assert resp.success, resp.message
            seen = len(topics[name]["base"])
            ros.wait_for(lambda: len(topics[name]["base"]) >= seen + RECORD_STEPS[name] + 2, 120,
                         f"{name}: base actions while recording")
            stop = ros.call(Trigger, f"/{name}/recorder_node/stop", Trigger.Request(), timeout=60)
            assert stop.success and stop.message == resp.message, stop.message
            bags[name] = stop.message

        # --- train through the action on both robots
        results, feedback = {}, {name: [] for name in robots}
        for name in robots:
            goal = TrainSkill.Goal(skill=SKILL, task_description="push the drawer closed", recordings=[bags[name]],
                                   epochs=TRAIN_EPOCHS)
            handle = ros.send_goal(TrainSkill, f"/{name}/trainer_node/train_skill", goal,
                                   feedback=lambda fb, n=name: feedback[n].append(fb.feedback), timeout=120)
            assert handle.accepted
            res = ros.goal_result(handle, 300)
            assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.message
            results[name] = res.result
        for name, res in results.items():
            assert res.success and res.skill_id == SKILL and res.version == 2 and res.parent_version == 1
            assert res.samples >= RECORD_STEPS[name] and np.isfinite(res.validation_loss)
            ros.wait_for(lambda: feedback[name] and feedback[name][-1].epoch == TRAIN_EPOCHS, 30,
                         f"{name}: training feedback")
            assert feedback[name][0].epoch == 1 and feedback[name][-1].epoch == TRAIN_EPOCHS == feedback[name][-1].epochs
            assert all(fb.samples > 0 and np.isfinite(fb.loss) for fb in feedback[name])
            ros.wait_for(lambda: topics[name]["local"], 30, f"{name}: local update announced")
            assert (topics[name]["local"][0].skill_id, topics[name]["local"][0].version) == (SKILL, 2)

        # --- both uploads encrypted on the wire, summed by the cloud, the same aggregate installed
        for name in robots:
            ros.wait_for(lambda: topics[name]["installed"], 300, f"{name}: the installed aggregate")
        info = world["admin"].round_status(world["round"]["round_id"])
        assert info["state"] == "published" and sorted(info["contributors"]) == sorted(robots)
        versions = {name: topics[name]["installed"][0].version for name in robots}
        assert set(versions.values()) == {3}, versions

        # skill_node switched v1 -> v3 between two consecutive cycles
        for name in robots:
            actions = topics[name]["actions"]
            ros.wait_for(lambda: [a for a in actions if list(a.skill_versions) == [3]], 60, f"{name}: actions with v3")
            seq = list(actions)
            first = next(i for i, a in enumerate(seq) if list(a.skill_versions) == [3])
            assert list(seq[first - 1].skill_versions) == [1] and seq[first].cycle == seq[first - 1].cycle + 1

        # --- a third run, cancelled mid-training, installs nothing
        lib1 = robots["robot1"]["lib"]
        before = lib1.versions(SKILL)
        started = []
        goal = TrainSkill.Goal(skill=SKILL, recordings=[bags["robot1"]], epochs=4_000_000_000)
        handle = ros.send_goal(TrainSkill, "/robot1/trainer_node/train_skill", goal,
                               feedback=lambda fb: started.append(fb.feedback), timeout=60)
        assert handle.accepted
        ros.wait_for(lambda: started, 120, "feedback of the run to cancel")
        ros.cancel_goal(handle)
        res = ros.goal_result(handle, 120)
        assert res.status == GoalStatus.STATUS_CANCELED and not res.result.success and res.result.version == 0
        assert "cancelled; nothing installed" in res.result.message
        assert lib1.versions(SKILL) == before == [1, 2, 3]
        assert len(topics["robot1"]["local"]) == 1

        # --- a bad recording: aborted with the reason, nothing installed
        empty = world["tmp"] / "not_a_bag"
        empty.mkdir()
        handle = ros.send_goal(TrainSkill, "/robot2/trainer_node/train_skill",
                               TrainSkill.Goal(skill=SKILL, recordings=[str(empty)], epochs=3), timeout=60)
        res = ros.goal_result(handle, 120)
        assert res.status == GoalStatus.STATUS_ABORTED and "no demonstration episodes" in res.result.message
        assert robots["robot2"]["lib"].versions(SKILL) == [1, 2, 3]
        deltas_on_wire = {name: topics[name]["deltas"][0] for name in robots}

    # --- the installed weights are the plaintext sample-weighted average of the two local updates
    from scfl_nodes.core.federation.strategy import WEIGHT_KEY

    fleet_key = world["fleet_key"]
    local_deltas, weights = [], []
    for name in robots:
        lib = robots[name]["lib"]
        v1, v2 = _flat(lib.get(SKILL, 1)), _flat(lib.get(SKILL, 2))
        delta = {k: v2[k] - v1[k] for k in v1}
        assert max(np.abs(d).max() for d in delta.values()) > 1e-3  # training changed the skill
        delta = {k: np.clip(v, -CLIP, CLIP) for k, v in delta.items()}  # crypto.clip bounds every upload
        local_deltas.append(delta)
        n = lib.manifest(SKILL, 2).training["samples"]
        assert n == results[name].samples < SAMPLE_CAP
        # on the wire: this delta pre-scaled by w = n / sample_cap, and w itself, encrypted with the fleet key
        wire = WireDelta.from_bytes(bytes(deltas_on_wire[name].blob))
        decrypted = fleet_key.decrypt_aggregate(fleet_key.cloud_context().add(None, wire))
        w = float(decrypted[WEIGHT_KEY].reshape(-1)[0])
        assert abs(w - n / SAMPLE_CAP) < 1e-4
        weights.append(w)
        for k in delta:
            np.testing.assert_allclose(decrypted[k].reshape(delta[k].shape), w * delta[k], atol=1e-4)
    samples = [results[name].samples for name in robots]
    weighted = sample_weighted_average(local_deltas, samples)
    uniform = sample_weighted_average(local_deltas, [1] * len(samples))
    # quantisation: every value of every upload is rounded to 1/scale, then divided by sum_k w_k
    atol = 4 * len(robots) / (fleet_key.params.scale * sum(weights))
    assert max(np.abs(weighted[k] - uniform[k]).max() for k in weighted) > 3 * atol  # the weighting is visible
    installed = [_flat(robots[name]["lib"].get(SKILL, 3)) for name in robots]
    base = _flat(robots["robot1"]["lib"].get(SKILL, 1))
    for k in base:
        np.testing.assert_array_equal(installed[0][k], installed[1][k])  # both robots: the same aggregate
        np.testing.assert_allclose(installed[0][k], base[k] + weighted[k], atol=atol)
