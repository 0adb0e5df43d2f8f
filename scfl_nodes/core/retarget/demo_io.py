"""Human demonstration input (npz) and robot demonstration output (the project's episode format).

Human demo ``.npz`` (one demonstration per file):
  - ``hand_poses``  float (T, 4, 4)       T_h^w, hand pose in the human scene's world frame
  - ``object_pose`` float (4, 4) or (T, 4, 4)  T_o^w, object pose in the human scene
  - ``timestamp``   float (T,) seconds, optional (default 0.1 s spacing), strictly increasing
  - ``gripper``     float (T,) in [0, 1], optional (0 open, 1 closed; default 0)
  - ``task``        0-d string, optional (task description)

Robot demo ``.npz`` (docs/demonstrations.md, read by ``scfl train-skill``): ``observation``,
``base_action``, ``expert_action`` (float32), ``timestamp``, ``task``, plus retargeting extras
(``joint_positions``, ``ee_targets``, ``position_error``, ``orientation_error``, ``reachable``,
``q_gmr``, ``object_pose``, ``joint_names``) that the reader ignores.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from .transforms import TransformError, pose_to_xyz_quat, validate_poses


class DemoFormatError(ValueError):
    """A human demonstration file is missing, unreadable or malformed."""


@dataclasses.dataclass
class HumanDemo:
    hand_poses: np.ndarray  # (T, 4, 4)
    object_pose: np.ndarray  # (1, 4, 4) or (T, 4, 4)
    timestamps: np.ndarray  # (T,)
    gripper: np.ndarray  # (T,)
    task: str = ""

    def __len__(self) -> int:
        return self.hand_poses.shape[0]


def make_human_demo(hand_poses, object_pose, timestamps=None, gripper=None, task: str = "", default_dt: float = 0.1) -> HumanDemo:
    """Validate arrays into a :class:`HumanDemo` (DemoFormatError names the offending field)."""
    try:
        hand = validate_poses(hand_poses, "hand_poses")
        obj = validate_poses(object_pose, "object_pose")
    except TransformError as exc:
        raise DemoFormatError(str(exc)) from None
    n = hand.shape[0]
    if obj.shape[0] not in (1, n):
        raise DemoFormatError(f"object_pose has {obj.shape[0]} poses, expected 1 or {n} (one per hand pose)")
    ts = np.arange(n) * default_dt if timestamps is None else np.asarray(timestamps, dtype=float).reshape(-1)
    if ts.shape != (n,) or not np.isfinite(ts).all() or (np.diff(ts) <= 0).any():
        raise DemoFormatError(f"timestamp must be {n} finite, strictly increasing seconds")
    grip = np.zeros(n) if gripper is None else np.asarray(gripper, dtype=float).reshape(-1)
    if grip.shape != (n,) or not np.isfinite(grip).all() or grip.min() < 0 or grip.max() > 1:
        raise DemoFormatError(f"gripper must be {n} finite values in [0, 1]")
    return HumanDemo(hand, obj, ts, grip, str(task))


def load_human_demo(path) -> HumanDemo:
    path = Path(path)
    if not path.is_file():
        raise DemoFormatError(f"human demo {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DemoFormatError(f"{path} is not a readable .npz file ({exc})") from None
    missing = [k for k in ("hand_poses", "object_pose") if k not in data]
    if missing:
        raise DemoFormatError(f"{path}: missing array(s) {', '.join(missing)} (see docs/retargeting.md)")
    task = str(data["task"]) if "task" in data else ""
    try:
        return make_human_demo(data["hand_poses"], data["object_pose"], data.get("timestamp"), data.get("gripper"), task)
    except DemoFormatError as exc:
        raise DemoFormatError(f"{path}: {exc}") from None


def save_human_demo(path, demo: HumanDemo) -> Path:
    path = Path(path)
    np.savez(path, hand_poses=demo.hand_poses, object_pose=demo.object_pose, timestamp=demo.timestamps,
             gripper=demo.gripper, task=np.array(demo.task))
    return path


def synthetic_pick_demo(n: int = 40, dt: float = 0.1, seed: int = 0) -> HumanDemo:
    """A small human pick-and-lift demo: the hand comes from above and behind, grasps the object
    (gripper closes) and lifts it 15 cm; the object moves with the hand after the grasp.

    Hand frame convention: z is the approach direction (out of the palm), like panda_hand_tcp.
    """
    rng = np.random.default_rng(seed)
    obj0 = np.eye(4)
    obj0[:3, :3] = Rotation.from_euler("z", rng.uniform(-0.5, 0.5)).as_matrix()
    obj0[:3, 3] = [0.35 + rng.uniform(-0.05, 0.05), -0.2 + rng.uniform(-0.05, 0.05), 0.76]  # on a table
    grasp = np.eye(4)  # hand in object frame at the grasp: palm down, 2 cm above the centre
    grasp[:3, :3] = Rotation.from_euler("x", np.pi).as_matrix()
    grasp[:3, 3] = [0.0, 0.0, 0.02]
    n_approach, n_close = int(0.5 * n), int(0.15 * n)
    n_lift = n - n_approach - n_close
    hands, objects, grip = [], [], []
    for i in range(n_approach):  # straight-line approach from 25 cm above, 10 cm behind, wrist turning
        s = (i + 1) / n_approach
        rel = grasp.copy()
        rel[:3, 3] += (1 - s) * np.array([-0.10, 0.0, 0.0]) + (1 - s) * np.array([0, 0, 0.25])
        rel[:3, :3] = rel[:3, :3] @ Rotation.from_euler("z", 0.4 * (1 - s)).as_matrix()
        hands.append(obj0 @ rel), objects.append(obj0), grip.append(0.0)
    for i in range(n_close):
        hands.append(obj0 @ grasp), objects.append(obj0), grip.append((i + 1) / n_close)
    for i in range(n_lift):  # object rigidly attached to the hand while lifting
        lift = np.eye(4)
        lift[2, 3] = 0.15 * (i + 1) / n_lift
        obj = lift @ obj0
        hands.append(obj @ grasp), objects.append(obj), grip.append(1.0)
    return make_human_demo(np.array(hands), np.array(objects), np.arange(n) * dt, np.array(grip),
                           "pick up the block and lift it")


def robot_demo_arrays(result, gripper: np.ndarray, object_poses_robot: np.ndarray, joint_names, task: str = "") -> dict:
    """Episode arrays for ``scfl train-skill`` from a retargeted trajectory.

    observation = [q (n), ee position (3), ee quaternion wxyz (4), object position (3), object
    quaternion (4)]; expert_action = [q_{t+1} − q_t (n), gripper (1)] (zero joint motion at the
    last step); base_action = zeros (no base policy runs during offline retargeting, so a skill
    trained on this demo learns the whole action as its residual).
    """
    q = result.q
    n_way = q.shape[0]
    obj = np.broadcast_to(object_poses_robot, (n_way, 4, 4))
    observation = np.hstack([q, pose_to_xyz_quat(result.achieved), pose_to_xyz_quat(obj)]).astype(np.float32)
    dq = np.vstack([np.diff(q, axis=0), np.zeros((1, q.shape[1]))])
    expert = np.hstack([dq, np.asarray(gripper, dtype=float).reshape(-1, 1)]).astype(np.float32)
    return {
        "observation": observation,
        "base_action": np.zeros_like(expert),
        "expert_action": expert,
        "timestamp": np.asarray(result.timestamps, dtype=np.float64),
        "task": np.array(task),
        "joint_positions": q,
        "joint_names": np.array(list(joint_names)),
        "ee_targets": result.targets,
        "object_pose": np.array(obj),
        "position_error": result.position_error,
        "orientation_error": result.orientation_error,
        "reachable": result.reachable,
        **({"q_gmr": result.q_prior} if result.q_prior is not None else {}),
    }


def save_robot_demo(path, arrays: dict, overwrite: bool = False) -> Path:
    """Write the episode atomically (temp file + rename); refuses to overwrite unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
