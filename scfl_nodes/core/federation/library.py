"""A robot's skill library as the federation client's update store (what federation_bridge_node uses).

A request is ``{"skill_id", "version"}``: a locally trained library version whose manifest's
``parent_version`` is the version it was trained from. The parent's manifest records the
cloud version(s) it corresponds to (``training.cloud_versions``; 0 = the shared
initialisation), the local version's manifest its training sample count (``training.samples``,
or ``train_steps + val_steps`` as ``scfl train-skill`` writes them) and, for EDA, its
expert-activation statistics (``training.activation``; default: one slot). An installed
aggregate is a new version whose parent is that same parent version.
"""

from __future__ import annotations

import numpy as np

from .client import LocalUpdate, UpdateStore


def training_samples(training: dict) -> int | None:
    """Training sample count recorded in a manifest (None when the trainer did not record one)."""
    if training.get("samples") is not None:
        return int(training["samples"])
    if training.get("train_steps") is not None:
        return int(training["train_steps"]) + int(training.get("val_steps") or 0)
    return None


class SkillLibraryStore(UpdateStore):
    def __init__(self, library):
        self.library = library

    def local_update(self, request: dict) -> LocalUpdate:
        from scfl_nodes.core.skills import skill_state_to_numpy

        skill_id, version = request["skill_id"], int(request["version"])
        local = self.library.get(skill_id, version)
        parent_version = local.manifest.parent_version
        if parent_version is None:
            raise ValueError(f"{skill_id} v{version} has no parent_version: nothing to compute a delta against")
        parent = self.library.get(skill_id, parent_version)
        ptrain = parent.manifest.training
        cloud_versions = dict(ptrain.get("cloud_versions") or {})
        if not cloud_versions and ptrain.get("cloud_version"):
            cloud_versions = {skill_id: int(ptrain["cloud_version"])}
        activation = local.manifest.training.get("activation")
        return LocalUpdate(
            skill_id,
            skill_state_to_numpy(parent.module),
            skill_state_to_numpy(local.module),
            num_samples=training_samples(local.manifest.training),
            activation=np.asarray(activation if activation is not None else [1.0], dtype=np.float64),
            cloud_versions=cloud_versions,
        )

    def install(self, request: dict, state: dict, info: dict) -> dict:
        from scfl_nodes.core.skills import load_numpy_state

        skill_id, version = request["skill_id"], int(request["version"])
        parent = self.library.get(skill_id, self.library.get(skill_id, version).manifest.parent_version)
        module = load_numpy_state(parent.module, state)
        published = {k: int(v) for k, v in info["published_versions"].items() if v is not None}
        main_round = info["rounds"].get(skill_id, max(info["rounds"].values()))
        training = {
            "federated_round": int(main_round),
            "federated_rounds": info["rounds"],
            "contributors": int(max(info["contributors"].values())),
            "strategy": info["strategy"],
            "cloud_version": published.get(skill_id),
            "cloud_versions": published,
            "local_version": version,
        }
        pkg = parent.derive(module, version=self.library.next_version(skill_id), training=training)
        path = self.library.add(pkg)
        return {"version": pkg.version, "path": str(path)}
