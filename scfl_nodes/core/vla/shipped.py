"""What the project's own shipped base policies share: a frozen torch network saved as
safetensors + ONNX + config.json with the sha256 of every file and of the parameters.

``scfl-metaworld-base`` (state) and ``scfl-metaworld-vision`` (pixels) differ only in their
network and inputs; saving, integrity-checked loading, backend choice, the instruction
cache and the frozen-weights checks live here once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .interface import BasePolicy

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ONNX_FILE = "model.onnx"


class ModelIntegrityError(ValueError):
    """A frozen model's files or parameters do not match their recorded sha256."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """Hash of every parameter and buffer (name, dtype, shape, bytes): detects any change."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_shipped(net: nn.Module, directory: str | Path, name: str, instruction_cache: dict[str, np.ndarray],
                 export: Callable[[nn.Module, Path], Any], meta: dict[str, Any]) -> Path:
    """Write weights (+ the instruction cache) as safetensors, the ONNX export (``export(net,
    path)``) and config.json = ``meta`` + name, instructions and every sha256."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    names = sorted(instruction_cache)
    tensors["instruction_cache"] = torch.as_tensor(np.stack([instruction_cache[n] for n in names]))
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"name": name})
    export(net, directory / ONNX_FILE)
    full = {
        "name": name,
        **meta,
        "instructions": names,
        "weights_sha256": file_sha256(directory / WEIGHTS_FILE),
        "onnx_sha256": file_sha256(directory / ONNX_FILE),
        "parameters_sha256": state_dict_sha256(net),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(full, indent=2) + "\n")
    return directory


def load_shipped(directory: Path, *, what: str, train_script: str, make_net: Callable[[dict], nn.Module],
                 input_names: list[str], backend: str, device: str, dtype=None):
    """(meta, net, runner, instruction_cache) of a shipped policy; every sha256 is checked."""
    from safetensors.torch import load_file

    from .backends import BACKENDS, OnnxRuntimeRunner, TensorRTRunner, TorchRunner

    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {what} at {directory} ({CONFIG_FILE} missing); train one with {train_script}")
    meta = json.loads(cfg_path.read_text())
    weights = directory / WEIGHTS_FILE
    if file_sha256(weights) != meta["weights_sha256"]:
        raise ModelIntegrityError(f"{weights}: sha256 does not match {cfg_path} (corrupted or modified weights)")
    tensors = load_file(str(weights))
    cache_tensor = tensors.pop("instruction_cache")
    instruction_cache = {n: cache_tensor[i].numpy() for i, n in enumerate(meta["instructions"])}
    net = make_net(meta)
    net.load_state_dict(tensors)
    net.eval().requires_grad_(False)
    if state_dict_sha256(net) != meta["parameters_sha256"]:
        raise ModelIntegrityError(f"{directory}: loaded parameters do not match the recorded parameters_sha256")
    if backend == "torch":
        runner = TorchRunner(net, input_names, device=device, dtype=dtype)
    elif backend in ("onnxruntime", "tensorrt"):
        onnx_path = directory / ONNX_FILE
        if file_sha256(onnx_path) != meta["onnx_sha256"]:
            raise ModelIntegrityError(f"{onnx_path}: sha256 does not match {cfg_path}")
        runner = OnnxRuntimeRunner(onnx_path, device=device) if backend == "onnxruntime" else TensorRTRunner(onnx_path)
    else:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    return meta, net, runner, instruction_cache


def torch_reference_runner(net: nn.Module, input_names: list[str]):
    """A CPU fp32 torch runner of ``net`` (the reference side of ONNX parity checks)."""
    from .backends import TorchRunner

    return TorchRunner(net, input_names)


class ShippedPolicy(BasePolicy):
    """A shipped frozen policy behind a backend runner: the instruction cache and the
    frozen-weights checks every shipped policy has. Subclasses add inputs and ``predict``."""

    def __init__(self, directory: Path, meta: dict[str, Any], net: nn.Module, runner, instruction_cache):
        self.directory = directory
        self.meta = meta
        self.name = meta["name"]
        self.obs_dim = int(meta["obs_dim"])
        self.action_dim = int(meta["action_dim"])
        self.state_dim = int(meta["state_dim"])
        self.backend = runner.name
        self._net = net  # the torch module (kept for hashing, export and parity checks)
        self._runner = runner
        self._instruction_cache = dict(instruction_cache)
        self.weights_sha256 = meta["weights_sha256"]

    def instruction_embedding(self, instructions: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(instructions) if t not in self._instruction_cache]
        if missing:
            from .text import encode_instructions

            for text, vec in zip(missing, encode_instructions(missing)):
                self._instruction_cache[text] = vec
        return np.stack([self._instruction_cache[t] for t in instructions]).astype(np.float32)

    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self._net.parameters()))

    def parameter_hash(self) -> str:
        """sha256 over the torch module's parameters and buffers (the frozen weights)."""
        return state_dict_sha256(self._net)

    def verify_unchanged(self) -> None:
        current = state_dict_sha256(self._net)
        if current != self.meta["parameters_sha256"]:
            raise ModelIntegrityError(f"{self.name}: parameters changed since load ({current[:12]} != {self.meta['parameters_sha256'][:12]})")

    def _onnx_parity(self, onnx_path: Path, feed: dict[str, np.ndarray]) -> float:
        from .backends import OnnxRuntimeRunner

        ref = torch_reference_runner(self._net, list(feed)).run(feed)
        got = OnnxRuntimeRunner(onnx_path).run(feed)
        return max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
