"""core/control: action -> end-effector delta -> IK joint targets, with real Pinocchio on the URDF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scfl_nodes.core.control import (
    ActionMapping,
    ArmCommander,
    InvalidActionError,
    JointStateError,
    gripper_joints_from_urdf,
    joint_positions_by_name,
)
from scfl_nodes.core.control.arm_command import ArmCommanderSettings
from scfl_nodes.core.retarget import load_robot
from scfl_nodes.core.retarget.robot import PANDA_FINGERS, resolve_urdf

PERIOD = 0.02


@pytest.fixture(scope="module")
def commander():
    robot = load_robot("panda")
    gripper = gripper_joints_from_urdf(resolve_urdf("panda")[0], PANDA_FINGERS)
    return ArmCommander(robot, ActionMapping(), gripper)  # 0.01 m/unit, <= 0.25 m/s


def test_metaworld_frame_maps_onto_rep103_base():
    m = ActionMapping(position_scale=0.01, max_speed=10.0)
    # Meta-World +x (robot's right) -> base -y; +y (away from the robot) -> base +x; z stays up
    np.testing.assert_allclose(m.ee_delta([1, 0, 0, 0], PERIOD), [0, -0.01, 0], atol=1e-12)
    np.testing.assert_allclose(m.ee_delta([0, 1, 0, 0], PERIOD), [0.01, 0, 0], atol=1e-12)
    np.testing.assert_allclose(m.ee_delta([0, 0, -0.5, 0], PERIOD), [0, 0, -0.005], atol=1e-12)
    # clipped to [-1, 1] like Meta-World, then capped at max_speed
    np.testing.assert_allclose(m.ee_delta([0, 50, 0, 0], PERIOD), [0.01, 0, 0], atol=1e-12)
    slow = ActionMapping(position_scale=0.01, max_speed=0.25)
    assert np.linalg.norm(slow.ee_delta([1, 1, 1, 0], PERIOD)) == pytest.approx(0.25 * PERIOD)
    assert m.gripper_closure([0, 0, 0, -1]) == 0.0 and m.gripper_closure([0, 0, 0, 7]) == 1.0
    for bad in ([np.nan, 0, 0, 0], [0, 0, np.inf, 0], [0, 0]):
        with pytest.raises(InvalidActionError):
            m.ee_delta(bad, PERIOD)


def test_forward_kinematics_moves_by_the_commanded_delta(commander):
    rng = np.random.default_rng(3)
    robot = commander.robot
    for _ in range(30):
        q = robot.clamp(robot.home + rng.uniform(-0.4, 0.4, robot.nq))
        action = rng.uniform(-1, 1, 4)
        cmd = commander.command(q, action, PERIOD)
        mw = np.clip(action[:3], -1, 1) * 0.01
        expected = np.array([mw[1], -mw[0], mw[2]])  # Meta-World frame -> REP-103 base frame
        expected *= min(1.0, 0.25 * PERIOD / np.linalg.norm(expected))  # speed cap
        np.testing.assert_allclose(cmd.ee_delta, expected, atol=1e-12)
        assert not cmd.saturated  # <= 5 mm per 20 ms is well inside half the joint speed limits here
        before, after = robot.fk(cmd.q_current), robot.fk(cmd.q_target)
        np.testing.assert_allclose(after.translation - before.translation, expected, atol=1e-4)
        rot = after.rotation @ before.rotation.T  # orientation is held
        assert math.acos(min(1.0, (np.trace(rot) - 1) / 2)) < 1e-3
        np.testing.assert_allclose(cmd.linear_velocity, expected / PERIOD, atol=1e-9)
    assert commander.command(robot.home, [0.3, -0.2, 0.1, 0], PERIOD).saturated is False


def test_limits_hold_for_huge_actions_and_postures_at_the_limits(commander):
    robot = commander.robot
    rng = np.random.default_rng(0)
    step = commander.max_joint_step(PERIOD)
    # at the limits, just beyond them (a driver's reading within state_limit_tolerance), random
    postures = [robot.home, robot.lower + 1e-4, robot.upper - 1e-4, robot.upper + 0.01, robot.lower - 0.01] + [
        robot.random_configuration(rng) for _ in range(20)]
    actions = [[1e9, -1e9, 1e9, 1e9], [-1e30, 0, 0, -1e30], [0, 0, -1e6, 0]] + list(rng.uniform(-100, 100, (10, 4)))
    for q in postures:
        for a in actions:
            cmd = commander.command(q, a, PERIOD)
            assert np.all(cmd.q_target >= robot.lower) and np.all(cmd.q_target <= robot.upper)
            assert np.all(np.abs(cmd.q_target - cmd.q_current) <= step + 1e-12)
            assert np.all(np.abs(cmd.q_target - cmd.q_current) / PERIOD <= robot.velocity_limit * 0.5 + 1e-9)
            for g, pos in zip(commander.gripper, cmd.gripper_positions):
                assert g.lower <= pos <= g.upper
    with pytest.raises(InvalidActionError):
        commander.command(robot.home, [np.nan, 0, 0, 0], PERIOD)
    # slower velocity scale -> proportionally smaller steps
    slow = ArmCommander(robot, commander.mapping, commander.gripper, ArmCommanderSettings(velocity_scale=0.05))
    cmd = slow.command(robot.home, [1, 1, 1, 0], PERIOD)
    assert cmd.saturated and np.all(np.abs(cmd.q_target - cmd.q_current) <= slow.max_joint_step(PERIOD) + 1e-12)


def test_gripper_uses_urdf_joints_limits_and_velocity(commander):
    assert [g.name for g in commander.gripper] == ["panda_finger_joint1"]  # joint2 mimics joint1
    g = commander.gripper[0]
    assert (g.lower, g.upper, g.velocity) == (0.0, 0.04, 0.2)
    opened = commander.command(commander.robot.home, [0, 0, 0, -1], PERIOD, gripper_measured=[0.0])
    assert opened.gripper_positions == [0.04]
    # 4 cm at half the 0.2 m/s limit takes 0.4 s
    assert opened.gripper_duration_s == pytest.approx(0.04 / 0.1)
    closed = commander.command(commander.robot.home, [0, 0, 0, 1], PERIOD, gripper_measured=[0.0])
    assert closed.gripper_positions == [0.0] and closed.gripper_duration_s == PERIOD


def test_joint_state_checks(commander):
    names = commander.joint_names
    q = joint_positions_by_name(list(reversed(names)) + ["x"], list(reversed(range(7))) + [9.0], names)
    np.testing.assert_array_equal(q, np.arange(7))
    with pytest.raises(JointStateError, match="panda_joint7"):
        joint_positions_by_name(names[:6], [0.0] * 6, names)
    with pytest.raises(JointStateError, match="NaN"):
        joint_positions_by_name(names, [math.nan] * 7, names)
    far = commander.robot.home.copy()
    far[3] = 0.5  # panda_joint4 upper limit is -0.0698
    with pytest.raises(JointStateError, match="panda_joint4"):
        commander.command(far, [0, 0, 0, 0], PERIOD)
