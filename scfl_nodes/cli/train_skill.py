"""``scfl train-skill``: train a residual skill from local demonstrations (paper Appendix C).

Writes a new version into the local skill library and never overwrites an existing
one; retraining a known skill name fine-tunes its latest version into version + 1.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-skill",
        help="train a residual skill from demonstrations into the local skill library",
        description="Train a residual skill (expert - base action) from demonstrations (NPZ, Parquet or rosbag2; "
        "see docs/demonstrations.md) and store it as a new version in the skill library.",
    )
    p.add_argument("--demonstrations", required=True, metavar="DIR", help="directory (or file/bag) of episodes")
    p.add_argument("--skill-name", required=True, metavar="NAME", help="human-readable skill name")
    p.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (default: training.epochs)")
    p.add_argument("--library", metavar="DIR", help="skill library root (default: skill_library.storage_path)")
    p.add_argument("--config", metavar="YAML", help="config file (default: config/scfl.yaml)")
    p.add_argument("--seed", type=int, help="random seed (default: training.seed)")
    p.add_argument("--task", action="append", default=[], metavar="TEXT",
                   help="task description this skill serves (repeatable; also read from the episodes)")
    p.add_argument("--hidden", type=int, help="hidden width of a new skill (default: skill.hidden)")
    p.add_argument("--lr", type=float, help="learning rate (default: training.lr)")
    p.add_argument("--batch-size", type=int, help="batch size (default: training.batch_size)")
    p.add_argument("--val-fraction", type=float, help="validation share of episodes (default: training.val_fraction)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: training.patience)")
    p.add_argument("--from-scratch", action="store_true",
                   help="do not fine-tune the latest version of an existing skill with this name")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _positive(name: str, value, minimum=1):
    from . import CliError

    if value is not None and value < minimum:
        raise CliError(f"{name} must be >= {minimum}, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from . import CliError
    from ..core.config import ConfigError, load_config
    from ..core.training import DemonstrationError, load_demonstrations

    if not args.skill_name.strip():
        raise CliError("--skill-name must not be empty")
    _positive("--epochs", args.epochs)
    _positive("--hidden", args.hidden)
    _positive("--batch-size", args.batch_size)
    _positive("--patience", args.patience)
    _positive("--seed", args.seed, 0)
    if args.lr is not None and args.lr <= 0:
        raise CliError(f"--lr must be > 0, got {args.lr}")
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        raise CliError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        episodes = load_demonstrations(args.demonstrations)
    except DemonstrationError as exc:
        raise CliError(str(exc)) from None

    from ..core.skills import SkillLibrary  # torch: after input checks
    from ..core.training.skill_training import SkillTrainingError, train_skill_into_library

    library = SkillLibrary(args.library or cfg.skill_library.path, max_skills=cfg.skill_library.max_skills)
    try:
        package, path, metrics = train_skill_into_library(
            library, args.skill_name, episodes, cfg, tasks=args.task, epochs=args.epochs, hidden=args.hidden,
            lr=args.lr, batch_size=args.batch_size, val_fraction=args.val_fraction, patience=args.patience,
            seed=args.seed, from_scratch=args.from_scratch, progress=not args.no_progress,
            extra_training={"demonstrations": str(args.demonstrations)},
        )
    except SkillTrainingError as exc:
        msg = str(exc).replace("train it from scratch", "pass --from-scratch")
        raise CliError(msg) from None
    module = package.module
    val = metrics["val_loss"]
    quality = (f"validation MSE {metrics['val_base_mse']:.4g} (base) -> {val:.4g} (base + skill)"
               if val is not None else f"training MSE {metrics['train_loss']:.4g} (no validation split)")
    print(f"skill {package.skill_id} v{package.version} ({module.num_parameters():,} params) saved to {path}")
    print(f"  {len(episodes)} episodes, {metrics['epochs_run']} epochs (best {metrics['best_epoch']}"
          f"{', stopped early' if metrics['stopped_early'] else ''}), {quality}")
    return 0
