"""Inference backends for frozen models: torch, onnxruntime and TensorRT.

A backend turns named numpy inputs into numpy outputs; the policy classes above it do not
care which one runs. ``torch`` runs the module itself (CPU or CUDA, fp32/bf16/fp16) under
``torch.inference_mode``; ``onnxruntime`` runs an ONNX export (2x faster than torch for small
MLPs on CPU); ``tensorrt`` builds an engine from the same ONNX file with the TensorRT Python
API and runs it on the GPU -- only where ``tensorrt`` is importable (not on CPU-only hosts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine (missing package or device)."""


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``"auto"``: bf16 on a CUDA device that supports it, else fp16 on CUDA, fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; known: auto, {', '.join(table)}")
    return table[dtype]


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} requested but torch sees no CUDA GPU (torch {torch.__version__})")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"unknown device {device!r}; use cpu or cuda[:N]")
    return device


class TorchRunner:
    """Runs a frozen ``nn.Module`` whose forward takes the inputs positionally."""

    name = "torch"

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str], device: str = "cpu", dtype=None):
        self.device = check_device(device)
        self.dtype = resolve_dtype(dtype, device)
        current = next(iter(module.parameters()), torch.empty(0))
        if current.device != torch.device(self.device) or current.dtype != self.dtype:
            import copy

            module = copy.deepcopy(module)  # never convert the caller's frozen fp32 weights in place
        self.module = module.to(self.device, self.dtype).eval().requires_grad_(False)
        self.input_names = list(input_names)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            args = [torch.as_tensor(np.asarray(inputs[n]), device=self.device).to(self.dtype) for n in self.input_names]
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in out]


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = 17,
    dynamic_axes: dict | None = None,
) -> Path:
    """Export ``module`` with a dynamic batch dimension on every input and output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch"} for n in [*input_names, *output_names]}
    axes.update(dynamic_axes or {})
    module = module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            tuple(example_inputs),
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return path


class OnnxRuntimeRunner:
    """Runs an ONNX file with onnxruntime (CUDA provider first when present)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - in requirements.txt
            raise BackendUnavailableError("onnxruntime is not installed (pip install onnxruntime)") from exc
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                 "tensor(bool)": np.bool_, "tensor(float16)": np.float16}
        self._input_dtypes = {i.name: types.get(i.type, np.float32) for i in self.session.get_inputs()}

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {n: np.ascontiguousarray(inputs[n], dtype=self._input_dtypes[n]) for n in self.input_names}
        return list(self.session.run(None, feed))


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT needs the ``tensorrt`` Python package and a CUDA GPU."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the TensorRT Python package `tensorrt` is not importable (its builder wheel is not installable from PyPI alone)"
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA GPU and torch sees none"
    return True, ""


class TensorRTRunner:
    """Builds a TensorRT engine from an ONNX file (cached next to it) and runs it on the GPU.

    Buffers are torch CUDA tensors so no pycuda is needed. The engine cache key includes the
    ONNX file's sha256 and the TensorRT version; a changed model never reuses a stale engine.
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str | os.PathLike, max_batch: int = 64, fp16: bool = True, engine_dir=None,
                 dynamic_range: tuple[int, int, int] = (1, 64, 512)):
        """``max_batch``: optimisation profile for dim 0; ``dynamic_range``: (min, opt, max) for other
        dynamic dims (e.g. a VLA's sequence length)."""
        ok, why = tensorrt_available()
        if not ok:
            raise BackendUnavailableError(f"tensorrt backend unavailable: {why}")
        import tensorrt as trt

        from .shipped import file_sha256

        onnx_path = Path(onnx_path)
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        digest = file_sha256(onnx_path)[:16]
        engine_dir = Path(engine_dir) if engine_dir else onnx_path.parent
        engine_path = engine_dir / f"{onnx_path.stem}.{digest}.trt{trt.__version__}.engine"
        if engine_path.is_file():
            engine_bytes = engine_path.read_bytes()
        else:
            builder = trt.Builder(logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(onnx_path.read_bytes()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
            config = builder.create_builder_config()
            if fp16 and getattr(builder, "platform_has_fast_fp16", True):
                config.set_flag(trt.BuilderFlag.FP16)
            profile = builder.create_optimization_profile()
            for i in range(network.num_inputs):
                inp = network.get_input(i)
                shapes = []
                for which in range(3):  # min, opt, max
                    dims = []
                    for axis, d in enumerate(tuple(inp.shape)):
                        if axis == 0 and d == -1:
                            dims.append((1, max(1, max_batch // 2), max_batch)[which])
                        elif d == -1:
                            dims.append(dynamic_range[which])
                        else:
                            dims.append(d)
                    shapes.append(tuple(dims))
                profile.set_shape(inp.name, *shapes)
            config.add_optimization_profile(profile)
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise RuntimeError(f"TensorRT engine build failed for {onnx_path}")
            engine_bytes = bytes(serialized)
            try:
                engine_path.write_bytes(engine_bytes)
            except OSError:
                pass  # read-only install: rebuild next time
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        stream = torch.cuda.current_stream()
        keep = []
        for n in self.input_names:
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(n)))
            t = torch.as_tensor(np.ascontiguousarray(inputs[n], dtype=dtype), device="cuda")
            keep.append(t)
            self.context.set_input_shape(n, tuple(t.shape))
            self.context.set_tensor_address(n, t.data_ptr())
        outs = []
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            dtype = torch.from_numpy(np.zeros(0, dtype=self.trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
            t = torch.empty(shape, dtype=dtype, device="cuda")
            outs.append(t)
            self.context.set_tensor_address(n, t.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return [o.float().cpu().numpy() for o in outs]
