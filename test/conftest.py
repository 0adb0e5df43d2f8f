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
