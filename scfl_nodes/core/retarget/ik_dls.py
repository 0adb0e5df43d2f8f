"""Damped-least-squares IK on the SE(3) log error, with joint limits, restarts and a posture prior.

Each iteration linearises e(q) = log6(FK(q)^-1 · T_target) with the exact Jacobian
(-Jlog6 · J_frame, all Pinocchio C++ calls) and takes a Levenberg-Marquardt step (steps that
do not reduce the error are rejected and the damping raised). Joints are clamped to their
limits; a joint pinned at a limit and pushed outward drops out of the step.

The paper's objective ||FK(q) − T_ee||² + λ||q − q_GMR||² enters as a regularisation term of
the linearised step, min ||J dq + e||² + λ_k||q + dq − q_GMR||², with λ_k = λ·min(1, ||e||²):
far from the target the prior steers the descent (and so which IK branch the arm ends on);
near it λ_k → 0, so the pose is met exactly instead of being traded against the posture.
Optional nullspace iterations (``IKSettings.posture_iterations``) then slide along the arm's
self-motion toward q_GMR without moving the end effector (a small effect on a 7-DOF arm with
a 1-D self-motion, so it is off by default).
"""

from __future__ import annotations

import math

import numpy as np
import pinocchio as pin
from scipy.linalg.lapack import dposv as _dposv

from .ik_types import IKResult, IKSettings, solve_with_restarts
from .robot import RobotModel

_LOCAL = pin.ReferenceFrame.LOCAL


def _evaluate(robot: RobotModel, q: np.ndarray, target: pin.SE3):
    """Pose error of ``q``: (log6 error, position error, rotation error, Jacobian of the log error)."""
    model, data, fid = robot.model, robot.data, robot.ee_frame_id
    pin.computeJointJacobians(model, data, q)  # forward kinematics + joint Jacobians
    current = pin.updateFramePlacement(model, data, fid)
    cur_to_target = current.actInv(target)
    err = pin.log6(cur_to_target).vector
    dpos = current.translation - target.translation
    pos_err = math.sqrt(float(dpos @ dpos))
    rot_err = math.sqrt(float(err[3:] @ err[3:]))
    jac = -pin.Jlog6(cur_to_target.inverse()) @ pin.getFrameJacobian(model, data, fid, _LOCAL)
    return err, pos_err, rot_err, jac


def _spd_solve(mat: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve a small symmetric positive-definite system (LAPACK dposv: ~4x less overhead than
    np.linalg.solve for 6x6/7x7, which matters at ~10 solves per IK call)."""
    _, x, info = _dposv(mat, rhs)
    return x if info == 0 else np.linalg.lstsq(mat, rhs, rcond=None)[0]


def _lm_step(jac, err, mu, q, lower, upper):
    """Damped least-squares step; joints pinned at a limit and pushed outward drop out (one
    active-set pass) so the others compensate instead of the descent stalling on the limit."""
    gram = jac @ jac.T
    gram.reshape(-1)[::7] += mu  # diagonal, in place
    dq = -jac.T @ _spd_solve(gram, err)
    blocked = ((q <= lower + 1e-9) & (dq < 0)) | ((q >= upper - 1e-9) & (dq > 0))
    if blocked.any():
        jac = jac.copy()
        jac[:, blocked] = 0.0
        gram = jac @ jac.T
        gram.reshape(-1)[::7] += mu
        dq = -jac.T @ _spd_solve(gram, err)
    return dq, jac, gram


def _regularised_step(jac, err, mu, lam_p, q, q_prior, lower, upper):
    """Step of min ||J dq + e||² + lam_p||q + dq − q_GMR||² + mu||dq||² (the paper's objective,
    linearised), with the same active-set treatment of joints pinned at a limit."""
    hess = jac.T @ jac
    hess.reshape(-1)[:: hess.shape[0] + 1] += mu + lam_p
    grad = jac.T @ err + lam_p * (q - q_prior)
    dq = -_spd_solve(hess, grad)
    blocked = ((q <= lower + 1e-9) & (dq < 0)) | ((q >= upper - 1e-9) & (dq > 0))
    if blocked.any():
        hess[blocked, :] = 0.0
        hess[:, blocked] = 0.0
        hess[blocked, blocked] = 1.0
        grad = grad.copy()
        grad[blocked] = 0.0
        dq = -_spd_solve(hess, grad)
    return dq


def _attempt(robot: RobotModel, target: pin.SE3, q0: np.ndarray, lower, upper, settings: IKSettings, q_prior, tol_pos, tol_rot,
             regularise: bool = True):
    """One Levenberg-Marquardt descent from ``q0`` (steps that increase the error are rejected
    and the damping raised), then nullspace posture iterations; returns (q, pos_err, rot_err, iterations)."""
    q = np.minimum(np.maximum(q0, lower), upper)
    err, pos_err, rot_err, jac = _evaluate(robot, q, target)
    cost = float(err @ err)
    lam = 1e-3
    use_prior = q_prior is not None and settings.posture_weight > 0
    # stop the descent a decade below the tolerance: LM converges quadratically there, so the
    # margin costs about one iteration and keeps trajectories well inside the tolerance
    tight_pos, tight_rot = 0.1 * tol_pos, 0.1 * tol_rot
    it = 0
    history = []  # cost per iteration, to abandon descents that crawl (restarts are cheaper)
    while it < settings.max_iterations and not (pos_err <= tight_pos and rot_err <= tight_rot):
        it += 1
        history.append(cost)
        if it > 8 and cost > 0.5 * history[-8]:  # (cost is squared: < ~30 % error drop in 8 steps)
            break
        mu = settings.damping + lam
        lam_p = 0.0
        if use_prior and regularise:
            # the posture pull fades with the pose error, so the descent converges to an exact
            # pose (e = 0) while the prior steers which of the arm's IK branches it lands on
            lam_p = settings.posture_weight * min(1.0, cost)
            dq = _regularised_step(jac, err, mu, lam_p, q, q_prior, lower, upper)
        else:
            dq, _, _ = _lm_step(jac, err, mu, q, lower, upper)
        step = float(np.abs(dq).max())
        if step < 1e-12:
            break
        if step > settings.max_step:
            dq *= settings.max_step / step
        q_new = np.minimum(np.maximum(q + dq, lower), upper)
        new = _evaluate(robot, q_new, target)
        new_cost = float(new[0] @ new[0])
        if lam_p:
            accept = new_cost + lam_p * float(np.sum((q_new - q_prior) ** 2)) < cost + lam_p * float(np.sum((q - q_prior) ** 2))
        else:
            accept = new_cost < cost
        if accept:
            q, cost, (err, pos_err, rot_err, jac) = q_new, new_cost, new
            lam = max(lam * 0.3, 1e-9)
        else:
            lam *= 8.0
            if lam > 1e3:
                break  # no descent direction left: local minimum or limits
    if use_prior and settings.posture_iterations > 0 and pos_err <= tol_pos and rot_err <= tol_rot:
        q, pos_err, rot_err, extra = _nullspace_posture(robot, target, q, (err, pos_err, rot_err, jac), q_prior,
                                                        lower, upper, settings, tol_pos, tol_rot)
        it += extra
    return q, pos_err, rot_err, it


def _nullspace_posture(robot, target, q, state, q_prior, lower, upper, settings, tol_pos, tol_rot, gain=0.5):
    """Move toward q_GMR along the arm's self-motion (nullspace of the pose task) while
    correcting the pose; returns the last posture that is within tolerance."""
    eye_n = np.eye(robot.nq)
    err, pos_err, rot_err, jac = state
    best = (q, pos_err, rot_err)
    it = 0
    for it in range(1, settings.posture_iterations + 1):
        dq, jac_active, gram = _lm_step(jac, err, settings.damping, q, lower, upper)
        pinv = jac_active.T @ np.linalg.inv(gram)
        dq = dq + (eye_n - pinv @ jac_active) @ (-gain * (q - q_prior))
        step = float(np.abs(dq).max())
        if step < 1e-4:
            break  # q_GMR is as close as the pose allows
        if step > 0.2:
            dq *= 0.2 / step
        q = np.minimum(np.maximum(q + dq, lower), upper)
        err, pos_err, rot_err, jac = _evaluate(robot, q, target)
        if pos_err <= tol_pos and rot_err <= tol_rot:
            best = (q, pos_err, rot_err)
    return best[0], best[1], best[2], it


def solve_dls(
    robot: RobotModel,
    target,
    q_init: np.ndarray | None = None,
    *,
    q_prior: np.ndarray | None = None,
    settings: IKSettings = IKSettings(),
    rng: np.random.Generator | None = None,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> IKResult:
    """Solve FK(q) = target (4x4 or pin.SE3) within tolerance; restarts from random postures
    (see :func:`solve_with_restarts`)."""
    tol_pos, tol_rot = settings.position_tolerance, settings.orientation_tolerance

    def attempt(target, q0, lower, upper, q_prior, index):
        # every third restart descends without the posture pull (the prior only acts in the
        # nullspace there): a prior that points at an infeasible branch cannot block success
        return _attempt(robot, target, q0, lower, upper, settings, q_prior, tol_pos, tol_rot,
                        regularise=index % 3 != 2)

    return solve_with_restarts(robot, target, q_init, q_prior=q_prior, settings=settings, rng=rng,
                               lower=lower, upper=upper, attempt=attempt)
