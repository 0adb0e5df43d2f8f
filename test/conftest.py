"""Shared pytest fixtures for scfl."""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def _add_vendored_launch() -> None:
    """Without a system ROS, the real launch / launch_ros come from ../shared/vendor/ros2/python
    (scripts/env.sh does the same for shells); the project's tree holds no copies."""
    import importlib.util

    if importlib.util.find_spec("launch_ros") is None:  # no import: rclpy must not load before pyrealsense2
        vendor = os.environ.get("SCFL_VENDOR_ROS2") or os.path.join(os.path.dirname(REPO_ROOT), "shared", "vendor", "ros2")
        python = os.path.join(vendor, "python")
        if os.path.isdir(os.path.join(python, "launch_ros")) and python not in sys.path:
            sys.path.append(python)


_add_vendored_launch()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models gain nothing from intra-op threads; on 2 shared cores the threads only contend.
    Modules use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO_ROOT


def pytest_configure(config):
    """Keep pytest's exit code when pyrealsense2 and rclpy end up in one test process.

    Both bundle Fast DDS and crash in their native destructors at interpreter exit; see
    scfl_nodes.nodes.testing.install_exit_guard. Installed once for the whole session so that
    the test order (camera tests before or after ROS tests) does not matter.
    """
    from scfl_nodes.nodes.testing import install_exit_guard

    install_exit_guard(config)


def vendored_ros2_dir():
    """``../shared/vendor/ros2`` beside the checkout (``SCFL_VENDOR_ROS2`` overrides), or None."""
    from pathlib import Path

    path = Path(os.environ.get("SCFL_VENDOR_ROS2") or Path(REPO_ROOT).parent / "shared" / "vendor" / "ros2")
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory):
    """A plain `colcon build` of a workspace holding a clean copy (git ls-files) of this repository.

    Built once per test session (about 1-3 min); on top of ros_ws/install (scripts/build_ros.sh:
    vendored tf2_msgs) on a pip-only machine. Returns the install directory (isolated layout,
    as a robot's `colcon build` makes it).
    """
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(REPO_ROOT)
    reuse = os.environ.get("SCFL_TEST_COLCON_INSTALL")  # debugging: an install this fixture built before
    if reuse:
        return Path(reuse)
    prep = subprocess.run(["bash", str(root / "scripts" / "build_ros.sh")], capture_output=True, text=True, timeout=1200)
    assert prep.returncode == 0, prep.stdout + prep.stderr
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "scfl"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (root / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, src / name)
    venv = Path(sys.prefix)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH")}
    prefixes = [str(root / "ros_ws" / "install"), str(venv)]
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", AMENT_PREFIX_PATH=os.pathsep.join(prefixes),
               CMAKE_PREFIX_PATH=os.pathsep.join(prefixes))
    proc = subprocess.run([str(venv / "bin" / "colcon"), "build", "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}",
                           "-DBUILD_TESTING=OFF", "-Wno-dev"], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return ws / "install"
