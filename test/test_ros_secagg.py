"""Secure aggregation by default on ROS: three federation_bridge_node robots (each in its own
rclpy graph) with the default config and no mask parameters, a real cloud server with its
default settings (privacy floor 3, secure_aggregation: auto), real RLWE and SecAgg crypto.
The bridges see the secure round in the round info, run the key stages through the cloud,
upload masked deltas, reveal their unmask shares, and install the sample-weighted mean."""

from __future__ import annotations

import numpy as np
import pytest

from test_ros_federation import _flat, _robot_library, _run_bridge

pytestmark = pytest.mark.timeout(300)
ROBOTS = ("robot1", "robot2", "robot3")


def test_three_ros_robots_federate_through_secure_aggregation_by_default(tmp_path):
    from scfl_cloud.process import CloudServer
    from scfl_nodes.core.crypto import EncryptedDelta, generate_fleet_keys, generate_signing_key

    keys = tmp_path / "keys"
    fleet_key = generate_fleet_keys("rlwe")
    fleet_key.save(keys / "fleet.key")
    server = CloudServer(tmp_path / "cloud").start()
    harnesses = []
    try:
        admin = server.admin_client()
        admin.put_fleet_context(fleet_key.cloud_context())
        tokens = {}
        for name in ROBOTS:
            signing = generate_signing_key()
            signing.save(keys / f"{name}.key")
            tokens[name] = admin.register_robot(name, signing.public_bytes())
        samples = {"robot1": 9000, "robot2": 1000, "robot3": 5000}
        libs = {name: _robot_library(tmp_path / f"lib-{name}", seed_local=i + 1, samples=samples[name])
                for i, name in enumerate(ROBOTS)}
        admin.create_skill("close drawer", ["push the drawer closed"], skill_id="close_drawer")
        rnd = admin.open_round("close_drawer", base_version=0, quorum=3, deadline_s=300)
        assert rnd["secure_aggregation"]  # nobody asked for it: the default for >= 3 robots
        for name in ROBOTS:
            harnesses.append(_run_bridge(tmp_path, name, server.url, tokens[name], keys, libs[name]))
        for ros, deltas, installed in harnesses:
            ros.wait_for(lambda: installed, 180, "the installed aggregate")
            assert installed[0].version == 3
            header = EncryptedDelta.from_bytes(bytes(deltas[0].blob)).header
            assert header["mask_scheme"] == "secagg" and header["mask_cohort"] == list(ROBOTS)
        state = admin.secagg(admin.admin_token, rnd["round_id"], "GET")
        assert state["stage"] == "done" and state["survivors"] == list(ROBOTS)
    finally:
        for ros, *_ in harnesses:
            ros.close()
        server.stop()
    v1 = _flat(libs["robot1"].get("close_drawer", 1).module)
    v2 = {name: _flat(lib.get("close_drawer", 2).module) for name, lib in libs.items()}
    v3 = {name: _flat(lib.get("close_drawer", 3).module) for name, lib in libs.items()}
    bound = 2 * 3 * (2.0**-16) * 10_000 / sum(samples.values()) + 1e-6
    for k in v1:
        weighted = v1[k] + sum(samples[r] * np.clip(v2[r][k] - v1[k], -1, 1) for r in ROBOTS) / sum(samples.values())
        np.testing.assert_allclose(v3["robot1"][k], weighted, rtol=0, atol=bound)
        np.testing.assert_array_equal(v3["robot1"][k], v3["robot3"][k])
    assert max(float(np.abs(v3["robot1"][k] - v1[k]).max()) for k in v1) > 1e-3
