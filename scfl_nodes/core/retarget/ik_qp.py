"""QP IK with pin-pink: FrameTask for the end-effector + PostureTask toward q_GMR, solved by daqp.

This is the paper's objective ||FK(q) − T_ee||² + λ||q − q_GMR||² in pink's differential form:
each iteration solves the QP  min_Δq ||J Δq + e||²_W + λ||Δq + (q − q_GMR)||² + damping||Δq||²
subject to the joint box, and takes the step. The weighted posture term trades a little pose
accuracy for posture, so once the pose is within 10x tolerance the posture cost is annealed
(×1e-3) and a few polishing iterations bring the pose inside the tolerance. Joint limits are a
hard QP constraint and q is clamped after each step (pink's linearisation can overshoot by ~1e-12).
"""

from __future__ import annotations

import math

import numpy as np
import pinocchio as pin
from pink import Configuration, solve_ik as pink_solve_ik
from pink.exceptions import NoSolutionFound
from pink.limits import Limit
from pink.tasks import FrameTask, PostureTask

from .ik_types import IKResult, IKSettings, solve_with_restarts
from .robot import RobotModel

QP_SOLVER = "daqp"


class JointBoxLimit(Limit):
    """Hard box lower ≤ q + Δq ≤ upper (joint limits, possibly tightened by velocity limits)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray):
        self.lower = lower
        self.upper = upper
        n = lower.size
        self._G = np.vstack([np.eye(n), -np.eye(n)])

    def compute_qp_inequalities(self, configuration, dt):
        q = configuration.q
        return self._G, np.hstack([self.upper - q, q - self.lower])


class PinkIK:
    """Reusable pink problem for one robot (tasks and configuration are built once)."""

    def __init__(self, robot: RobotModel):
        self.robot = robot
        self.data = robot.model.createData()
        self.frame_task = FrameTask(robot.ee_frame, position_cost=1.0, orientation_cost=1.0, lm_damping=1e-3)
        self.posture_task = PostureTask(cost=1e-3)
        self.configuration = Configuration(robot.model, self.data, robot.home.copy(), copy_data=False)

    def _errors(self, target: pin.SE3) -> tuple[float, float]:
        current = self.data.oMf[self.robot.ee_frame_id]
        dpos = current.translation - target.translation
        rot = pin.log3(current.rotation.T @ target.rotation)
        return math.sqrt(float(dpos @ dpos)), math.sqrt(float(rot @ rot))

    def _attempt(self, target, q0, lower, upper, settings: IKSettings, q_prior):
        conf = self.configuration
        q = np.minimum(np.maximum(q0, lower), upper)
        conf.update(q)
        box = JointBoxLimit(lower, upper)
        tasks = [self.frame_task]
        weight = settings.posture_weight if q_prior is not None else 0.0
        annealed = None  # None: no posture task; False: full weight; True: annealed
        if weight > 0:
            annealed = False
            self.posture_task.set_target(q_prior)
            self.posture_task.cost = weight
            tasks.append(self.posture_task)
        tol_pos, tol_rot = settings.position_tolerance, settings.orientation_tolerance
        pos, rot = self._errors(target)
        history = []
        it = 0
        polished = False
        for it in range(1, settings.max_iterations + 1):
            if pos <= tol_pos and rot <= tol_rot:
                if polished or (pos <= 0.1 * tol_pos and rot <= 0.1 * tol_rot):
                    break
                polished = True  # one more step: a margin below the tolerance costs ~0.1 ms
                q_reached, pos_reached, rot_reached = q, pos, rot
            cost = pos + 0.1 * rot
            history.append(cost)
            crawling = len(history) > 12 and cost > 0.25 * history[-12]
            near = pos < 10 * tol_pos and rot < 10 * tol_rot
            if annealed is False and (near or crawling or (len(history) > 3 and cost > 0.9 * history[-2])):
                self.posture_task.cost = weight * 1e-3  # polish: let the pose win over the posture
                annealed, history = True, []
            elif crawling:
                break  # a restart is cheaper
            try:
                dq = pink_solve_ik(conf, tasks, 1.0, solver=QP_SOLVER, damping=settings.damping,
                                   limits=[box], safety_break=False)
            except NoSolutionFound:
                break
            step = float(np.abs(dq).max())
            if step > settings.max_step:
                dq *= settings.max_step / step
            q = np.minimum(np.maximum(q + dq, lower), upper)
            conf.update(q)
            pos, rot = self._errors(target)
        if polished and not (pos <= tol_pos and rot <= tol_rot):
            return q_reached, pos_reached, rot_reached, it  # the polishing step made it worse
        return q, pos, rot, it

    def solve(self, target, q_init=None, *, q_prior=None, settings: IKSettings = IKSettings(),
              rng: np.random.Generator | None = None, lower=None, upper=None) -> IKResult:
        target = target if isinstance(target, pin.SE3) else pin.SE3(np.asarray(target, dtype=float))
        self.frame_task.set_target(target)

        def attempt(target, q0, lower, upper, q_prior, index):
            return self._attempt(target, q0, lower, upper, settings, q_prior)

        return solve_with_restarts(self.robot, target, q_init, q_prior=q_prior, settings=settings, rng=rng,
                                   lower=lower, upper=upper, attempt=attempt)


def solve_qp(robot: RobotModel, target, q_init=None, **kwargs) -> IKResult:
    """Functional front end of :class:`PinkIK` (one pink problem per robot, kept on the robot)."""
    solver = getattr(robot, "_pink_ik", None)
    if solver is None:
        solver = robot._pink_ik = PinkIK(robot)
    return solver.solve(target, q_init, **kwargs)
