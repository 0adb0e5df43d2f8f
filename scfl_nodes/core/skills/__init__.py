"""Residual skills (paper 3.3): modules, batched composition, packages and the local library."""

from .composer import SkillComposer, compose_actions
from .module import MAX_SKILL_PARAMS, SkillModule, load_numpy_state, skill_param_count, skill_state_to_numpy
from .package import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    SkillLibrary,
    SkillLibraryFullError,
    SkillManifest,
    SkillNotFoundError,
    SkillPackage,
    SkillPackageError,
    SkillVersionExistsError,
    TamperedSkillError,
    slugify_skill_id,
)

__all__ = [
    "MANIFEST_FILE",
    "MAX_SKILL_PARAMS",
    "WEIGHTS_FILE",
    "SkillComposer",
    "SkillLibrary",
    "SkillLibraryFullError",
    "SkillManifest",
    "SkillModule",
    "SkillNotFoundError",
    "SkillPackage",
    "SkillPackageError",
    "SkillVersionExistsError",
    "TamperedSkillError",
    "compose_actions",
    "load_numpy_state",
    "skill_param_count",
    "skill_state_to_numpy",
    "slugify_skill_id",
]
