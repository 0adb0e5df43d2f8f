"""camera_node on the real RealSense path without hardware: a .db3 recorded from
rs.software_device plays back through camera_node (camera_type realsense_playback) into
realsense-ros style topics, pixel-exact, with CameraInfo and aligned metric depth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(180)


W, H, N = 64, 48, 12


def test_realsense_playback_through_camera_node(tmp_path):
    from scfl_nodes.nodes.common import image_to_numpy
    from scfl_nodes.nodes.testing import RosHarness

    rng = np.random.default_rng(5)
    colors = [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(N)]
    depths = [np.full((H, W), 1000 + 100 * i, dtype=np.uint16) for i in range(N)]
    np.savez(tmp_path / "frames.npz", colors=np.stack(colors), depths=np.stack(depths))
    path = tmp_path / "synthetic.db3"
    # recorded in a child process: pyrealsense2 must not share a process with ROS libraries
    # that were loaded before it (see scfl_nodes.nodes.common.preload_realsense)
    record = ("import sys, numpy as np; from scfl_nodes.core.perception.realsense import record_synthetic; "
              "d = np.load(sys.argv[1]); record_synthetic(sys.argv[2], list(d['colors']), list(d['depths']), "
              "fps=30, depth_units=0.001)")
    done = subprocess.run([sys.executable, "-c", record, str(tmp_path / "frames.npz"), str(path)],
                          capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert path.is_file(), done.stderr

    with RosHarness(tmp_path / "ros") as ros:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        images = ros.subscribe(Image, "/camera/camera/color/image_raw", qos_profile_sensor_data)
        infos = ros.subscribe(CameraInfo, "/camera/camera/color/camera_info", qos_profile_sensor_data)
        depth = ros.subscribe(Image, "/camera/camera/aligned_depth_to_color/image_raw", qos_profile_sensor_data)
        ros.start("camera_node", {"camera_type": "realsense_playback", "device": str(path), "width": W,
                                  "height": H, "fps": 30.0, "enable_depth": True})
        ros.wait_for(lambda: len(images) >= N and depth and infos, 90, "camera frames")

    lookup = {c.tobytes(): i for i, c in enumerate(colors)}
    seen = [lookup.get(image_to_numpy(m).tobytes()) for m in images]
    assert None not in seen, "a published frame differs from every recorded frame"
    # real-time playback may skip frames when the machine is busy; each published one is exact
    assert len(set(seen)) >= 3
    m = images[0]
    assert (m.encoding, m.width, m.height, m.header.frame_id) == ("rgb8", W, H, "camera_color_optical_frame")
    info = infos[0]
    assert (info.width, info.height, info.header.frame_id) == (W, H, "camera_color_optical_frame")
    assert info.k[0] == pytest.approx(0.9 * W, rel=1e-5) and info.k[8] == 1.0
    d = depth[-1]
    assert d.encoding == "32FC1" and (d.width, d.height) == (W, H)
    metres = np.frombuffer(bytes(d.data), dtype=np.float32).reshape(H, W)
    assert any(np.allclose(metres, dep * 0.001, atol=1e-6) for dep in depths)
