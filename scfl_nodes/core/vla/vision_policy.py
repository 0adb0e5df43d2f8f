"""scfl's image-conditioned frozen base policy for Meta-World (``scfl-metaworld-vision``).

The stand-in for a vendor VLA that runs on pixels: an RGB frame from the simulated corner
camera (the ``sim`` camera source's view), the instruction's all-MiniLM-L6-v2 embedding and,
optionally, proprioception (hand position + gripper opening, the first 4 entries of the
Meta-World state) go through a small CNN + MLP to a 4-d action. Trained once by
``scripts/train_vision_policy.py`` on deliberately few scripted-expert demonstrations, then
frozen and shipped in ``scfl_nodes/data/vision_policy/`` with its sha256 -- an imperfect base
that residual skills improve, and one that a camera stream alone can drive.

Images of any size are centre-cropped to a square and resized to the training resolution
(:func:`preprocess_images`), so a 640x480 camera sees the same field of view as the square
training renders (MuJoCo's field of view is vertical).

``obs_embedding`` (128-d) = [image features (64), last hidden layer (64)].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .interface import Observation, ObservationSpec
from .shipped import ShippedPolicy, load_shipped, save_shipped
from .text import TEXT_EMBEDDING_DIM

VISION_POLICY_NAME = "scfl-metaworld-vision"
PROPRIO_DIM = 4  # hand xyz + gripper opening: Meta-World state[0:4]
STATE_DIM = 39
INPUT_NAMES = ["image", "text_embedding", "proprio", "proprio_mask"]
OUTPUT_NAMES = ["action", "embedding"]


@dataclass(frozen=True)
class VisionPolicyArch:
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 32, 32)
    image_features: int = 64
    text_dim: int = TEXT_EMBEDDING_DIM
    instruction_dim: int = 16
    proprio_dim: int = PROPRIO_DIM
    hidden: int = 64
    action_dim: int = 4

    @property
    def embedding_dim(self) -> int:
        return self.image_features + self.hidden


@dataclass(frozen=True)
class VisionTrainingConfig:
    """Everything that decides the shipped weights (stored next to them)."""

    tasks: tuple[str, ...] = ("door-lock-v3", "drawer-close-v3", "sweep-into-v3", "window-open-v3")
    camera: str = "corner"
    demos_per_task: int = 10
    demo_seed: int = 1000
    action_noise: float = 0.1  # executed = expert + N(0, noise): states off the expert's path, expert labels
    train_seed: int = 0
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    proprio_dropout: float = 0.3  # train to run without proprioception too (camera stream alone)
    shift_px: int = 4  # random-shift augmentation
    eval_episodes: int = 20
    eval_seed: int = 12345
    arch: VisionPolicyArch = field(default_factory=VisionPolicyArch)


def preprocess_images(images: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB -> (B, 3, size, size) float32 in [0, 1]: centre square crop, area resize."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (B, H, W, 3) RGB, got {images.shape}")
    b, h, w, _ = images.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = images[:, top : top + s, left : left + s]
    if s != size:
        import cv2

        crop = np.stack([cv2.resize(np.ascontiguousarray(im), (size, size), interpolation=cv2.INTER_AREA) for im in crop])
    x = crop.astype(np.float32) / (255.0 if crop.dtype == np.uint8 else 1.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class VisionPolicyNet(nn.Module):
    """(image, instruction embedding, proprio, proprio mask) -> (action in [-1, 1], embedding)."""

    def __init__(self, arch: VisionPolicyArch = VisionPolicyArch()):
        super().__init__()
        self.arch = arch
        layers, c_in, size = [], 3, arch.image_size
        for i, c in enumerate(arch.channels):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c, k, stride=2, padding=k // 2), nn.ReLU()]
            c_in, size = c, (size + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.image_fc = nn.Linear(c_in * size * size, arch.image_features)
        self.instruction = nn.Linear(arch.text_dim, arch.instruction_dim)
        self.register_buffer("proprio_mean", torch.zeros(arch.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(arch.proprio_dim))
        self.fc1 = nn.Linear(arch.image_features + arch.instruction_dim + arch.proprio_dim + 1, arch.hidden)
        self.fc2 = nn.Linear(arch.hidden, arch.hidden)
        self.head = nn.Linear(arch.hidden, arch.action_dim)

    def forward(self, image, text_embedding, proprio, proprio_mask):
        f = torch.relu(self.image_fc(torch.flatten(self.conv((image - 0.5) / 0.25), 1)))
        z = torch.tanh(self.instruction(text_embedding))
        p = (proprio - self.proprio_mean) / self.proprio_std * proprio_mask
        h = torch.relu(self.fc1(torch.cat([f, z, p, proprio_mask], dim=-1)))
        h = torch.relu(self.fc2(h))
        return torch.tanh(self.head(h)), torch.cat([f, h], dim=-1)


def _example_inputs(arch: VisionPolicyArch, batch: int = 1, rng: np.random.Generator | None = None):
    s = arch.image_size
    if rng is None:
        return {"image": np.zeros((batch, 3, s, s), np.float32), "text_embedding": np.zeros((batch, arch.text_dim), np.float32),
                "proprio": np.zeros((batch, arch.proprio_dim), np.float32), "proprio_mask": np.ones((batch, 1), np.float32)}
    return {"image": rng.random((batch, 3, s, s), dtype=np.float32),
            "text_embedding": (rng.normal(size=(batch, arch.text_dim)) * 0.05).astype(np.float32),
            "proprio": (rng.normal(size=(batch, arch.proprio_dim)) * 0.2).astype(np.float32),
            "proprio_mask": (rng.random((batch, 1)) < 0.5).astype(np.float32)}


def train_vision_policy_net(images, proprio, text_embeddings, actions, config: VisionTrainingConfig, progress=True):
    """Minibatch behaviour cloning (MSE) with random-shift augmentation and proprio dropout.

    ``images`` (N, 3, S, S) float32 in [0, 1]; ``proprio`` (N, 4); ``text_embeddings`` (N, 384).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(config.train_seed)
    gen = torch.Generator().manual_seed(config.train_seed)
    net = VisionPolicyNet(config.arch)
    x = torch.as_tensor(images)
    p = torch.as_tensor(proprio, dtype=torch.float32)
    z = torch.as_tensor(text_embeddings, dtype=torch.float32)
    y = torch.as_tensor(actions, dtype=torch.float32).clamp(-1, 1)
    net.proprio_mean.copy_(p.mean(0))
    net.proprio_std.copy_(p.std(0).clamp_min(1e-2))
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    n, bs, pad = len(x), config.batch_size, config.shift_px
    steps = config.epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    s = config.arch.image_size
    losses = []
    bar = tqdm(total=steps, desc="train vision policy", disable=not progress, leave=False)
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            img = x[idx]
            if pad:
                img = nn.functional.pad(img, (pad, pad, pad, pad), mode="replicate")
                dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
                img = img[:, :, dy : dy + s, dx : dx + s]
            mask = (torch.rand(len(idx), 1, generator=gen) >= config.proprio_dropout).float()
            pred, _ = net(img, z[idx], p[idx], mask)
            loss = torch.mean((pred - y[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
    bar.close()
    net.eval().requires_grad_(False)
    return net, {"final_mse": float(np.mean(losses[-20:])), "samples": int(n), "steps": int(steps)}


def config_to_json(config: VisionTrainingConfig) -> dict[str, Any]:
    d = asdict(config)
    d["tasks"] = list(config.tasks)
    d["arch"]["channels"] = list(config.arch.channels)
    return d


def arch_from_json(d: dict[str, Any]) -> VisionPolicyArch:
    return VisionPolicyArch(**{**d, "channels": tuple(d["channels"])})


def export_vision_onnx(net: VisionPolicyNet, path: Path) -> Path:
    from .backends import export_onnx

    ex = _example_inputs(net.arch)
    return export_onnx(net, tuple(torch.as_tensor(ex[n]) for n in INPUT_NAMES), path, INPUT_NAMES, OUTPUT_NAMES)


def save_vision_policy(net, directory, config: VisionTrainingConfig, instruction_cache: dict[str, np.ndarray], extra) -> Path:
    """Write weights (safetensors), the ONNX export and config.json with every sha256."""
    meta = {
        "kind": "scfl-vision",
        "format_version": 1,
        "obs_dim": config.arch.embedding_dim,
        "action_dim": config.arch.action_dim,
        "state_dim": STATE_DIM,
        "image_size": config.arch.image_size,
        "camera": config.camera,
        "arch": config_to_json(config)["arch"],
        "training_config": config_to_json(config),
        **extra,
    }
    return save_shipped(net, directory, VISION_POLICY_NAME, instruction_cache, export_vision_onnx, meta)


def default_vision_policy_dir() -> Path:
    from scfl_nodes.core.paths import package_path

    return package_path("scfl_nodes/data/vision_policy")


class VisionBasePolicy(ShippedPolicy):
    """The frozen image-conditioned scfl base behind a backend; batched and gradient-free."""

    def __init__(self, directory: Path, meta: dict[str, Any], net: VisionPolicyNet, runner, instruction_cache):
        super().__init__(directory, meta, net, runner, instruction_cache)
        self.image_size = int(meta["image_size"])
        self.camera = meta.get("camera", "corner")

    @property
    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(image=True, state_dim=self.state_dim, state_required=False,
                               image_size=self.image_size, camera=self.camera)

    def inputs(self, observation: Observation) -> dict[str, np.ndarray]:
        """The network's named inputs for an observation (what torch, ONNX and TensorRT get)."""
        image = preprocess_images(observation.image, self.image_size)
        n = len(image)
        if len(observation.instruction) != n:
            raise ValueError(f"{len(observation.instruction)} instructions for {n} images")
        proprio = np.zeros((n, PROPRIO_DIM), np.float32)
        mask = np.zeros((n, 1), np.float32)
        if observation.state is not None:
            state = np.asarray(observation.state, dtype=np.float32).reshape(n, -1)
            if state.shape[1] < PROPRIO_DIM:
                raise ValueError(f"state must have at least {PROPRIO_DIM} entries (hand xyz, gripper), got {state.shape[1]}")
            proprio, mask = state[:, :PROPRIO_DIM], np.ones((n, 1), np.float32)
        return {"image": image, "text_embedding": self.instruction_embedding(list(observation.instruction)),
                "proprio": proprio, "proprio_mask": mask}

    def predict(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]:
        action, embedding = self._runner.run(self.inputs(observation))
        return action.astype(np.float32), embedding.astype(np.float32)

    def export_onnx(self, out: Path) -> Path:
        return export_vision_onnx(self._net, Path(out))

    def onnx_parity(self, onnx_path: Path, seed: int = 0) -> float:
        return self._onnx_parity(onnx_path, _example_inputs(self._net.arch, batch=16, rng=np.random.default_rng(seed)))


def load_vision_policy(directory: str | Path | None = None, backend: str = "torch", device: str = "cpu", dtype=None) -> VisionBasePolicy:
    """Load the shipped (or a locally trained) vision policy; every file's sha256 is checked."""
    directory = Path(directory) if directory else default_vision_policy_dir()
    meta, net, runner, instruction_cache = load_shipped(
        directory, what="vision policy", train_script="scripts/train_vision_policy.py",
        make_net=lambda m: VisionPolicyNet(arch_from_json(m["arch"])), input_names=INPUT_NAMES,
        backend=backend, device=device, dtype=dtype)
    return VisionBasePolicy(directory, meta, net, runner, instruction_cache)
