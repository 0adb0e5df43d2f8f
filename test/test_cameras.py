"""Camera sources on real libraries: librealsense recording/playback, OpenCV video, MuJoCo."""

import numpy as np
import pytest

from scfl_nodes.core.perception import CameraError, CameraNotFoundError, open_camera
from scfl_nodes.core.perception.opencv_sources import load_zed_calibration

W, H, N = 64, 48, 12


def _synthetic(n=N, seed=0):
    rng = np.random.default_rng(seed)
    colors = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]
    depths = [rng.integers(200, 5000, (H, W), dtype=np.uint16) for _ in range(n)]
    return colors, depths


@pytest.mark.timeout(120)
def test_realsense_db3_recorded_from_software_device_plays_back_frame_exact(tmp_path):
    from scfl_nodes.core.perception.realsense import record_synthetic

    colors, depths = _synthetic()
    path = record_synthetic(tmp_path / "synthetic.db3", colors, depths, fps=30, depth_units=0.001)
    with pytest.raises(FileExistsError):
        record_synthetic(path, colors, depths)
    frames = list(open_camera("realsense", playback=path).frames())
    assert [f.index for f in frames] == list(range(N))
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(f.color, colors[i])
        np.testing.assert_allclose(f.depth, depths[i].astype(np.float32) * 0.001, rtol=1e-6)
        assert f.timestamp == pytest.approx(i / 30, abs=1e-6)
        assert (f.intrinsics.width, f.intrinsics.height) == (W, H)
        assert f.intrinsics.fx == pytest.approx(0.9 * W, rel=1e-5)
    assert len(list(open_camera("realsense", playback=path).frames(max_frames=5))) == 5
    colour_only = list(open_camera("realsense", playback=path, enable_depth=False).frames())
    assert len(colour_only) == N and all(f.depth is None for f in colour_only)


@pytest.mark.timeout(120)
def test_realsense_depth_aligned_to_colour(tmp_path):
    from scfl_nodes.core.perception.realsense import record_synthetic

    colors, _ = _synthetic(6, seed=1)
    # A smooth depth (tilted plane): alignment reprojects points and may move them by a pixel.
    xs = np.arange(W, dtype=np.uint16)[None, :]
    depths = [np.broadcast_to(1000 + 10 * xs + 50 * i, (H, W)).astype(np.uint16) for i in range(6)]
    path = record_synthetic(tmp_path / "aligned.db3", colors, depths)
    frames = list(open_camera("realsense", playback=path, align_depth_to_color=True).frames())
    assert frames, "the aligned pipeline yielded nothing"
    for f in frames:
        assert f.depth.shape == f.color.shape[:2] and f.depth_aligned
        i = f.index
        np.testing.assert_array_equal(f.color, colors[i])
        # Same intrinsics and identity extrinsics: alignment keeps most pixels' depth.
        valid = f.depth > 0
        assert valid.mean() > 0.8
        np.testing.assert_allclose(f.depth[valid], depths[i][valid] * 0.001, atol=0.0125)


def test_missing_realsense_device_lists_what_was_found(tmp_path):
    with pytest.raises(CameraNotFoundError, match="found RealSense devices: none; video devices"):
        next(open_camera("realsense").frames())
    with pytest.raises(CameraNotFoundError, match="does not exist"):
        open_camera("realsense", playback=tmp_path / "nope.db3")


@pytest.mark.timeout(60)
def test_video_file_source_frame_count_and_timestamps(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    fps, n = 20.0, 25
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        img[:, : (i * W) // n + 1] = (0, 0, 255)  # a red bar growing frame by frame (BGR)
        writer.write(img)
    writer.release()
    frames = list(open_camera("uvc", device=str(path)).frames())
    assert len(frames) == n
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(n) / fps)
    assert frames[-1].color.shape == (H, W, 3)
    red = [float((f.color[..., 0] > 128).mean()) for f in frames]
    assert red[0] < red[n // 2] < red[-1]  # frames come out in order, converted to RGB
    assert len(list(open_camera("uvc", device=str(path)).frames(max_frames=7))) == 7


def test_missing_uvc_device_and_file_are_clear_errors(tmp_path):
    with pytest.raises(CameraNotFoundError, match="video devices found"):
        next(open_camera("uvc", device=97).frames())
    with pytest.raises(CameraNotFoundError, match="does not exist"):
        open_camera("uvc", device=str(tmp_path / "none.mp4"))
    with pytest.raises(ValueError, match="unknown camera kind"):
        open_camera("kinect")


@pytest.mark.timeout(60)
def test_zed_side_by_side_split_with_calibration(tmp_path):
    import cv2

    conf = tmp_path / "SN12345.conf"
    conf.write_text(
        "[LEFT_CAM_VGA]\nfx=350.1\nfy=350.2\ncx=336.5\ncy=188.4\nk1=-0.17\nk2=0.02\n\n"
        "[RIGHT_CAM_VGA]\nfx=349.9\nfy=350.0\ncx=330.0\ncy=190.0\n\n[STEREO]\nBaseline=119.8\n"
    )
    left_cal, right_cal, baseline = load_zed_calibration(conf, 672)
    assert left_cal.fx == 350.1 and right_cal.cx == 330.0 and baseline == pytest.approx(0.1198)
    assert left_cal.coeffs[:2] == (-0.17, 0.02)
    path = tmp_path / "zed.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (1344, 376))
    for _ in range(3):
        sbs = np.zeros((376, 1344, 3), np.uint8)
        sbs[:, :672] = (255, 0, 0)  # left blue (BGR), right green
        sbs[:, 672:] = (0, 255, 0)
        writer.write(sbs)
    writer.release()
    src = open_camera("zed", device=str(path), calibration=conf, resolution="VGA")
    frames = list(src.frames())
    assert len(frames) == 3
    f = frames[0]
    assert f.color.shape == (376, 672, 3) and f.right.shape == (376, 672, 3)
    assert f.color[..., 2].mean() > 200 and f.right[..., 1].mean() > 200  # RGB: left blue, right green
    assert f.intrinsics == left_cal and src.baseline_m == pytest.approx(0.1198)
    with pytest.raises(CameraError, match="no \\[LEFT_CAM_HD\\]"):
        load_zed_calibration(conf, 1280)


@pytest.mark.timeout(120)
def test_metaworld_renderer_source():
    src = open_camera("metaworld", task="drawer-close-v3", camera="corner", width=64, height=48, depth=True)
    frames = list(src.frames(max_frames=4))
    assert len(frames) == 4
    f = frames[0]
    assert f.color.shape == (48, 64, 3) and f.color.dtype == np.uint8 and f.color.std() > 5
    assert f.depth.shape == (48, 64) and 0.2 < float(np.median(f.depth)) < 5.0  # metres to the table
    assert f.depth_aligned and f.intrinsics.fy > 0
    assert [fr.timestamp for fr in frames] == pytest.approx([i * 0.0125 for i in range(4)])
    assert np.abs(frames[3].color.astype(int) - frames[0].color.astype(int)).sum() > 0  # the arm moved
    with pytest.raises(CameraError, match="unknown Meta-World camera"):
        open_camera("metaworld", camera="nope")


def test_camera_and_vla_config_sections_are_validated(tmp_path):
    from scfl_nodes.core.config import ConfigError, config_from_dict
    from scfl_nodes.core.perception import camera_from_config
    from scfl_nodes.core.perception.realsense import RealSenseSource, record_synthetic

    with pytest.raises(ConfigError, match="camera.source: must be realsense, zed, uvc or metaworld"):
        config_from_dict({"camera": {"source": "kinect"}})
    with pytest.raises(ConfigError, match="vla.backend"):
        config_from_dict({"vla": {"backend": "tflite"}})
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"camera": {"fsp": 30}})
    colors, depths = _synthetic(3)
    path = record_synthetic(tmp_path / "cfg.db3", colors, depths)
    cfg = config_from_dict({"camera": {"source": "realsense", "playback": str(path), "align_depth": False}})
    src = camera_from_config(cfg.camera)
    assert isinstance(src, RealSenseSource)
    assert len(list(src.frames())) == 3


@pytest.mark.timeout(60)
def test_zed_stereo_depth_from_a_known_disparity(tmp_path):
    import cv2

    conf = tmp_path / "SN1.conf"
    conf.write_text("[LEFT_CAM_VGA]\nfx=350\nfy=350\ncx=335.5\ncy=187.5\n\n"
                    "[RIGHT_CAM_VGA]\nfx=350\nfy=350\ncx=335.5\ncy=187.5\n\n[STEREO]\nBaseline=120\n")
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 256, (94, 180), dtype=np.uint8), (720, 376), interpolation=cv2.INTER_NEAREST)
    disparity = 16  # a fronto-parallel plane at 350 px * 0.12 m / 16 px = 2.625 m
    left = np.repeat(texture[:, 24:696, None], 3, axis=2)
    right = np.repeat(texture[:, 24 + disparity:696 + disparity, None], 3, axis=2)
    path = tmp_path / "zed.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 15, (1344, 376))
    assert writer.isOpened()
    writer.write(np.concatenate([left, right], axis=1))
    writer.release()
    (frame,) = list(open_camera("zed", device=str(path), calibration=conf, resolution="VGA", depth=True).frames())
    assert frame.depth.shape == frame.color.shape[:2] and frame.depth_aligned
    centre = frame.depth[100:280, 150:550]
    valid = centre > 0
    assert valid.mean() > 0.8
    assert float(np.median(centre[valid])) == pytest.approx(2.625, rel=0.03)
    with pytest.raises(CameraError, match="needs the camera's calibration"):
        open_camera("zed", device=str(path), depth=True)


def test_depth_reprojection_shifts_by_the_baseline_disparity():
    from scfl_nodes.core.perception import CameraIntrinsics
    from scfl_nodes.core.perception.realsense import align_depth_to_color

    k = CameraIntrinsics(64, 48, 600.0, 600.0, 31.5, 23.5)
    depth = np.full((48, 64), 2.0, np.float32)
    depth[:, 40:] = 1.0  # a nearer box on the right
    aligned = align_depth_to_color(depth, k, k, np.eye(3), np.array([0.02, 0.0, 0.0]))
    # x_colour = x_depth + fx * tx / z: 6 px at 2 m, 12 px at 1 m; uncovered pixels have no data.
    assert (aligned[:, :6] == 0).all()
    np.testing.assert_allclose(aligned[:, 6:46], 2.0)
    np.testing.assert_allclose(aligned[:, 52:], 1.0)
    assert (aligned[:, 46:52] == 0).all()  # disocclusion gap behind the box edge


@pytest.mark.timeout(120)
def test_exposure_like_controls_only_on_live_cameras(tmp_path):
    """Recordings, video files and the simulator refuse exposure/gain with the reason; live
    RealSense / UVC sources declare them and refuse while they are not streaming."""
    from scfl_nodes.core.perception.realsense import RealSenseSource, record_synthetic

    colors, depths = _synthetic(3)
    recording = open_camera("realsense", playback=record_synthetic(tmp_path / "r.db3", colors, depths))
    import cv2

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    writer.write(np.zeros((H, W, 3), np.uint8))
    writer.release()
    for source in (recording, open_camera("uvc", device=str(clip))):
        assert source.controls() == frozenset()
        with pytest.raises(CameraError, match="has no exposure control"):
            source.set_control("exposure", 100.0)
    for live in (RealSenseSource(), open_camera("uvc", device="/dev/video99")):
        assert live.controls() == {"exposure", "gain"}
        with pytest.raises(CameraError, match="not (streaming|open)"):
            live.set_control("exposure", 100.0)
        with pytest.raises(CameraError, match="has no focus control"):
            live.set_control("focus", 1.0)
