"""The model registry: names -> how to load a frozen base model (paper 3.2 ``MODEL_REGISTRY``).

Vendor VLAs (``openvla-7b``, ``pi0-base``) are loaded from a local Hugging Face cache
directory only -- scfl never downloads at run time; fetch them once with
``huggingface-cli download <repo> --local-dir <cache>/<name>`` and point ``vla.cache_dir``
at it. ``scfl-metaworld-base`` is the project's own small base policy shipped in the package.
A path to a directory works too: a Hugging Face checkpoint (``config.json`` with a
``model_type``) or an scfl base policy directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "scfl-base" | "scfl-vision" | "hf-vla"
    hf_repo: str = ""
    trust_remote_code: bool = False
    action_dim: int = 7
    default_unnorm_key: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


MODEL_REGISTRY: dict[str, ModelSpec] = {
    "scfl-metaworld-base": ModelSpec(
        name="scfl-metaworld-base",
        kind="scfl-base",
        action_dim=4,
        description="scfl's frozen language-conditioned Meta-World base policy (shipped, < 100 kB)",
    ),
    "scfl-metaworld-vision": ModelSpec(
        name="scfl-metaworld-vision",
        kind="scfl-vision",
        action_dim=4,
        description="scfl's frozen image-conditioned Meta-World base policy: RGB (+ instruction, + optional proprio) -> action (shipped)",
    ),
    "openvla-7b": ModelSpec(
        name="openvla-7b",
        kind="hf-vla",
        hf_repo="openvla/openvla-7b",
        trust_remote_code=True,
        action_dim=7,
        default_unnorm_key="bridge_orig",
        description="OpenVLA 7B (Prismatic, Llama-2 backbone); 256 action bins per dimension",
    ),
    "pi0-base": ModelSpec(
        name="pi0-base",
        kind="hf-vla",
        hf_repo="physical-intelligence/pi0",
        trust_remote_code=True,
        action_dim=7,
        description="pi0 base (PaliGemma backbone); loaded through transformers remote code",
    ),
}


# Model kinds shipped inside the package (no cache look-up), with their registry names.
SHIPPED_KINDS = {"scfl-base": "scfl-metaworld-base", "scfl-vision": "scfl-metaworld-vision"}


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither registered nor a local checkpoint, or is not in the cache."""


def default_cache_dir() -> Path:
    from scfl_nodes.core.config import expand_path

    return expand_path(os.environ.get("SCFL_MODEL_CACHE", "${SCFL_HOME}/models"))


def local_model_dir(spec: ModelSpec, cache_dir: str | os.PathLike | None) -> Path:
    """Where ``spec`` lives in the local cache; a clear error (naming the cache) when absent.

    Accepted layouts: ``<cache>/<name>``, ``<cache>/<org>--<repo>`` and the Hugging Face hub
    cache ``<cache>/models--<org>--<repo>/snapshots/<rev>``.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    candidates = [cache / spec.name, cache / spec.hf_repo.replace("/", "--")]
    hub = cache / ("models--" + spec.hf_repo.replace("/", "--")) / "snapshots"
    if hub.is_dir():
        candidates += sorted(hub.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if (path / "config.json").is_file():
            return path
    found = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
    raise ModelNotFoundError(
        f"model {spec.name!r} ({spec.hf_repo}) is not in the local cache {cache}; scfl never downloads at run "
        f"time -- fetch it once with `huggingface-cli download {spec.hf_repo} --local-dir {cache / spec.name}`"
        + (f" (the cache holds: {', '.join(found)})" if found else " (the cache is empty or missing)")
    )


def resolve(name_or_path: str, cache_dir=None) -> tuple[ModelSpec, Path | None]:
    """(spec, local directory) for a registered name or a checkpoint directory."""
    if name_or_path in MODEL_REGISTRY:
        spec = MODEL_REGISTRY[name_or_path]
        if spec.kind in SHIPPED_KINDS:
            return spec, None
        return spec, local_model_dir(spec, cache_dir)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("name") in SHIPPED_KINDS.values() or "weights_sha256" in cfg:
            kind = cfg.get("kind", "scfl-base")
            return ModelSpec(name=str(path), kind=kind, action_dim=int(cfg.get("action_dim", 4))), path
        return ModelSpec(name=path.name, kind="hf-vla", trust_remote_code=bool(cfg.get("auto_map")),
                         action_dim=int(cfg.get("scfl_action_dim", 7))), path
    raise ModelNotFoundError(
        f"unknown model {name_or_path!r}: not registered ({', '.join(MODEL_REGISTRY)}) and not a checkpoint directory with config.json"
    )


def load_base_policy(
    name_or_path: str = "scfl-metaworld-base",
    *,
    backend: str = "torch",
    device: str = "cpu",
    dtype=None,
    cache_dir=None,
    **kwargs,
):
    """Load a frozen base model by registry name or local path.

    Returns an object with ``act(obs, instruction) -> (base_action, obs_embedding)``: for the
    scfl base ``obs`` is a Meta-World state batch; for a VLA it is an RGB image batch.
    """
    spec, path = resolve(name_or_path, cache_dir)
    if spec.kind == "scfl-base":
        from .base_policy import load_scfl_base_policy

        return load_scfl_base_policy(path, backend=backend, device=device, dtype=dtype)
    if spec.kind == "scfl-vision":
        from .vision_policy import load_vision_policy

        return load_vision_policy(path, backend=backend, device=device, dtype=dtype)
    from .hf_vla import load_hf_vla

    return load_hf_vla(spec, path, backend=backend, device=device, dtype=dtype, **kwargs)


def list_models() -> list[ModelSpec]:
    return list(MODEL_REGISTRY.values())


def base_policy_from_config(cfg):
    """Load the frozen base named by a validated :class:`scfl_nodes.core.config.VlaConfig`."""
    kwargs = {}
    spec, _ = resolve(cfg.model, cfg.cache_path) if cfg.model not in MODEL_REGISTRY or MODEL_REGISTRY[cfg.model].kind not in SHIPPED_KINDS else (MODEL_REGISTRY[cfg.model], None)
    if spec.kind == "hf-vla" and cfg.unnorm_key:
        kwargs["unnorm_key"] = cfg.unnorm_key
    return load_base_policy(cfg.model, backend=cfg.backend, device=cfg.device, dtype=cfg.dtype, cache_dir=cfg.cache_path, **kwargs)
