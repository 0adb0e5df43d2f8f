"""federation_bridge_node against a real cloud server: encrypt + sign + upload, aggregate,
download + decrypt + install, hot swap notification; persistent outbox across a cloud outage;
clear start-up failure on bad parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def fleet(tmp_path):
    from scfl_nodes.core.crypto import generate_fleet_keys, generate_signing_key
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage

    keys = tmp_path / "keys"
    fleet_key = generate_fleet_keys("rlwe")
    fleet_key.save(keys / "fleet.key")
    signing = generate_signing_key()
    signing.save(keys / "robot.key")
    lib = SkillLibrary(tmp_path / "library")
    torch.manual_seed(0)
    v1 = SkillPackage.create(SkillModule(16, 4, 8), "close drawer", ["push the drawer closed"], skill_id="close_drawer")
    lib.add(v1)
    # a local fine-tune: v2 = v1 + small change (what local residual training produces)
    local = SkillPackage.load(lib.path("close_drawer", 1))
    with torch.no_grad():
        for p in local.module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    # samples: the count sample-weighted FedAvg needs (8000 of a 10000 cap keeps the quantization
    # error of the pre-scaled delta below 1e-4, the tolerance asserted below)
    lib.add(local.derive(local.module, training={"local": True, "samples": 8000}))
    return {"fleet_key": fleet_key, "signing": signing, "keys": keys, "lib": lib, "tmp": tmp_path}


def _bridge_params(fleet, url, token, **extra):
    return {
        "robot_id": "robot-a", "cloud_url": url, "cloud_token": token,
        "fleet_key_path": str(fleet["keys"] / "fleet.key"), "signing_key_path": str(fleet["keys"] / "robot.key"),
        "outbox_path": str(fleet["tmp"] / "outbox"), "library_path": str(fleet["lib"].root),
        "retry_period_s": 0.3, "poll_period_s": 0.3, "request_timeout_s": 2.0, **extra,
    }


def _flat(module):
    from scfl_nodes.core.skills import skill_state_to_numpy

    return skill_state_to_numpy(module)


def test_bridge_uploads_survives_outage_and_installs_aggregate(fleet, tmp_path, monkeypatch):
    import scfl_cloud.process as cloud_process
    from scfl_cloud.process import CloudServer

    from scfl_nodes.nodes.testing import RosHarness

    port = cloud_process.free_port()
    monkeypatch.setattr(cloud_process, "free_port", lambda: port)  # restart on the same URL
    server = CloudServer(tmp_path / "cloud", extra_args=["--min-participants", "1"]).start()  # a 1-robot round
    admin = server.admin_client()
    admin.put_fleet_context(fleet["fleet_key"].cloud_context())
    token = admin.register_robot("robot-a", fleet["signing"].public_bytes())
    admin.create_skill("close drawer", ["push the drawer closed"], skill_id="close_drawer")
    rnd = admin.open_round("close_drawer", base_version=0, quorum=1, deadline_s=300)
    server.stop()  # the cloud goes down before the robot has anything to send

    from scfl_interfaces.msg import EncryptedDelta, FederationStatus, SkillInstalled

    with RosHarness(tmp_path / "ros") as ros:
        bridge = ros.start("federation_bridge_node", _bridge_params(fleet, server.url, token))
        status = ros.subscribe(FederationStatus, "/scfl/federation_status")
        deltas = ros.subscribe(EncryptedDelta, "/scfl/encrypted_delta")
        installed = ros.subscribe(SkillInstalled, "/scfl/skill_installed")
        update = ros.publisher(SkillInstalled, "/scfl/local_update")
        ros.wait_for(lambda: status, 60, "federation status")
        ros.wait_for(lambda: update.get_subscription_count() > 0, 30, "bridge subscription")
        update.publish(SkillInstalled(skill_id="close_drawer", version=2))
        # cloud down: the update is persisted, diagnostics say WARN, the node keeps running
        ros.wait_for(lambda: list((tmp_path / "outbox" / "waiting").glob("*.json")), 30, "persisted update")
        ros.wait_for(lambda: any(s.level == b"\x01" and "unreachable" in s.message for s in ros.diagnostics()
                                 if "federation_bridge_node" in s.name), 30, "WARN diagnostics while the cloud is down")
        assert bridge.alive()
        ros.wait_for(lambda: not status[-1].cloud_reachable and status[-1].outbox_pending >= 1, 10,
                     "status: cloud unreachable, update pending")

        server.start()  # same port, same database: the round is still open
        ros.wait_for(lambda: deltas, 60, "an encrypted delta")
        ros.wait_for(lambda: installed, 90, "the installed aggregate")
        info = admin.round_status(rnd["round_id"])
        assert info["state"] == "published" and info["contributors"] == ["robot-a"]
        assert deltas[0].round_id == rnd["round_id"] and deltas[0].base_version == 0
        assert len(deltas[0].blob) > 1000 and deltas[0].key_id == fleet["fleet_key"].key_id
        assert list((tmp_path / "outbox" / "sent").glob("*.delta")) and not list((tmp_path / "outbox" / "pending").glob("*"))
        assert installed[0].skill_id == "close_drawer" and installed[0].version == 3
        ros.wait_for(lambda: status[-1].aggregates_installed == 1 and status[-1].cloud_reachable, 10, "status update")
    server.stop()

    lib = fleet["lib"]
    v1, v2, v3 = (_flat(lib.get("close_drawer", v).module) for v in (1, 2, 3))
    manifest = lib.manifest("close_drawer", 3)
    assert manifest.parent_version == 1 and manifest.training["federated_round"] == rnd["round_id"]
    assert manifest.training["cloud_version"] == info["published_version"] >= 1
    # one contributor: FedAvg of its delta is the delta itself (up to the 2^-15 quantisation)
    for k in v1:
        np.testing.assert_allclose(v3[k], v2[k], atol=1e-4)
        assert np.abs(v3[k] - v1[k]).max() > 1e-3
    sent_meta = json.loads(next((tmp_path / "outbox" / "sent").glob("*.json")).read_text())
    assert sent_meta["receipt"]["round_id"] == rnd["round_id"]


def test_bridge_bad_parameters_fail_at_startup(fleet, tmp_path):
    import subprocess
    import sys

    from scfl_nodes.nodes.common import ros_subprocess_env

    cases = [
        ({"cloud_token": ""}, "parameter 'cloud_token' is empty"),
        ({"cloud_token": "x", "fleet_key_path": str(tmp_path / "missing.key")}, "cannot load keys"),
        ({"cloud_token": "x", "retry_period_s": 0.0}, "retry_period_s"),
    ]
    for overrides, expected in cases:
        params = _bridge_params(fleet, "http://127.0.0.1:9", "x")
        params.update(overrides)
        args = [a for k, v in params.items() for a in ("-p", f"{k}:={v if not isinstance(v, str) else repr(v)}")]
        proc = subprocess.run([sys.executable, "-m", "scfl_nodes.nodes.federation_bridge_node", "--ros-args", *args],
                              capture_output=True, text=True, timeout=120, env=ros_subprocess_env(domain_id=99))
        assert proc.returncode == 2, (overrides, proc.stderr)
        err = proc.stderr.strip().splitlines()
        assert "Traceback" not in proc.stderr, proc.stderr
        assert err[-1].startswith("federation_bridge_node: error:") and expected in err[-1], proc.stderr


# --------------------------------------------------------------------------- one code path
def _robot_library(root, seed_local, samples, activation=None):
    """v1: the shared initialisation (same on every robot), v2: this robot's local fine-tune."""
    from scfl_nodes.core.skills import SkillLibrary, SkillModule, SkillPackage

    lib = SkillLibrary(root)
    torch.manual_seed(0)
    lib.add(SkillPackage.create(SkillModule(16, 4, 8), "close drawer", ["push the drawer closed"], skill_id="close_drawer"))
    local = SkillPackage.load(lib.path("close_drawer", 1))
    gen = torch.Generator().manual_seed(seed_local)
    with torch.no_grad():
        for p in local.module.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    training = {"samples": samples, **({"activation": activation} if activation is not None else {})}
    lib.add(local.derive(local.module, training=training))
    return lib


def _run_bridge(tmp, name, url, token, keys, lib, config=None, extra=None):
    """Start one robot's bridge in its own graph; returns (harness, deltas, installed, update publisher)."""
    from scfl_interfaces.msg import EncryptedDelta, SkillInstalled

    from scfl_nodes.nodes.testing import RosHarness

    ros = RosHarness(tmp / f"ros-{name}")
    params = {"robot_id": name, "cloud_url": url, "cloud_token": token, "fleet_key_path": str(keys / "fleet.key"),
              "signing_key_path": str(keys / f"{name}.key"), "outbox_path": str(tmp / f"outbox-{name}"),
              "library_path": str(lib.root), "retry_period_s": 0.3, "poll_period_s": 0.3, "request_timeout_s": 5.0,
              **({"config_file": str(config)} if config else {}), **(extra or {})}
    ros.start("federation_bridge_node", params)
    deltas = ros.subscribe(EncryptedDelta, "/scfl/encrypted_delta")
    installed = ros.subscribe(SkillInstalled, "/scfl/skill_installed")
    update = ros.publisher(SkillInstalled, "/scfl/local_update")
    ros.wait_for(lambda: update.get_subscription_count() > 0, 60, f"{name}'s bridge subscription")
    update.publish(SkillInstalled(skill_id="close_drawer", version=2))
    return ros, deltas, installed


@pytest.fixture()
def cloud_and_keys(tmp_path):
    from scfl_cloud.process import CloudServer
    from scfl_nodes.core.crypto import generate_fleet_keys, generate_signing_key

    keys = tmp_path / "keys"
    fleet_key = generate_fleet_keys("rlwe")
    fleet_key.save(keys / "fleet.key")
    # two robots and 1-robot rounds: below the cloud's default participant floor of 3
    server = CloudServer(tmp_path / "cloud", extra_args=["--min-participants", "1"]).start()
    admin = server.admin_client()
    admin.put_fleet_context(fleet_key.cloud_context())
    robots = {}
    for name in ("robot1", "robot2"):
        signing = generate_signing_key()
        signing.save(keys / f"{name}.key")
        robots[name] = (signing, admin.register_robot(name, signing.public_bytes()))
    yield server, admin, fleet_key, keys, robots
    server.stop()


def test_fleet_simulation_and_ros_robots_install_the_same_aggregate(cloud_and_keys, tmp_path):
    """Identical deltas through two ROS robots (bridges in their own graphs) and through the fleet
    simulation's path: the same FederationClient, the same cloud, the same installed weights."""
    from scfl_nodes.core.config import load_config
    from scfl_nodes.core.federation import strategy_from_config
    from scfl_nodes.core.federation.codecs import EncryptedCodec
    from scfl_nodes.core.fleet.federation import FleetFederation

    server, admin, fleet_key, keys, robots = cloud_and_keys
    samples = {"robot1": 9000, "robot2": 1000}  # a data-rich and a data-poor robot
    libs = {name: _robot_library(tmp_path / f"lib-{name}", seed_local=i + 1, samples=samples[name])
            for i, name in enumerate(robots)}
    admin.create_skill("close drawer", ["push the drawer closed"], skill_id="close_drawer")
    rnd = admin.open_round("close_drawer", base_version=0, quorum=2, deadline_s=300)
    harnesses = []
    try:
        for name, (_, token) in robots.items():
            harnesses.append(_run_bridge(tmp_path, name, server.url, token, keys, libs[name]))
        for ros, deltas, installed in harnesses:
            ros.wait_for(lambda: installed, 120, "the installed aggregate")
            assert installed[0].version == 3 and deltas[0].round_id == rnd["round_id"]
    finally:
        for ros, *_ in harnesses:
            ros.close()
    ros_v3 = {name: _flat(lib.get("close_drawer", 3).module) for name, lib in libs.items()}
    v1 = _flat(libs["robot1"].get("close_drawer", 1).module)
    v2 = {name: _flat(lib.get("close_drawer", 2).module) for name, lib in libs.items()}
    assert sorted(admin.round_status(rnd["round_id"])["contributors"]) == ["robot1", "robot2"]

    # the fleet simulation's path, same deltas, same cloud, same configured strategy
    strategy = strategy_from_config(load_config())
    assert strategy.sample_weighted  # the default (docs/fleet.md: why)
    codecs = {r: EncryptedCodec(fleet_key, robots[r][0], num_clients=8) for r in robots}
    federation = FleetFederation(admin, strategy, codecs, {r: robots[r][1] for r in robots}, run_tag="fleet")
    fleet = federation.round(0, {r: {"close_drawer": dict(parent=v1, new=v2[r], num_samples=samples[r])} for r in robots})
    federation.close()
    bound = 2 * 2 * (2.0**-16) * 10_000 / sum(samples.values()) + 1e-6
    for k in v1:
        np.testing.assert_array_equal(ros_v3["robot1"][k], ros_v3["robot2"][k])  # both robots: one aggregate
        np.testing.assert_allclose(fleet["robot1"]["close_drawer"][k], ros_v3["robot1"][k], rtol=0, atol=1e-7)
        weighted = v1[k] + sum(samples[r] * np.clip(v2[r][k] - v1[k], -1, 1) for r in robots) / sum(samples.values())
        np.testing.assert_allclose(ros_v3["robot1"][k], weighted, rtol=0, atol=bound)
    # and it is the weighted mean, not the uniform one (the deltas differ enough to tell)
    uniform = {k: v1[k] + sum(v2[r][k] - v1[k] for r in robots) / 2 for k in v1}
    assert max(float(np.max(np.abs(ros_v3["robot1"][k] - uniform[k]))) for k in v1) > 10 * bound
    manifest = libs["robot1"].manifest("close_drawer", 3)
    assert manifest.training["strategy"] == "fedavg" and manifest.training["contributors"] == 2


def _uploads(tmp_path, name, server, token, keys, lib, config, count, extra=None):
    """The first ``count`` EncryptedDelta messages a bridge with ``config`` publishes."""
    ros, deltas, _ = _run_bridge(tmp_path, name, server.url, token, keys, lib, config=config, extra=extra)
    try:
        ros.wait_for(lambda: len(deltas) >= count, 90, f"{count} encrypted delta(s) ({config.name})")
        return list(deltas)
    finally:
        ros.close()


def test_strategy_and_secure_masks_change_what_robots_upload(cloud_and_keys, tmp_path):
    """federation.strategy: eda and federation.secure_masks: true reach the wire."""
    import base64

    from scfl_nodes.core.crypto import EncryptedDelta, IncompleteMaskError
    from scfl_nodes.core.federation import MaskKey

    server, admin, fleet_key, keys, robots = cloud_and_keys
    token = robots["robot1"][1]
    for skill in ("close_drawer", "close_drawer:l0.e0", "close_drawer:l0.e1"):
        admin.create_skill(skill, [], skill_id=skill)
    mask_key, peer = MaskKey.generate(), MaskKey.generate()
    mask_key.save(keys / "mask.key")
    (tmp_path / "peers.json").write_text(json.dumps({"robot9": base64.b64encode(peer.public_bytes()).decode()}))
    cases = {  # label: (config, rounds to open (skill, quorum), uploads expected, extra parameters)
        # fedavg / eda pin secure_masks: false (the code default is true since SecAgg; masks are the third case)
        "fedavg": ("federation:\n  strategy: fedavg\n  secure_masks: false\n", [("close_drawer", 1)], 1, None),
        "eda": ("federation:\n  strategy: eda\n  secure_masks: false\n",
                [("close_drawer:l0.e0", 1), ("close_drawer:l0.e1", 1)], 2, None),
        "masks": ("federation:\n  secure_masks: true\n", [("close_drawer", 2)], 1,
                  {"mask_key_path": str(keys / "mask.key"), "mask_peers_path": str(tmp_path / "peers.json")}),
    }
    headers, blobs = {}, {}
    for label, (text, rounds, count, extra) in cases.items():
        config = tmp_path / f"{label}.yaml"
        config.write_text(text)
        lib = _robot_library(tmp_path / f"lib-{label}", seed_local=3, samples=4000, activation=[3.0, 1.0])
        for skill, quorum in rounds:  # each case's library starts from the shared initialisation (cloud v0)
            admin.open_round(skill, base_version=0, quorum=quorum, deadline_s=300)
        extra = {**(extra or {}), "outbox_path": str(tmp_path / f"outbox-{label}")}
        msgs = _uploads(tmp_path, "robot1", server, token, keys, lib, config, count, extra)
        headers[label] = {m.skill_id: EncryptedDelta.from_bytes(bytes(m.blob)).header for m in msgs}
        blobs[label] = {m.skill_id: bytes(m.blob) for m in msgs}
    fed = headers["fedavg"]["close_drawer"]
    # sample-weighted FedAvg: the weight travels inside the encrypted sum, the header weight stays 1
    assert "__weight__" in [n for n, _ in fed["shapes"]] and fed["weight"] == 1.0 and fed["mask_cohort"] is None
    eda = headers["eda"]
    assert set(eda) == {"close_drawer:l0.e0", "close_drawer:l0.e1"}  # one upload per activated expert slot
    for slot in eda.values():
        assert "__weight__" not in [n for n, _ in slot["shapes"]]
    u = np.array([3.0, 1.0]) / np.linalg.norm([3.0, 1.0])
    assert eda["close_drawer:l0.e0"]["weight"] == pytest.approx(u[0]) and eda["close_drawer:l0.e1"]["weight"] == pytest.approx(u[1])
    masked = headers["masks"]["close_drawer"]
    assert masked["mask_cohort"] == ["robot1", "robot9"]
    # a masked upload alone does not decrypt: the cohort's masks must cancel first
    ctx = fleet_key.cloud_context()
    with pytest.raises(IncompleteMaskError):
        fleet_key.decrypt_aggregate(ctx.add(None, EncryptedDelta.from_bytes(blobs["masks"]["close_drawer"])))
