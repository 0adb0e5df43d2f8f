"""On-disk skill packages and the versioned local skill library.

A package is a directory with ``weights.safetensors`` and ``manifest.json``. The manifest
records the SHA-256 of the weights file and of its own canonical content, so a flipped
byte in either file is detected on load (:class:`TamperedSkillError`). These hashes give
*integrity* (corruption, naive edits); authenticity across robots comes from the
federation layer's Ed25519 signatures.

The library lays packages out as ``<root>/<skill_id>/v<version>/`` and never
overwrites an existing version: a retrained skill is always a new version whose
``parent_version`` points at the one it came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .module import SkillModule

WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
SKILL_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class SkillPackageError(ValueError):
    """A skill package is missing, malformed or inconsistent."""


class TamperedSkillError(SkillPackageError):
    """Weights or manifest do not match the hashes recorded in the manifest."""


class SkillVersionExistsError(SkillPackageError):
    """Refused to overwrite an existing skill version (or a non-empty directory)."""


class SkillNotFoundError(KeyError):
    """No skill (or version) with that id/name in the library."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "skill not found"


class SkillLibraryFullError(SkillPackageError):
    """Adding a new skill would exceed ``skill_library.max_skills``."""


def slugify_skill_id(name: str) -> str:
    """A filesystem-safe skill id derived from a human name (``"Grasp cube!"`` -> ``grasp_cube``)."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:64]
    if not slug:
        raise SkillPackageError(f"cannot derive a skill id from name {name!r}; pass skill_id explicitly")
    return slug


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclasses.dataclass(frozen=True)
class SkillManifest:
    """Metadata of one skill version (the JSON manifest, without its own hash)."""

    skill_id: str
    name: str
    task_descriptions: tuple[str, ...]
    obs_dim: int
    action_dim: int
    hidden: int
    version: int = 1
    parent_version: int | None = None
    training: dict = dataclasses.field(default_factory=dict)
    created_at: float = dataclasses.field(default_factory=time.time)
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.skill_id, str) or not SKILL_ID_PATTERN.match(self.skill_id):
            raise SkillPackageError(
                f"skill_id {self.skill_id!r} must match {SKILL_ID_PATTERN.pattern} (lower-case, no slashes)"
            )
        if not isinstance(self.name, str) or not self.name.strip():
            raise SkillPackageError("skill name must be a non-empty string")
        if not isinstance(self.version, int) or self.version < 1:
            raise SkillPackageError(f"version must be an integer >= 1, got {self.version!r}")
        if self.parent_version is not None and (
            not isinstance(self.parent_version, int) or not 1 <= self.parent_version < self.version
        ):
            raise SkillPackageError(
                f"parent_version must be None or an integer in [1, version), got {self.parent_version!r}"
            )
        object.__setattr__(self, "task_descriptions", tuple(str(t) for t in self.task_descriptions))

    @property
    def dims(self) -> dict:
        return {"obs_dim": self.obs_dim, "action_dim": self.action_dim, "hidden": self.hidden}

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["task_descriptions"] = list(self.task_descriptions)
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "manifest") -> "SkillManifest":
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {"skill_id", "name", "task_descriptions", "obs_dim", "action_dim", "hidden", "version"}
        missing = sorted(required - set(data))
        if missing:
            raise SkillPackageError(f"{where}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(data) - fields)
        if unknown:
            raise SkillPackageError(f"{where}: unknown field(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SkillPackageError(f"{where}: {exc}") from None


class SkillPackage:
    """A skill module plus its manifest; ``save(dir)`` / ``SkillPackage.load(dir)``."""

    def __init__(self, module: SkillModule, manifest: SkillManifest):
        if module.dims != manifest.dims:
            raise SkillPackageError(f"module dims {module.dims} do not match manifest dims {manifest.dims}")
        self.module = module
        self.manifest = manifest

    @classmethod
    def create(
        cls,
        module: SkillModule,
        name: str,
        task_descriptions: Iterable[str] = (),
        *,
        skill_id: str | None = None,
        version: int = 1,
        parent_version: int | None = None,
        training: dict | None = None,
    ) -> "SkillPackage":
        manifest = SkillManifest(
            skill_id=skill_id or slugify_skill_id(name),
            name=name,
            task_descriptions=tuple(task_descriptions),
            version=version,
            parent_version=parent_version,
            training=dict(training or {}),
            **module.dims,
        )
        return cls(module, manifest)

    def derive(self, module: SkillModule, *, training: dict | None = None, version: int | None = None,
               task_descriptions: Iterable[str] | None = None) -> "SkillPackage":
        """A new version of this skill (``parent_version`` = this version)."""
        return SkillPackage.create(
            module,
            self.manifest.name,
            self.manifest.task_descriptions if task_descriptions is None else task_descriptions,
            skill_id=self.manifest.skill_id,
            version=version or self.manifest.version + 1,
            parent_version=self.manifest.version,
            training=training,
        )

    # convenient read-only views
    skill_id = property(lambda self: self.manifest.skill_id)
    name = property(lambda self: self.manifest.name)
    version = property(lambda self: self.manifest.version)
    task_descriptions = property(lambda self: self.manifest.task_descriptions)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the package into ``directory`` (created; refused if it exists and is not empty)."""
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise SkillVersionExistsError(f"{directory} already exists and is not empty; refusing to overwrite")
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.module.state_dict().items()}
        weights_path = directory / WEIGHTS_FILE
        save_file(tensors, str(weights_path))  # no header metadata: keeps the file (and its hash) deterministic
        manifest = dataclasses.replace(self.manifest, weights_sha256=_sha256_file(weights_path))
        data = manifest.to_dict()
        data["manifest_sha256"] = hashlib.sha256(_canonical(data)).hexdigest()
        (directory / MANIFEST_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        self.manifest = manifest
        return directory

    @classmethod
    def read_manifest(cls, directory: str | os.PathLike) -> SkillManifest:
        """Parse and hash-check ``manifest.json`` (not the weights)."""
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise SkillPackageError(f"{path} does not exist")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TamperedSkillError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise TamperedSkillError(f"{path}: manifest must be a JSON object")
        recorded = data.pop("manifest_sha256", None)
        if recorded is None:
            raise TamperedSkillError(f"{path}: manifest_sha256 is missing")
        if hashlib.sha256(_canonical(data)).hexdigest() != recorded:
            raise TamperedSkillError(f"{path}: manifest content does not match its manifest_sha256")
        return SkillManifest.from_dict(data, where=str(path))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SkillPackage":
        """Load and verify a package; raises :class:`TamperedSkillError` on any hash mismatch."""
        directory = Path(directory)
        manifest = cls.read_manifest(directory)
        weights_path = directory / WEIGHTS_FILE
        if not weights_path.is_file():
            raise SkillPackageError(f"{weights_path} does not exist")
        if _sha256_file(weights_path) != manifest.weights_sha256:
            raise TamperedSkillError(f"{weights_path}: SHA-256 does not match the manifest")
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SkillPackageError(f"{weights_path}: unreadable safetensors file ({exc})") from None
        # packages from before the base gain hold a plain residual MLP (the same function as g = 0)
        module = SkillModule(manifest.obs_dim, manifest.action_dim, manifest.hidden, base_gain="base_gain" in tensors)
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise SkillPackageError(f"{weights_path}: tensors do not fit the manifest dims ({first})") from None
        return cls(module, manifest)


class SkillLibrary:
    """Versioned local skill store: ``<root>/<skill_id>/v<version>/``, never overwritten."""

    def __init__(self, root: str | os.PathLike, max_skills: int | None = None):
        self.root = Path(root)
        self.max_skills = max_skills

    def _skill_dir(self, skill_id: str) -> Path:
        if not SKILL_ID_PATTERN.match(skill_id or ""):
            raise SkillNotFoundError(f"invalid skill id {skill_id!r}")
        return self.root / skill_id

    def skill_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and SKILL_ID_PATTERN.match(p.name)
                      and self.versions(p.name))

    def versions(self, skill_id: str) -> list[int]:
        d = self._skill_dir(skill_id)
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            m = re.fullmatch(r"v(\d+)", p.name)
            if m and p.is_dir() and (p / MANIFEST_FILE).is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def latest_version(self, skill_id: str) -> int | None:
        versions = self.versions(skill_id)
        return versions[-1] if versions else None

    def next_version(self, skill_id: str) -> int:
        return (self.latest_version(skill_id) or 0) + 1

    def path(self, skill_id: str, version: int) -> Path:
        return self._skill_dir(skill_id) / f"v{int(version)}"

    def add(self, package: SkillPackage) -> Path:
        """Store a package; raises :class:`SkillVersionExistsError` if that version exists."""
        skill_id, version = package.skill_id, package.version
        final = self.path(skill_id, version)
        if final.exists():
            raise SkillVersionExistsError(f"skill {skill_id} v{version} already exists at {final}; refusing to overwrite")
        if self.max_skills is not None and skill_id not in self.skill_ids() and len(self.skill_ids()) >= self.max_skills:
            raise SkillLibraryFullError(f"skill library {self.root} already holds max_skills={self.max_skills} skills")
        for existing in self.skill_ids():
            if existing != skill_id:
                continue
            other = self.manifest(existing)
            if other.name != package.name:
                raise SkillPackageError(f"skill id {skill_id} already belongs to skill {other.name!r}")
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=final.parent))
        try:
            package.save(staging)
            try:
                os.rename(staging, final)  # atomic; fails if another writer created a non-empty final
            except OSError:
                raise SkillVersionExistsError(f"skill {skill_id} v{version} appeared concurrently at {final}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return final

    def get(self, skill_id: str, version: int | None = None) -> SkillPackage:
        """Load (and hash-verify) a version; the latest one when ``version`` is None."""
        version = self.latest_version(skill_id) if version is None else version
        if version is None or not (self.path(skill_id, version) / MANIFEST_FILE).is_file():
            raise SkillNotFoundError(f"no skill {skill_id!r}" + (f" version {version}" if version else "") +
                                     f" in {self.root}")
        return SkillPackage.load(self.path(skill_id, version))

    def manifest(self, skill_id: str, version: int | None = None) -> SkillManifest:
        version = self.latest_version(skill_id) if version is None else version
        if version is None:
            raise SkillNotFoundError(f"no skill {skill_id!r} in {self.root}")
        return SkillPackage.read_manifest(self.path(skill_id, version))

    def list(self, all_versions: bool = False) -> list[SkillManifest]:
        """Manifests of the latest version of every skill (or of every version)."""
        out = []
        for skill_id in self.skill_ids():
            versions = self.versions(skill_id) if all_versions else [self.latest_version(skill_id)]
            out.extend(self.manifest(skill_id, v) for v in versions)
        return out

    def find(self, name: str) -> SkillPackage | None:
        """Latest version of the skill called ``name`` (exact, then case-insensitive), or None."""
        manifests = self.list()
        for match in (lambda m: m.name == name, lambda m: m.name.lower() == name.lower()):
            hits = [m for m in manifests if match(m)]
            if hits:
                return self.get(hits[0].skill_id)
        return None

    def __contains__(self, skill_id: str) -> bool:
        try:
            return bool(self.versions(skill_id))
        except SkillNotFoundError:
            return False

    def __len__(self) -> int:
        return len(self.skill_ids())
