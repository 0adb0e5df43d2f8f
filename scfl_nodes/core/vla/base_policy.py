"""scfl's own small frozen base policy for Meta-World (the stand-in for a vendor VLA).

Language-conditioned behaviour cloning: the instruction's all-MiniLM-L6-v2 embedding and the
39-d Meta-World state go through a small MLP to a 4-d action. It is trained once by
``scripts/train_base_policy.py`` on few scripted-expert demonstrations, then frozen and
shipped (``scfl_nodes/data/base_policy/``) with its training config and sha256, so that every
robot of a simulated fleet runs exactly the same imperfect base -- residual skills have to
make up the difference, as they would for a real vendor model.

``act(obs, instruction) -> (base_action, obs_embedding)``: the embedding (128-d) is what
residual skills see: the normalised perceived state (39), the instruction projection (25)
and the last hidden layer (64).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .interface import BasePolicy, Observation, ObservationSpec
from .text import TEXT_EMBEDDING_DIM

BASE_POLICY_NAME = "scfl-metaworld-base"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class BasePolicyArch:
    state_dim: int = 39
    text_dim: int = TEXT_EMBEDDING_DIM
    instruction_dim: int = 25
    hidden: int = 64
    action_dim: int = 4

    @property
    def embedding_dim(self) -> int:
        return self.state_dim + self.instruction_dim + self.hidden


@dataclass(frozen=True)
class BaseTrainingConfig:
    """Everything that decides the shipped weights (stored next to them)."""

    tasks: tuple[str, ...] = ("door-lock-v3", "drawer-close-v3", "sweep-into-v3", "window-open-v3")
    demos_per_task: int = 2
    demo_seed: int = 1000
    train_seed: int = 0
    epochs: int = 1500
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    # Systematic perception error of the frozen base (metres, added to the perceived object
    # and goal positions): a miscalibrated camera, as a deployed vendor model would have.
    perception_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    eval_episodes: int = 50
    eval_seed: int = 12345
    arch: BasePolicyArch = field(default_factory=BasePolicyArch)


# Indices of object / goal positions in the 39-d Meta-World state (obj1 pos 4:7, obj2 pos
# 11:14, the same for the previous frame at +18, goal 36:39).
_POSITION_SLICES = ((4, 7), (11, 14), (22, 25), (29, 32), (36, 39))


def perception_offset_vector(offset_m, state_dim: int = 39) -> np.ndarray:
    vec = np.zeros(state_dim, dtype=np.float32)
    for lo, hi in _POSITION_SLICES:
        vec[lo:hi] = np.asarray(offset_m, dtype=np.float32)
    return vec


class BasePolicyNet(nn.Module):
    """(state, instruction embedding) -> (action in [-1, 1], observation embedding)."""

    def __init__(self, arch: BasePolicyArch = BasePolicyArch()):
        super().__init__()
        self.arch = arch
        self.register_buffer("state_mean", torch.zeros(arch.state_dim))
        self.register_buffer("state_std", torch.ones(arch.state_dim))
        self.register_buffer("perception_offset", torch.zeros(arch.state_dim))
        self.instruction = nn.Linear(arch.text_dim, arch.instruction_dim)
        self.fc1 = nn.Linear(arch.state_dim + arch.instruction_dim, arch.hidden)
        self.fc2 = nn.Linear(arch.hidden, arch.hidden)
        self.head = nn.Linear(arch.hidden, arch.action_dim)

    def forward(self, state: torch.Tensor, text_embedding: torch.Tensor):
        s = (state + self.perception_offset - self.state_mean) / self.state_std
        z = torch.tanh(self.instruction(text_embedding))
        h = torch.relu(self.fc1(torch.cat([s, z], dim=-1)))
        h = torch.relu(self.fc2(h))
        action = torch.tanh(self.head(h))
        return action, torch.cat([s, z, h], dim=-1)


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


def train_base_policy_net(
    states: np.ndarray,
    text_embeddings: np.ndarray,
    actions: np.ndarray,
    config: BaseTrainingConfig,
    progress: bool = True,
) -> tuple[BasePolicyNet, dict[str, Any]]:
    """Full-batch behaviour cloning (MSE) of expert actions; small data, so seconds on one core."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.train_seed)
    net = BasePolicyNet(config.arch)
    x = torch.as_tensor(states, dtype=torch.float32)
    z = torch.as_tensor(text_embeddings, dtype=torch.float32)
    y = torch.as_tensor(actions, dtype=torch.float32).clamp(-1, 1)
    net.state_mean.copy_(x.mean(0))
    net.state_std.copy_(x.std(0).clamp_min(1e-2))
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    losses = []
    for _ in tqdm(range(config.epochs), desc="train base policy", disable=not progress, leave=False):
        opt.zero_grad()
        pred, _ = net(x, z)
        loss = torch.mean((pred - y) ** 2)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    # The offset is applied only after training: the base learned on correct states and is
    # deployed with a miscalibrated perception.
    with torch.no_grad():
        net.perception_offset.copy_(torch.as_tensor(perception_offset_vector(config.perception_offset_m)))
    net.eval().requires_grad_(False)
    return net, {"final_mse": losses[-1], "samples": int(len(x))}


def config_to_json(config: BaseTrainingConfig) -> dict[str, Any]:
    d = asdict(config)
    d["tasks"] = list(config.tasks)
    d["perception_offset_m"] = list(config.perception_offset_m)
    return d


def arch_from_json(d: dict[str, Any]) -> BasePolicyArch:
    return BasePolicyArch(**d)


def save_base_policy(
    net: BasePolicyNet,
    directory: str | Path,
    config: BaseTrainingConfig,
    instruction_cache: dict[str, np.ndarray],
    extra: dict[str, Any],
) -> Path:
    """Write weights (safetensors), the ONNX export and config.json with both sha256."""
    from safetensors.torch import save_file

    from .backends import export_onnx

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    names = sorted(instruction_cache)
    tensors["instruction_cache"] = torch.as_tensor(np.stack([instruction_cache[n] for n in names]))
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"name": BASE_POLICY_NAME})
    export_onnx(
        net,
        (torch.zeros(1, config.arch.state_dim), torch.zeros(1, config.arch.text_dim)),
        directory / ONNX_FILE,
        input_names=["state", "text_embedding"],
        output_names=["action", "embedding"],
    )
    meta = {
        "name": BASE_POLICY_NAME,
        "format_version": 1,
        "obs_dim": config.arch.embedding_dim,
        "action_dim": config.arch.action_dim,
        "state_dim": config.arch.state_dim,
        "arch": asdict(config.arch),
        "instructions": names,
        "training_config": config_to_json(config),
        "weights_sha256": file_sha256(directory / WEIGHTS_FILE),
        "onnx_sha256": file_sha256(directory / ONNX_FILE),
        "parameters_sha256": state_dict_sha256(net),
        **extra,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


class ModelIntegrityError(ValueError):
    """A frozen model's files or parameters do not match their recorded sha256."""


def default_base_policy_dir() -> Path:
    from scfl_nodes.core.paths import package_path

    return package_path("scfl_nodes/data/base_policy")


class MetaWorldBasePolicy(BasePolicy):
    """The frozen scfl base policy behind a backend; ``act`` is batched and gradient-free."""

    def __init__(self, directory: Path, meta: dict[str, Any], net: BasePolicyNet, runner, instruction_cache):
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

    @property
    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(image=False, state_dim=self.state_dim, state_required=True)

    def act(self, obs, instruction: str | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(base_action, obs_embedding) for a (39,) state or a (B, 39) batch."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.state_dim:
            raise ValueError(f"observation must have shape ({self.state_dim},) or (B, {self.state_dim}), got {obs.shape}")
        return super().act(obs, instruction)

    def predict(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]:
        batch = np.asarray(observation.state, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.state_dim:
            raise ValueError(f"observation must have shape ({self.state_dim},) or (B, {self.state_dim}), got {batch.shape}")
        texts = list(observation.instruction)
        if len(texts) != len(batch):
            raise ValueError(f"{len(texts)} instructions for {len(batch)} observations")
        action, embedding = self._runner.run({"state": batch, "text_embedding": self.instruction_embedding(texts)})
        return action.astype(np.float32), embedding.astype(np.float32)

    def export_onnx(self, out: Path) -> Path:
        from .backends import export_onnx

        return export_onnx(self._net, (torch.zeros(1, self.state_dim), torch.zeros(1, self._net.arch.text_dim)), out,
                           ["state", "text_embedding"], ["action", "embedding"])

    def onnx_parity(self, onnx_path: Path, seed: int = 0) -> float:
        from .backends import OnnxRuntimeRunner

        rng = np.random.default_rng(seed)
        feed = {"state": rng.normal(size=(64, self.state_dim)).astype(np.float32) * 0.1,
                "text_embedding": rng.normal(size=(64, self._net.arch.text_dim)).astype(np.float32) * 0.05}
        ref = torch_reference_runner(self._net, list(feed)).run(feed)
        got = OnnxRuntimeRunner(onnx_path).run(feed)
        return max(float(np.abs(a - b).max()) for a, b in zip(ref, got))

    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self._net.parameters()))

    def parameter_hash(self) -> str:
        """sha256 over the torch module's parameters and buffers (the frozen weights)."""
        return state_dict_sha256(self._net)

    def verify_unchanged(self) -> None:
        current = state_dict_sha256(self._net)
        if current != self.meta["parameters_sha256"]:
            raise ModelIntegrityError(f"{self.name}: parameters changed since load ({current[:12]} != {self.meta['parameters_sha256'][:12]})")


def load_scfl_base_policy(
    directory: str | Path | None = None, backend: str = "torch", device: str = "cpu", dtype=None
) -> MetaWorldBasePolicy:
    """Load the shipped (or a locally trained) base policy; every file's sha256 is checked."""
    from safetensors.torch import load_file

    from .backends import BACKENDS, OnnxRuntimeRunner, TensorRTRunner, TorchRunner

    directory = Path(directory) if directory else default_base_policy_dir()
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no base policy at {directory} ({CONFIG_FILE} missing); train one with scripts/train_base_policy.py")
    meta = json.loads(cfg_path.read_text())
    weights = directory / WEIGHTS_FILE
    if file_sha256(weights) != meta["weights_sha256"]:
        raise ModelIntegrityError(f"{weights}: sha256 does not match {cfg_path} (corrupted or modified weights)")
    tensors = load_file(str(weights))
    cache_tensor = tensors.pop("instruction_cache")
    instruction_cache = {n: cache_tensor[i].numpy() for i, n in enumerate(meta["instructions"])}
    net = BasePolicyNet(arch_from_json(meta["arch"]))
    net.load_state_dict(tensors)
    net.eval().requires_grad_(False)
    if state_dict_sha256(net) != meta["parameters_sha256"]:
        raise ModelIntegrityError(f"{directory}: loaded parameters do not match the recorded parameters_sha256")
    if backend == "torch":
        runner = TorchRunner(net, ["state", "text_embedding"], device=device, dtype=dtype)
    elif backend in ("onnxruntime", "tensorrt"):
        onnx_path = directory / ONNX_FILE
        if file_sha256(onnx_path) != meta["onnx_sha256"]:
            raise ModelIntegrityError(f"{onnx_path}: sha256 does not match {cfg_path}")
        runner = OnnxRuntimeRunner(onnx_path, device=device) if backend == "onnxruntime" else TensorRTRunner(onnx_path)
    else:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    return MetaWorldBasePolicy(directory, meta, net, runner, instruction_cache)


def torch_reference_runner(net: nn.Module, input_names: list[str]):
    """A CPU fp32 torch runner of ``net`` (the reference side of ONNX parity checks)."""
    from .backends import TorchRunner

    return TorchRunner(net, input_names)
