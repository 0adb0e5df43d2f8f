"""Train a residual skill from demonstrations into the local skill library: the one code path of
``scfl train-skill`` and trainer_node's ``TrainSkill`` action.

A known skill (by id or name) is fine-tuned from its newest version into version + 1
(``parent_version`` = that version, which is what the federation bridge computes the delta
against); an unknown name creates version 1. Nothing is written unless training finishes.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .demonstrations import DemonstrationError, Episode, episodes_task_descriptions


class SkillTrainingError(ValueError):
    """The request cannot be trained (dims clash with the existing skill, no data, ...)."""


def find_skill(library, skill: str):
    """The newest version of the skill with this id or name, or None."""
    if skill in library:
        return library.get(skill)
    return library.find(skill)


def train_skill_into_library(
    library,
    skill: str,
    episodes: Sequence[Episode],
    cfg,
    *,
    tasks: Sequence[str] = (),
    epochs: int | None = None,
    hidden: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    val_fraction: float | None = None,
    patience: int | None = None,
    seed: int | None = None,
    from_scratch: bool = False,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    extra_training: dict | None = None,
):
    """Train and add a new version; returns ``(package, path, metrics)``.

    ``cfg`` is the loaded scfl config (``training`` and ``skill`` sections give the defaults).
    """
    from ..skills import SkillPackage, SkillPackageError
    from .residual import train_residual_skill

    if not skill.strip():
        raise SkillTrainingError("the skill name must not be empty")
    if not episodes:
        raise DemonstrationError("no demonstration episodes to train on")
    try:
        existing = find_skill(library, skill)
    except SkillPackageError as exc:
        raise SkillTrainingError(f"skill library {library.root}: {exc}") from None
    obs_dim, action_dim = episodes[0].obs_dim, episodes[0].action_dim
    init_module = None
    if existing is not None and not from_scratch:
        if existing.module.dims["obs_dim"] != obs_dim or existing.module.dims["action_dim"] != action_dim:
            raise SkillTrainingError(
                f"skill {existing.skill_id!r} v{existing.version} has obs_dim={existing.manifest.obs_dim}, "
                f"action_dim={existing.manifest.action_dim} but the demonstrations have {obs_dim}, {action_dim}; "
                "train it from scratch to get a new version with the new dims"
            )
        init_module = existing.module
    tasks = list(dict.fromkeys(
        [t for t in tasks if t] + episodes_task_descriptions(episodes)
        + list(existing.task_descriptions if existing else [])
    )) or [skill]
    tr = cfg.training
    module, metrics = train_residual_skill(
        episodes, obs_dim, action_dim, hidden or cfg.skill.hidden,
        epochs=epochs or tr.epochs,
        lr=lr or tr.lr,
        batch_size=batch_size or tr.batch_size,
        val_fraction=tr.val_fraction if val_fraction is None else val_fraction,
        patience=patience or tr.patience,
        seed=tr.seed if seed is None else seed,
        weight_decay=tr.weight_decay,
        init_module=init_module,
        progress=progress,
        on_epoch=on_epoch,
    )
    training = {k: v for k, v in metrics.items() if k != "history"}
    training["samples"] = int(metrics["train_steps"] + metrics["val_steps"])  # n_k of sample-weighted FedAvg
    training.update(extra_training or {})
    try:
        if existing is not None:
            package = existing.derive(module, training=training, version=library.next_version(existing.skill_id),
                                      task_descriptions=tasks)
        else:
            package = SkillPackage.create(module, skill, tasks, training=training)
            if package.skill_id in library:
                package = SkillPackage.create(module, skill, tasks, training=training,
                                              version=library.next_version(package.skill_id))
        path = library.add(package)
    except SkillPackageError as exc:
        raise SkillTrainingError(str(exc)) from None
    return package, path, metrics
