"""Loading frozen Hugging Face VLAs (OpenVLA, pi0-style PaliGemma, local Llava checkpoints).

Real loading code, offline only: ``local_files_only=True`` everywhere, so a missing model is
a clear error naming the cache directory instead of a download. The model is frozen
(``requires_grad_(False)``, ``eval()``, every call under ``torch.inference_mode``) and its
parameter sha256 is taken at load -- and compared with ``scfl_sha256.json`` in the
checkpoint when present -- so :meth:`HFVLAPolicy.verify_unchanged` can prove that no
inference touched the weights.

Actions are decoded the way OpenVLA does it: the last 256 vocabulary ids are action bins;
greedy decoding of ``action_dim`` tokens restricted to those ids; token -> bin centre in
[-1, 1]; un-normalisation with the per-dataset 1st/99th percentiles (``norm_stats`` in
``config.json`` or ``dataset_statistics.json``), leaving masked (gripper) dimensions as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backends import OnnxRuntimeRunner, TensorRTRunner, check_device, export_onnx, resolve_dtype
from .shipped import ModelIntegrityError, file_sha256, state_dict_sha256
from .interface import BasePolicy, Observation, ObservationSpec
from .registry import ModelSpec

N_ACTION_BINS = 256
HASH_MANIFEST = "scfl_sha256.json"
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"


class ActionTokenizer:
    """OpenVLA's discretisation: 256 uniform bins over [-1, 1] mapped to the last vocab ids."""

    def __init__(self, vocab_size: int, n_bins: int = N_ACTION_BINS, low: float = -1.0, high: float = 1.0):
        self.vocab_size = int(vocab_size)
        self.n_bins = n_bins
        self.bins = np.linspace(low, high, n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    @property
    def first_action_token(self) -> int:
        return self.vocab_size - self.n_bins

    def encode(self, actions: np.ndarray) -> np.ndarray:
        discretized = np.digitize(np.clip(actions, self.bins[0], self.bins[-1]), self.bins)
        return self.vocab_size - discretized

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        discretized = self.vocab_size - np.asarray(token_ids)
        discretized = np.clip(discretized - 1, 0, self.bin_centers.shape[0] - 1)
        return self.bin_centers[discretized]


def load_norm_stats(path: Path) -> dict[str, Any]:
    """Per-dataset action statistics from ``config.json['norm_stats']`` or ``dataset_statistics.json``."""
    stats: dict[str, Any] = {}
    cfg = json.loads((path / "config.json").read_text())
    stats.update(cfg.get("norm_stats") or {})
    extra = path / "dataset_statistics.json"
    if extra.is_file():
        stats.update(json.loads(extra.read_text()))
    return stats


def unnormalize_actions(normalized: np.ndarray, action_stats: dict[str, Any]) -> np.ndarray:
    """[-1, 1] -> robot units with q01/q99; dimensions whose ``mask`` is False stay normalised."""
    low = np.asarray(action_stats["q01"], dtype=np.float64)
    high = np.asarray(action_stats["q99"], dtype=np.float64)
    mask = np.asarray(action_stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
    return np.where(mask, 0.5 * (normalized + 1.0) * (high - low) + low, normalized)


def _model_class(path: Path, trust_remote_code: bool):
    """The Auto class a checkpoint declares (remote code) or transformers' image-text-to-text."""
    import transformers

    cfg = json.loads((path / "config.json").read_text())
    auto_map = cfg.get("auto_map") or {}
    for name in ("AutoModelForVision2Seq", "AutoModelForImageTextToText", "AutoModelForCausalLM"):
        if name in auto_map and trust_remote_code:
            from transformers.dynamic_module_utils import get_class_from_dynamic_module

            return get_class_from_dynamic_module(auto_map[name], str(path), local_files_only=True)
    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        if hasattr(transformers, name):
            return getattr(transformers, name)
    raise RuntimeError(f"transformers {transformers.__version__} has no image-text-to-text Auto class")


class _ActionStep(torch.nn.Module):
    """One decoding step: action-bin logits and final hidden state of the last position."""

    def __init__(self, model, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *args):
        kwargs = dict(zip(self.input_names, args))
        out = self.model(**kwargs, output_hidden_states=True, use_cache=False)
        return out.logits[:, -1, -N_ACTION_BINS:], out.hidden_states[-1][:, -1, :]


class HFVLAPolicy(BasePolicy):
    """A frozen VLA: ``act(images, instruction) -> (actions, embeddings)``, batched."""

    def __init__(
        self,
        spec: ModelSpec,
        path: Path,
        *,
        backend: str = "torch",
        device: str = "cpu",
        dtype=None,
        unnorm_key: str | None = None,
        action_dim: int | None = None,
        onnx_dir: str | Path | None = None,
        expected_sha256: str | None = None,
    ):
        from transformers import AutoProcessor

        self.spec = spec
        self.path = Path(path)
        self.name = spec.name
        self.backend = backend
        self.device = check_device(device)
        self.dtype = resolve_dtype(dtype, device)
        remote = spec.trust_remote_code
        self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=remote)
        cls = _model_class(self.path, remote)
        kwargs = dict(local_files_only=True, trust_remote_code=remote, attn_implementation="eager")
        self.model = cls.from_pretrained(str(path), dtype=self.dtype, **kwargs).to(self.device)
        self.model.eval().requires_grad_(False)
        self.load_sha256 = state_dict_sha256(self.model)
        manifest = self.path / HASH_MANIFEST
        expected = expected_sha256 or (json.loads(manifest.read_text())["parameters_sha256"] if manifest.is_file() else None)
        if expected and expected != self.load_sha256:
            raise ModelIntegrityError(f"{path}: parameters sha256 {self.load_sha256[:12]} != recorded {expected[:12]}")
        cfg = self.model.config
        text_cfg = getattr(cfg, "text_config", cfg)
        vocab = int(self.model.get_output_embeddings().weight.shape[0]) - int(getattr(cfg, "pad_to_multiple_of", 0) or 0)
        self.action_tokenizer = ActionTokenizer(vocab)
        self.action_dim = int(action_dim or spec.action_dim)
        self.obs_dim = int(text_cfg.hidden_size)
        self.norm_stats = load_norm_stats(self.path)
        if unnorm_key is None and len(self.norm_stats) > 1:
            raise ValueError(f"{self.name}: several datasets' statistics ({', '.join(self.norm_stats)}); pass unnorm_key")
        if unnorm_key is None:
            unnorm_key = next(iter(self.norm_stats), None) or (spec.default_unnorm_key or None)
        if unnorm_key is not None and unnorm_key not in self.norm_stats:
            raise ValueError(f"{self.name}: no action statistics for {unnorm_key!r}; have: {', '.join(self.norm_stats) or 'none'}")
        self.unnorm_key = unnorm_key
        self._runner = None
        self.onnx_path = None
        if backend in ("onnxruntime", "tensorrt"):
            self.onnx_path = self.export_onnx(Path(onnx_dir) if onnx_dir else self.path.parent / f"{self.path.name}-onnx")
            # The step graph runs one sample at a time (see _decode_runner): batch profile 1.
            self._runner = OnnxRuntimeRunner(self.onnx_path) if backend == "onnxruntime" else TensorRTRunner(self.onnx_path, max_batch=1)
        elif backend != "torch":
            raise ValueError(f"unknown backend {backend!r}; known: torch, onnxruntime, tensorrt")

    # -- inputs -------------------------------------------------------------------------
    def prompt(self, instruction: str) -> str:
        text = PROMPT_TEMPLATE.format(instruction=instruction.lower().rstrip(".?! "))
        image_token = getattr(self.processor, "image_token", None)
        return f"{image_token}{text}" if image_token and image_token not in text else text

    def prepare(self, images, instruction: str | list[str]) -> dict[str, torch.Tensor]:
        imgs = np.asarray(images) if not isinstance(images, list) else images
        if isinstance(imgs, np.ndarray) and imgs.ndim == 3:
            imgs = imgs[None]
        imgs = [np.asarray(im, dtype=np.uint8) for im in imgs]
        texts = [instruction] * len(imgs) if isinstance(instruction, str) else list(instruction)
        if len(texts) != len(imgs):
            raise ValueError(f"{len(texts)} instructions for {len(imgs)} images")
        enc = self.processor(images=imgs, text=[self.prompt(t) for t in texts], return_tensors="pt", padding=True)
        return {k: v for k, v in enc.items() if k != "labels"}

    # -- inference ------------------------------------------------------------------------
    def _restrict_to_action_bins(self):
        from transformers import LogitsProcessor, LogitsProcessorList

        first = self.action_tokenizer.first_action_token

        class OnlyActionBins(LogitsProcessor):
            def __call__(self, input_ids, scores):
                scores[:, :first] = torch.finfo(scores.dtype).min
                return scores

        return LogitsProcessorList([OnlyActionBins()])

    def _decode_torch(self, inputs):
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.action_dim,
                min_new_tokens=self.action_dim,
                do_sample=False,
                logits_processor=self._restrict_to_action_bins(),
                output_hidden_states=True,
                return_dict_in_generate=True,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        tokens = out.sequences[:, -self.action_dim:].cpu().numpy()
        embedding = out.hidden_states[0][-1][:, -1, :].float().cpu().numpy()
        return tokens, embedding

    def _decode_runner(self, inputs):
        """Greedy decoding over the exported single-step graph, one sample at a time.

        The traced vision tower splits image features per image, so the graph is exported
        for batch 1 (a robot runs batch 1); no KV cache, which is fine for small models.
        """
        n = len(inputs["input_ids"])
        rows = [self._decode_runner_one({k: v[i : i + 1].cpu().numpy() for k, v in inputs.items()}) for i in range(n)]
        return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])

    def _decode_runner_one(self, feed):
        embedding = None
        tokens = []
        for _ in range(self.action_dim):
            logits, hidden = self._runner.run(feed)
            if embedding is None:
                embedding = hidden
            nxt = logits.argmax(-1) + self.action_tokenizer.first_action_token
            tokens.append(nxt)
            col = nxt[:, None].astype(feed["input_ids"].dtype)
            feed["input_ids"] = np.concatenate([feed["input_ids"], col], 1)
            feed["attention_mask"] = np.concatenate([feed["attention_mask"], np.ones_like(col)], 1)
            if "token_type_ids" in feed:
                feed["token_type_ids"] = np.concatenate([feed["token_type_ids"], np.ones_like(col)], 1)
        return np.stack(tokens, 1), embedding

    def step_outputs(self, inputs: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """(action-bin logits, last hidden) of one step with torch, or with the backend runner."""
        if self._runner is not None:
            n = len(inputs["input_ids"])
            rows = [self._runner.run({k: v[i : i + 1].cpu().numpy() for k, v in inputs.items()}) for i in range(n)]
            return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
        step = _ActionStep(self.model, list(inputs))
        args = [v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device) for k, v in inputs.items()]
        with torch.inference_mode():
            logits, hidden = step(*args)
        return logits.float().cpu().numpy(), hidden.float().cpu().numpy()

    def act(self, images, instruction: str | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(actions (B, action_dim) in robot units, embeddings (B, hidden)) for RGB uint8 images."""
        single = isinstance(images, np.ndarray) and images.ndim == 3
        inputs = self.prepare(images, instruction)
        tokens, embedding = self._decode_torch(inputs) if self._runner is None else self._decode_runner(inputs)
        actions = self.action_tokenizer.decode(tokens)
        if self.unnorm_key is not None:
            actions = unnormalize_actions(actions, self.norm_stats[self.unnorm_key]["action"])
        actions = actions.astype(np.float32)
        embedding = embedding.astype(np.float32)
        return (actions[0], embedding[0]) if single else (actions, embedding)

    @property
    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(image=True)

    def predict(self, observation: Observation) -> tuple[np.ndarray, np.ndarray]:
        return self.act(observation.image, list(observation.instruction))

    # -- integrity + export ---------------------------------------------------------------
    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def parameter_hash(self) -> str:
        return state_dict_sha256(self.model)

    def verify_unchanged(self) -> None:
        current = self.parameter_hash()
        if current != self.load_sha256:
            raise ModelIntegrityError(f"{self.name}: parameters changed since load ({current[:12]} != {self.load_sha256[:12]})")

    def export_onnx(self, out_dir: Path) -> Path:
        """Export the single-step graph (dynamic batch and sequence) once; reused by its hash."""
        out_dir = Path(out_dir)
        path = out_dir / f"step-{self.load_sha256[:16]}.onnx"
        if path.is_file():
            return path
        dummy = np.zeros((1, 8, 8, 3), np.uint8)
        inputs = self.prepare(dummy, "pick up the object")
        names = list(inputs)
        axes_inputs = {n: ({0: "batch", 1: "sequence"} if inputs[n].ndim == 2 else {0: "batch"}) for n in names}
        model = self.model
        if self.dtype != torch.float32 or self.device != "cpu":
            import copy

            model = copy.deepcopy(model)  # export in fp32 on CPU without touching the live weights
        step = _ActionStep(model, names).float().to("cpu")
        tmp = out_dir / (path.name + ".part")
        out_dir.mkdir(parents=True, exist_ok=True)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(step, tuple(inputs[n] for n in names), tmp, names, ["action_logits", "hidden"], dynamic_axes=axes_inputs)
        tmp.replace(path)
        return path


    def onnx_parity(self, onnx_path: Path, seed: int = 0) -> float:
        images = np.random.default_rng(seed).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        inputs = self.prepare(images, "pick up the object")
        step = _ActionStep(self.model, list(inputs))
        args = [v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device) for k, v in inputs.items()]
        with torch.inference_mode():
            ref = [t.float().cpu().numpy() for t in step(*args)]
        got = OnnxRuntimeRunner(onnx_path).run({k: v.cpu().numpy() for k, v in inputs.items()})
        return max(float(np.abs(a - b).max()) for a, b in zip(ref, got))


def load_hf_vla(spec: ModelSpec, path: Path, *, backend="torch", device="cpu", dtype=None, **kwargs) -> HFVLAPolicy:
    return HFVLAPolicy(spec, path, backend=backend, device=device, dtype=dtype, **kwargs)


def write_hash_manifest(policy: HFVLAPolicy) -> Path:
    """Record the loaded parameters' and files' sha256 so later loads are checked against it."""
    files = {p.name: file_sha256(p) for p in sorted(policy.path.glob("*.safetensors"))}
    path = policy.path / HASH_MANIFEST
    path.write_text(json.dumps({"parameters_sha256": policy.load_sha256, "files": files}, indent=2) + "\n")
    return path
