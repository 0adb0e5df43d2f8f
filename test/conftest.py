"""Shared pytest fixtures for scfl."""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


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
