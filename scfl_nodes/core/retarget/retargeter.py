"""The paper's ``Retargeter`` (section 5): human demo -> robot joint trajectory, built from config."""

from __future__ import annotations

import math

import numpy as np

from .demo_io import HumanDemo, robot_demo_arrays
from .ik_types import IKSettings
from .posture_prior import PosturePrior, default_prior
from .robot import RobotModel, load_robot
from .trajectory import TrajectoryResult, solve_trajectory
from .transforms import object_trajectory_in_robot_scene, pose_from_xyz_rpy, retarget_poses, validate_poses


def settings_from_config(cfg) -> IKSettings:
    """IKSettings from a ``RetargetConfig`` section."""
    return IKSettings(
        damping=cfg.damping,
        max_iterations=cfg.max_iterations,
        restarts=cfg.restarts,
        posture_weight=cfg.posture_weight,
        position_tolerance=cfg.position_tolerance,
        orientation_tolerance=math.radians(cfg.orientation_tolerance_deg),
    )


class Retargeter:
    """Object-centric retargeting (T_ee = T_o^w' · T_h^o) followed by IK with a GMR posture prior."""

    def __init__(self, robot: RobotModel, *, prior: PosturePrior | None = None, solver: str = "dls",
                 settings: IKSettings = IKSettings(), hand_to_gripper=None, max_joint_velocity: float | None = 1.0,
                 default_dt: float = 0.1, seed: int = 0):
        self.robot = robot
        self.prior = prior
        self.solver = solver
        self.settings = settings
        self.hand_to_gripper = None if hand_to_gripper is None else validate_poses(hand_to_gripper, "hand_to_gripper")[0]
        self.max_joint_velocity = max_joint_velocity
        self.default_dt = default_dt
        self.seed = seed

    @classmethod
    def from_config(cls, cfg, *, solver: str | None = None, robot: str | None = None, prior_path: str | None = None) -> "Retargeter":
        """Build from a ``RetargetConfig``; ``solver``/``robot``/``prior_path`` override it."""
        model = load_robot(robot or cfg.robot, cfg.ee_frame or None, cfg.locked_joints or None)
        prior_file = prior_path if prior_path is not None else cfg.posture_prior
        if cfg.posture_weight <= 0:
            prior = None
        elif prior_file:
            prior = PosturePrior.load(prior_file, model)
        else:
            prior = default_prior(model, n_components=cfg.prior_components, seed=cfg.seed)
        offset = pose_from_xyz_rpy(cfg.hand_to_gripper)
        return cls(model, prior=prior, solver=solver or cfg.solver, settings=settings_from_config(cfg),
                   hand_to_gripper=None if np.allclose(offset, np.eye(4)) else offset,
                   max_joint_velocity=cfg.max_joint_velocity, default_dt=cfg.default_dt, seed=cfg.seed)

    def ee_targets(self, hand_poses, object_pose_human, object_pose_robot) -> np.ndarray:
        return retarget_poses(hand_poses, object_pose_human, object_pose_robot, self.hand_to_gripper)

    def human_to_robot(self, hand_poses, object_pose_human, object_pose_robot, timestamps=None,
                       q_start=None, progress: bool = False) -> TrajectoryResult:
        """Joint trajectory whose end effector keeps the human hand's pose relative to the object."""
        targets = self.ee_targets(hand_poses, object_pose_human, object_pose_robot)
        return solve_trajectory(self.robot, targets, solver=self.solver, settings=self.settings, prior=self.prior,
                                q_start=q_start, timestamps=timestamps, default_dt=self.default_dt,
                                max_joint_velocity=self.max_joint_velocity, seed=self.seed, progress=progress)

    def retarget_demo(self, demo: HumanDemo, object_pose_robot, progress: bool = False) -> tuple[TrajectoryResult, dict]:
        """Retarget a whole human demo; returns the IK result and the robot episode arrays."""
        result = self.human_to_robot(demo.hand_poses, demo.object_pose, object_pose_robot, demo.timestamps, progress=progress)
        objects = object_trajectory_in_robot_scene(demo.object_pose, object_pose_robot)
        arrays = robot_demo_arrays(result, demo.gripper, objects, self.robot.joint_names, demo.task)
        return result, arrays
