"""PNG of a retargeted demo: human hand path, robot end-effector path, joints and residuals."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _equal_axes(ax, points: np.ndarray) -> None:
    """Same scale on x, y, z (a cube around the points) so paths are not distorted."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 0.05) * 1.1
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)


def _approach_axes(ax, poses: np.ndarray, color: str, length: float = 0.04) -> None:
    """Short z-axis arrows (approach direction) every few poses, to show orientation."""
    sel = poses[:: max(1, len(poses) // 8)]
    ax.quiver(*sel[:, :3, 3].T, *(length * sel[:, :3, 2]).T, color=color, linewidth=1)


def plot_retargeting(path, demo, result, robot, object_poses_robot) -> Path:
    """Four panels: human scene (3D), robot scene (3D), joint angles vs limits, residual errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result.timestamps
    fig = plt.figure(figsize=(13, 9))
    ax = fig.add_subplot(2, 2, 1, projection="3d")
    hand = demo.hand_poses[:, :3, 3]
    obj_h = np.broadcast_to(demo.object_pose, (len(demo), 4, 4))[:, :3, 3]
    ax.plot(*hand.T, "o-", ms=2, color="tab:orange", label="hand T_h^w")
    ax.plot(*obj_h.T, "s-", ms=3, color="tab:green", label="object T_o^w")
    ax.scatter(*hand[0], color="k", s=20, label="start")
    _approach_axes(ax, demo.hand_poses, "tab:orange")
    _equal_axes(ax, np.vstack([hand, obj_h]))
    ax.set_title("human scene")
    ax.set_xlabel("x [m]"), ax.set_ylabel("y [m]"), ax.set_zlabel("z [m]")
    ax.legend(loc="upper left", fontsize=8)

    ax = fig.add_subplot(2, 2, 2, projection="3d")
    tgt = result.targets[:, :3, 3]
    ach = result.achieved[:, :3, 3]
    obj_r = np.broadcast_to(object_poses_robot, (len(t), 4, 4))[:, :3, 3]
    ax.plot(*tgt.T, "o-", ms=2, color="tab:orange", label="target T_ee")
    ax.plot(*ach.T, "-", lw=2, color="tab:blue", alpha=0.7, label="robot FK(q)")
    ax.plot(*obj_r.T, "s-", ms=3, color="tab:green", label="object T_o^w'")
    bad = result.unreachable_indices
    if bad.size:
        ax.scatter(*tgt[bad].T, color="red", s=30, marker="x", label="unreachable")
    ax.scatter(0, 0, 0, color="k", marker="^", s=40, label="robot base")
    _approach_axes(ax, result.achieved, "tab:blue")
    _equal_axes(ax, np.vstack([tgt, obj_r, np.zeros((1, 3))]))
    ax.set_title(f"robot scene ({robot.name}, {robot.ee_frame})")
    ax.set_xlabel("x [m]"), ax.set_ylabel("y [m]"), ax.set_zlabel("z [m]")
    ax.legend(loc="upper left", fontsize=8)

    ax = fig.add_subplot(2, 2, 3)
    span = robot.upper - robot.lower
    for j, name in enumerate(robot.joint_names):
        ax.plot(t, (result.q[:, j] - robot.lower[j]) / span[j], label=name)
    ax.axhline(0, color="k", lw=0.8), ax.axhline(1, color="k", lw=0.8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("joint positions (0 = lower limit, 1 = upper limit)")
    ax.set_xlabel("time [s]")
    ax.legend(fontsize=7, ncol=2)

    ax = fig.add_subplot(2, 2, 4)
    ax.semilogy(t, np.maximum(result.position_error * 1e3, 1e-6), "o-", ms=3, label="position [mm]")
    ax.semilogy(t, np.maximum(np.degrees(result.orientation_error), 1e-6), "s-", ms=3, label="orientation [deg]")
    ax.axhline(1.0, color="r", ls="--", lw=1, label="tolerance 1 mm / 1 deg")
    for i in bad:
        ax.axvline(t[i], color="red", alpha=0.2)
    ax.set_title(f"IK residual per waypoint ({len(t) - bad.size}/{len(t)} reachable)")
    ax.set_xlabel("time [s]")
    ax.legend(fontsize=8)
    fig.suptitle(f"object-centric retargeting: {demo.task or 'human demo'}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
