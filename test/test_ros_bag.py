"""rosbag2 record/replay: rosbag_io round trips (sqlite3 and mcap) and bag_player replaying an
mcap bag onto live topics with the recorded timing (scaled by ``rate``) and consistent stamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scfl_nodes.core import rosbag_io

pytestmark = pytest.mark.timeout(240)


BAG = Path(__file__).parent / "data" / "demo_bag"


def test_bundled_bag_is_small_and_complete():
    size = sum(p.stat().st_size for p in BAG.rglob("*") if p.is_file())
    assert size < 2_000_000
    info = rosbag_io.bag_info(BAG)
    assert info["storage"] == "sqlite3"
    topics = info["topics"]
    assert topics[rosbag_io.COLOR_IMAGE_TOPIC] == ("sensor_msgs/msg/Image", 40)
    assert topics[rosbag_io.OBSERVATION_TOPIC] == ("scfl_interfaces/msg/Observation", 40)
    assert topics[rosbag_io.COLOR_INFO_TOPIC][1] == 40 and topics[rosbag_io.INSTRUCTION_TOPIC][1] == 1
    img = rosbag_io.decode(next(rosbag_io.read_bag(BAG, [rosbag_io.COLOR_IMAGE_TOPIC])))
    assert (img.encoding, img.height, img.width, img.header.frame_id) == ("rgb8", 64, 64, "camera_color_optical_frame")
    pixels = np.asarray(img.data).reshape(64, 64, 3)
    assert pixels.std() > 10  # a rendered scene, not a blank frame


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip(tmp_path, storage):
    path = tmp_path / f"bag_{storage}"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 8, 6, 3), dtype=np.uint8)
    with rosbag_io.BagWriter(path, storage) as bag:
        for i, im in enumerate(images):
            t = 1_000_000_000 + i * 50_000_000
            bag.write("/cam/image", t, rosbag_io.image_message(im, t, "cam_optical"))
            bag.write("/state", t, rosbag_io.observation_message(np.full(5, i, np.float32), t))
            bag.write("/demo/base", t, rosbag_io.float32_multiarray([i, i + 1.5]))
    info = rosbag_io.bag_info(path)
    assert info["storage"] == storage and info["message_count"] == 9
    assert info["duration_s"] == pytest.approx(0.1, abs=1e-6)
    msgs = list(rosbag_io.read_bag(path))
    assert [m.timestamp_ns for m in msgs] == sorted(m.timestamp_ns for m in msgs)
    got = [rosbag_io.decode(m) for m in msgs if m.topic == "/cam/image"]
    for im, msg in zip(images, got):
        np.testing.assert_array_equal(np.asarray(msg.data).reshape(im.shape), im)
    states = [rosbag_io.decode(m).state for m in msgs if m.topic == "/state"]
    assert [float(s[0]) for s in states] == [0.0, 1.0, 2.0]
    with pytest.raises(rosbag_io.BagError, match="refusing to overwrite"):
        rosbag_io.BagWriter(path, storage)
    with pytest.raises(rosbag_io.BagError, match="not in the bag"):
        list(rosbag_io.read_bag(path, ["/nope"]))
    with pytest.raises(rosbag_io.BagError, match="not a rosbag2 directory"):
        rosbag_io.bag_info(tmp_path / "missing")


def test_bag_player_replays_mcap_with_recorded_timing(tmp_path):
    from scfl_nodes.nodes.testing import RosHarness

    # an mcap copy of the bundled bag, written from its raw CDR records
    mcap = tmp_path / "demo_mcap"
    with rosbag_io.BagWriter(mcap, "mcap") as bag:
        for m in rosbag_io.read_bag(BAG):
            bag.write(m.topic, m.timestamp_ns, m.data, msgtype=m.msgtype)
    recorded = [m.timestamp_ns for m in rosbag_io.read_bag(mcap, [rosbag_io.COLOR_IMAGE_TOPIC])]
    rate = 2.0
    with RosHarness(tmp_path / "ros") as ros:
        import time

        from rclpy.qos import qos_profile_sensor_data
        from scfl_interfaces.msg import Observation
        from sensor_msgs.msg import Image

        arrivals, images, states = [], [], []
        ros.node.create_subscription(Image, "/camera/camera/color/image_raw",
                                     lambda m: (arrivals.append(time.monotonic()), images.append(m)), qos_profile_sensor_data)
        ros.node.create_subscription(Observation, "/scfl/observation_state", states.append, 50)
        player = ros.start("bag_player", {"bag_path": str(mcap), "rate": rate, "start_delay_s": 2.0,
                                          "wait_for_subscribers": ["/camera/camera/color/image_raw",
                                                                   "/scfl/observation_state"]})
        ros.wait_for(lambda: player.proc.poll() is not None, 60, "the end of the replay")
        assert player.proc.returncode == 0, ros.logs()
        ros.wait_for(lambda: len(states) == len(recorded), 10, "every state (reliable QoS)")
        time.sleep(0.5)
    # best-effort images may lose a frame while the large-data transport connects; states may not
    assert len(images) >= 0.9 * len(recorded), f"{len(images)}/{len(recorded)} images"
    state_stamps = [s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for s in states]
    offset = state_stamps[0] - recorded[0]
    # restamped by ONE constant offset: recorded spacing kept exactly, image stamps = state stamps
    assert [s - offset for s in state_stamps] == recorded
    image_stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in images]
    assert set(image_stamps) <= set(state_stamps)
    # published on the recorded schedule, scaled by the rate (loose bounds: shared CI cores)
    first, last = image_stamps[0] - offset, image_stamps[-1] - offset
    expected_span = (last - first) * 1e-9 / rate
    assert 0.7 * expected_span < arrivals[-1] - arrivals[0] < 1.5 * expected_span
