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
    server = CloudServer(tmp_path / "cloud").start()
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
