"""Arm commands from scfl actions (no ROS): action -> end-effector delta -> IK joint targets.

Modules: action_map (what an action vector means: Meta-World's 3-D end-effector delta +
gripper, scaled and rotated into the robot base frame), gripper (the URDF's gripper joints and
their limits), arm_command (``ArmCommander``: Pinocchio IK from the measured joint state to
joint targets that respect the URDF's position and velocity limits).
"""

from .action_map import ActionMapping, InvalidActionError
from .arm_command import ArmCommand, ArmCommander, JointStateError, joint_positions_by_name
from .gripper import GripperJoint, gripper_joints_from_urdf

__all__ = [
    "ActionMapping", "ArmCommand", "ArmCommander", "GripperJoint", "InvalidActionError", "JointStateError",
    "gripper_joints_from_urdf", "joint_positions_by_name",
]
