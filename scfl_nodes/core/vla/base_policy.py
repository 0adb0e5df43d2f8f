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

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .interface import Observation, ObservationSpec
from .shipped import (  # noqa: F401  (re-exported: older imports of these names from base_policy)
    ModelIntegrityError,
    ShippedPolicy,
    file_sha256,
    load_shipped,
    save_shipped,
    state_dict_sha256,
    torch_reference_runner,
)
from .text import TEXT_EMBEDDING_DIM

BASE_POLICY_NAME = "scfl-metaworld-base"
INPUT_NAMES = ["state", "text_embedding"]


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
    """Write weights (safetensors), the ONNX export and config.json with every sha256."""
    meta = {
        "format_version": 1,
        "obs_dim": config.arch.embedding_dim,
        "action_dim": config.arch.action_dim,
        "state_dim": config.arch.state_dim,
        "arch": asdict(config.arch),
        "training_config": config_to_json(config),
        **extra,
    }
    return save_shipped(net, directory, BASE_POLICY_NAME, instruction_cache, export_base_onnx, meta)


def export_base_onnx(net: BasePolicyNet, path: Path) -> Path:
    from .backends import export_onnx

    arch = net.arch
    return export_onnx(net, (torch.zeros(1, arch.state_dim), torch.zeros(1, arch.text_dim)), path,
                       INPUT_NAMES, ["action", "embedding"])


def default_base_policy_dir() -> Path:
    from scfl_nodes.core.paths import package_path

    return package_path("scfl_nodes/data/base_policy")


class MetaWorldBasePolicy(ShippedPolicy):
    """The frozen scfl base policy behind a backend; ``act`` is batched and gradient-free."""

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
        return export_base_onnx(self._net, Path(out))

    def onnx_parity(self, onnx_path: Path, seed: int = 0) -> float:
        rng = np.random.default_rng(seed)
        return self._onnx_parity(onnx_path, {
            "state": rng.normal(size=(64, self.state_dim)).astype(np.float32) * 0.1,
            "text_embedding": rng.normal(size=(64, self._net.arch.text_dim)).astype(np.float32) * 0.05})


def load_scfl_base_policy(
    directory: str | Path | None = None, backend: str = "torch", device: str = "cpu", dtype=None
) -> MetaWorldBasePolicy:
    """Load the shipped (or a locally trained) base policy; every file's sha256 is checked."""
    directory = Path(directory) if directory else default_base_policy_dir()
    meta, net, runner, cache = load_shipped(
        directory, what="base policy", train_script="scripts/train_base_policy.py",
        make_net=lambda m: BasePolicyNet(arch_from_json(m["arch"])), input_names=INPUT_NAMES,
        backend=backend, device=device, dtype=dtype)
    return MetaWorldBasePolicy(directory, meta, net, runner, cache)
