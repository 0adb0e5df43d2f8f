"""Object-centric retargeting (paper 5, OKAMI-style) with Pinocchio IK and a GMR posture prior.

GMR = Gaussian Mixture Regression (the ``gmr`` package), not "General Motion Retargeting".
Modules: transforms (T_h^o, T_ee), robot (URDF + end-effector frame), ik_dls / ik_qp (solvers),
solve (``solve_ik`` entry point), trajectory (warm start, velocity limits, residuals),
posture_prior (GMR), demo_io (human demo in, robot episode out), retargeter (the pipeline).
"""

from .demo_io import DemoFormatError, HumanDemo, load_human_demo, make_human_demo, save_human_demo, synthetic_pick_demo
from .ik_types import IKResult, IKSettings
from .posture_prior import PosturePrior, PosturePriorError, default_prior
from .retargeter import Retargeter, settings_from_config
from .robot import RobotModel, RobotModelError, load_robot
from .solve import SOLVERS, solve_ik
from .trajectory import TrajectoryResult, solve_trajectory
from .transforms import TransformError, ee_targets, hand_in_object, retarget_poses

__all__ = [
    "DemoFormatError", "HumanDemo", "IKResult", "IKSettings", "PosturePrior", "PosturePriorError", "Retargeter",
    "RobotModel", "RobotModelError", "SOLVERS", "TrajectoryResult", "TransformError", "default_prior", "ee_targets",
    "hand_in_object", "load_human_demo", "load_robot", "make_human_demo", "retarget_poses", "save_human_demo",
    "settings_from_config", "solve_ik", "solve_trajectory", "synthetic_pick_demo",
]
