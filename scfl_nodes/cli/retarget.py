"""`scfl retarget`: human demo (hand + object poses) -> robot demonstration episode (+ PNG plot)."""

from __future__ import annotations

import argparse

from . import CliError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "retarget",
        help="retarget a human demo to the robot (object-centric + IK with a GMR posture prior)",
        description="Object-centric retargeting (paper 5): keeps the hand pose relative to the object, "
        "solves IK (Pinocchio DLS or pink QP) with a Gaussian Mixture Regression posture prior, and writes "
        "a robot demonstration episode that `scfl train-skill` reads. See docs/retargeting.md.",
    )
    p.add_argument("--demo", help="human demo .npz (hand_poses (T,4,4), object_pose (4,4)|(T,4,4), ...)")
    p.add_argument("--object-pose", help="object pose in the robot scene (robot base frame): 'x,y,z', "
                   "'x,y,z,roll,pitch,yaw' (rad), 'x,y,z,qw,qx,qy,qz', or a .npy file holding a 4x4 matrix; write --object-pose=-0.1,... "
                   "when the first number is negative")
    p.add_argument("--out", help="output robot demo .npz (the project's episode format)")
    p.add_argument("--plot", help="write a PNG of human and robot trajectories here")
    p.add_argument("--solver", choices=["dls", "qp"], help="IK solver (default: config retarget.solver)")
    p.add_argument("--robot", help="robot name (panda, panda-erd) or URDF path (default: config retarget.robot)")
    p.add_argument("--prior", help="fitted GMR posture prior .npz (default: config, else the built-in prior)")
    p.add_argument("--config", help="scfl config YAML (default: config/scfl.yaml)")
    p.add_argument("--allow-unreachable", action="store_true",
                   help="write the demo even if some waypoints are unreachable (they are flagged in 'reachable')")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--write-example-demo", metavar="FILE",
                   help="write a small synthetic human pick demo to FILE and exit (to try the command)")
    p.add_argument("--fit-prior", nargs="+", metavar="DEMO",
                   help="instead of retargeting: fit a GMR posture prior on robot demos (.npz files or "
                        "directories of them, from earlier runs) and write it to --out (use it with --prior)")
    p.add_argument("--components", type=int, default=None, help="Gaussians for --fit-prior (default: config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _parse_object_pose(text: str):
    import numpy as np

    from scfl_nodes.core.retarget.transforms import TransformError, pose_from_xyz_rpy, validate_poses

    if text.endswith(".npy"):
        try:
            arr = np.load(text, allow_pickle=False)
            return validate_poses(arr, "--object-pose")[0] if arr.shape == (4, 4) else validate_poses(arr, "--object-pose")
        except FileNotFoundError:
            raise CliError(f"--object-pose file {text} does not exist") from None
        except (ValueError, TransformError) as exc:
            raise CliError(f"--object-pose {text}: {exc}") from None
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise CliError(f"--object-pose must be numbers separated by commas, got {text!r}") from None
    try:
        return pose_from_xyz_rpy(values)
    except TransformError as exc:
        raise CliError(f"--object-pose: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scfl_nodes.core.config import ConfigError, load_config
    from scfl_nodes.core.retarget import (DemoFormatError, PosturePriorError, Retargeter, RobotModelError,
                                          TransformError, load_human_demo, save_human_demo, synthetic_pick_demo)
    from scfl_nodes.core.retarget.demo_io import save_robot_demo
    from scfl_nodes.core.retarget.plot import plot_retargeting

    if args.write_example_demo:
        path = Path(args.write_example_demo)
        if path.exists() and not args.force:
            raise CliError(f"{path} already exists (pass --force to overwrite)")
        save_human_demo(path, synthetic_pick_demo())
        print(f"wrote example human demo {path} (try: scfl retarget --demo {path} --object-pose 0.5,0,0.05 --out robot_demo.npz)")
        return 0
    if args.fit_prior:
        return _fit_prior(args)
    for flag in ("demo", "object_pose", "out"):
        if not getattr(args, flag):
            raise CliError(f"--{flag.replace('_', '-')} is required")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise CliError(f"--out must end in .npz, got {out}")
    if out.exists() and not args.force:
        raise CliError(f"{out} already exists (pass --force to overwrite)")
    try:
        cfg = load_config(args.config).retarget
        demo = load_human_demo(args.demo)
        object_pose = _parse_object_pose(args.object_pose)
        retargeter = Retargeter.from_config(cfg, solver=args.solver, robot=args.robot, prior_path=args.prior)
        result, arrays = retargeter.retarget_demo(demo, object_pose, progress=not args.no_progress)
    except (ConfigError, DemoFormatError, TransformError, RobotModelError, PosturePriorError) as exc:
        raise CliError(str(exc)) from None
    print(f"{retargeter.solver.upper()} IK on {retargeter.robot.name}: {result.summary()}")
    if args.plot:
        plot = plot_retargeting(args.plot, demo, result, retargeter.robot, arrays["object_pose"])
        print(f"wrote plot {plot}")
    if not result.all_reachable and not args.allow_unreachable:
        raise CliError(f"{result.unreachable_indices.size} of {len(result.q)} waypoints are unreachable; "
                       "nothing written (move --object-pose closer to the robot, or pass --allow-unreachable)")
    save_robot_demo(out, arrays, overwrite=args.force)
    print(f"wrote robot demo {out} (observation {arrays['observation'].shape}, expert_action {arrays['expert_action'].shape})")
    return 0


def _fit_prior(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scfl_nodes.core.config import ConfigError, load_config
    from scfl_nodes.core.retarget import PosturePriorError, RobotModelError, load_robot
    from scfl_nodes.core.retarget.posture_prior import fit_prior_from_robot_demos

    if not args.out:
        raise CliError("--out is required (where to write the prior .npz)")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise CliError(f"--out must end in .npz, got {out}")
    if out.exists() and not args.force:
        raise CliError(f"{out} already exists (pass --force to overwrite)")
    files = []
    for item in args.fit_prior:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(path.glob("*.npz")))
        elif path.is_file():
            files.append(path)
        else:
            raise CliError(f"{path} does not exist")
    if not files:
        raise CliError("no .npz robot demos found in " + ", ".join(args.fit_prior))
    try:
        cfg = load_config(args.config).retarget
        robot = load_robot(args.robot or cfg.robot, cfg.ee_frame or None, cfg.locked_joints or None)
        prior = fit_prior_from_robot_demos(files, robot, n_components=args.components or cfg.prior_components,
                                           seed=cfg.seed)
    except (ConfigError, RobotModelError, PosturePriorError) as exc:
        raise CliError(str(exc)) from None
    prior.save(out)
    print(f"fitted a {prior.gmm.n_components}-component GMR posture prior on {len(files)} demo(s); wrote {out}")
    return 0
