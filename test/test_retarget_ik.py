"""IK on the real Panda model (Pinocchio DLS and pin-pink QP): accuracy, limits, unreachable targets,
the GMR prior, and trajectory mode (warm start, velocity limits, flags)."""

import math

import numpy as np
import pytest

from scfl_nodes.core.retarget import IKSettings, default_prior, load_robot, solve_ik, solve_trajectory
from scfl_nodes.core.retarget.transforms import pose_errors

TOL_POS, TOL_ROT = 1e-3, math.radians(1.0)


@pytest.fixture(scope="module")
def robot():
    return load_robot("panda")


@pytest.fixture(scope="module")
def prior(robot):
    return default_prior(robot, seed=0)


def independent_errors(robot, q, target):
    """Residual measured by our own FK call, not the solver's report."""
    pos, rot = pose_errors(robot.fk_matrix(q), np.asarray(target))
    return float(pos), float(rot)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("solver", ["dls", "qp"])
def test_reaches_random_reachable_targets(robot, solver):
    rng = np.random.default_rng(2024)
    solve_rng = np.random.default_rng(7)
    reached = 0
    for _ in range(200):
        target = robot.fk_matrix(robot.random_configuration(rng))  # reachable by construction
        res = solve_ik(robot, target, solver=solver, rng=solve_rng)
        assert robot.within_limits(res.q), "joint limits violated"
        pos, rot = independent_errors(robot, res.q, target)
        # the reported residual is the real one
        assert abs(pos - res.position_error) < 1e-9 and abs(rot - res.orientation_error) < 1e-6
        ok = pos <= TOL_POS and rot <= TOL_ROT
        assert ok == res.success
        reached += ok
    assert reached >= 194, f"{solver}: {reached}/200 reached"  # >= 97 %


@pytest.mark.parametrize("solver", ["dls", "qp"])
def test_unreachable_targets_are_reported(robot, solver):
    settings = IKSettings(restarts=3)
    far = np.eye(4)
    far[:3, 3] = [1.5, 0.3, 0.5]  # Panda reach is about 0.85 m from the shoulder
    res = solve_ik(robot, far, solver=solver, settings=settings)
    assert not res.success and not res.reachable
    assert res.position_error > 0.3
    assert robot.within_limits(res.q)
    # a reachable position with an orientation the wrist cannot take near the base is also reported
    inside = robot.fk_matrix(robot.home)
    inside[:3, 3] = [0.0, 0.0, 0.05]  # inside the robot's own base
    res = solve_ik(robot, inside, solver=solver, settings=settings)
    assert not res.success and max(res.position_error / TOL_POS, res.orientation_error / TOL_ROT) > 1.0


def test_unknown_solver(robot):
    with pytest.raises(ValueError, match="unknown IK solver"):
        solve_ik(robot, np.eye(4), solver="newton")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("solver", ["dls", "qp"])
def test_prior_pulls_solution_toward_q_gmr(robot, prior, solver):
    """Same targets, same start: with the λ||q − q_GMR||² term the solutions are closer to q_GMR."""
    rng = np.random.default_rng(11)
    d_without, d_with, d_default = [], [], []
    for i in range(30):
        q_true = robot.clamp(robot.home + rng.normal(0, 0.35, robot.nq))
        target = robot.fk_matrix(q_true)
        q_gmr = prior.predict(target[:3, 3])
        start = robot.random_configuration(rng)
        a = solve_ik(robot, target, solver=solver, q_init=start, rng=np.random.default_rng(i))
        b = solve_ik(robot, target, solver=solver, q_init=start, q_prior=q_gmr, rng=np.random.default_rng(i))
        c = solve_ik(robot, target, solver=solver, q_prior=q_gmr, rng=np.random.default_rng(i))  # starts at q_GMR
        assert a.success and b.success and c.success
        d_without.append(np.linalg.norm(a.q - q_gmr))
        d_with.append(np.linalg.norm(b.q - q_gmr))
        d_default.append(np.linalg.norm(c.q - q_gmr))
    assert np.mean(d_with) < 0.97 * np.mean(d_without), (np.mean(d_with), np.mean(d_without))
    assert np.mean(d_default) < 0.5 * np.mean(d_without), (np.mean(d_default), np.mean(d_without))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("solver", ["dls", "qp"])
def test_trajectory_warm_start_velocity_limit_and_flags(robot, prior, solver):
    rng = np.random.default_rng(5)
    # a smooth joint-space path -> smooth reachable end-effector path
    q_a = robot.clamp(robot.home + rng.normal(0, 0.3, robot.nq))
    q_b = robot.clamp(robot.home + rng.normal(0, 0.3, robot.nq))
    path = np.linspace(q_a, q_b, 30)
    targets = np.array([robot.fk_matrix(q) for q in path])
    # one waypoint 1.2 m away: must be flagged, not hidden, and must not break the rest
    targets[15, :3, 3] = [1.2, 0.0, 0.4]
    ts = np.arange(30) * 0.1
    vmax = 1.0
    res = solve_trajectory(robot, targets, solver=solver, prior=prior, timestamps=ts, max_joint_velocity=vmax)
    assert res.reachable.dtype == bool and res.reachable.shape == (30,)
    assert list(res.unreachable_indices) == [15]
    assert res.position_error[15] > 0.1
    assert "unreachable waypoints: 15" in res.summary()
    ok = res.reachable
    pos, rot = pose_errors(res.achieved, targets)
    np.testing.assert_allclose(pos, res.position_error, atol=1e-9)
    assert (pos[ok] <= TOL_POS).all() and (rot[ok] <= TOL_ROT).all()
    # joint limits and velocity limits hold at every step (also around the unreachable waypoint)
    assert all(robot.within_limits(q) for q in res.q)
    speed = np.abs(np.diff(res.q, axis=0)) / np.diff(ts)[:, None]
    assert speed.max() <= min(vmax, robot.velocity_limit.min()) + 1e-9
    assert res.q_prior.shape == res.q.shape


def test_trajectory_velocity_limit_makes_fast_jumps_unreachable(robot):
    """A 30 cm jump in 0.1 s at 0.5 rad/s cannot be followed: flagged, and the limit still holds."""
    start = robot.fk_matrix(robot.home)
    jump = start.copy()
    jump[:3, 3] += [0.0, 0.3, 0.0]
    targets = np.array([start, jump, jump])
    res = solve_trajectory(robot, targets, timestamps=[0.0, 0.1, 0.2], max_joint_velocity=0.5,
                           settings=IKSettings(restarts=2))
    assert res.reachable[0] and not res.reachable[1]
    assert np.abs(np.diff(res.q, axis=0)).max() <= 0.5 * 0.1 + 1e-9


def test_trajectory_rejects_bad_timestamps(robot):
    targets = np.tile(robot.fk_matrix(robot.home), (3, 1, 1))
    with pytest.raises(ValueError, match="strictly increasing"):
        solve_trajectory(robot, targets, timestamps=[0.0, 0.0, 0.1])


def test_nullspace_posture_iterations_keep_the_pose(robot, prior):
    """The optional nullspace phase moves toward q_GMR along the self-motion, pose unchanged."""
    rng = np.random.default_rng(3)
    closer = 0
    for i in range(10):
        target = robot.fk_matrix(robot.clamp(robot.home + rng.normal(0, 0.35, robot.nq)))
        q_gmr = prior.predict(target[:3, 3])
        start = solve_ik(robot, target, q_init=robot.random_configuration(rng), rng=np.random.default_rng(i))
        res = solve_ik(robot, target, q_init=start.q, q_prior=q_gmr,
                       settings=IKSettings(posture_iterations=30, restarts=0))
        assert res.success and robot.within_limits(res.q)
        closer += np.linalg.norm(res.q - q_gmr) < np.linalg.norm(start.q - q_gmr) - 1e-3
    assert closer >= 7


@pytest.mark.parametrize("solver", ["dls", "qp"])
def test_tightened_joint_boxes_always_hold(robot, prior, solver):
    """Limits tightened around a posture (as velocity limits do) hold whether or not the target is met."""
    rng = np.random.default_rng(9)
    for i in range(25):
        centre = robot.random_configuration(rng)
        half = rng.uniform(0.01, 0.3)
        lower, upper = centre - half, centre + half
        target = robot.fk_matrix(robot.random_configuration(rng) if i % 2 else robot.clamp(centre + 0.5 * half))
        res = solve_ik(robot, target, solver=solver, q_init=centre, q_prior=prior.predict(target[:3, 3]),
                       lower=lower, upper=upper, settings=IKSettings(restarts=2), rng=rng)
        assert robot.within_limits(res.q)
        assert np.all(res.q >= np.maximum(lower, robot.lower) - 1e-12)
        assert np.all(res.q <= np.minimum(upper, robot.upper) + 1e-12)
        pos, rot = pose_errors(robot.fk_matrix(res.q), target)
        assert res.success == bool(pos <= TOL_POS and rot <= TOL_ROT)
