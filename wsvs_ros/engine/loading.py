"""`open_engine`: a model file + backend name -> a ready `Engine` and its `ModelSpec` (for node, replay, CLI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from wsvs_ros.engine.engine_cache import default_cache_dir
from wsvs_ros.engine.onnx_export import cached_onnx
from wsvs_ros.engine.onnxruntime_engine import OnnxRuntimeEngine
from wsvs_ros.engine.protocol import Engine
from wsvs_ros.engine.torch_engine import TorchEngine
from wsvs_ros.model.checkpoint import check_model_file, load_checkpoint
from wsvs_ros.spec import ModelSpec

if TYPE_CHECKING:
    from wsvs_ros.engine.tensorrt_runtime import TensorRTEngine

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "int8")


def open_engine(
    model: str | os.PathLike[str],
    *,
    backend: str = "torch",
    device: str | torch.device = "cpu",
    precision: str = "auto",
    build_engine_if_missing: bool = False,
    cuda_graph: bool = False,
    onnx_cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Engine, ModelSpec]:
    """Load `model` for `backend`.

    Args:
        model: a `.pt` checkpoint (torch, onnxruntime) or an exported `.onnx` (onnxruntime, tensorrt).
        backend: "torch", "onnxruntime" or "tensorrt".
        device: "cpu", "cuda" or "cuda:N".
        precision: "auto" (fp16 on CUDA, fp32 on CPU), "fp32", "fp16", or "int8" (TensorRT only).
        build_engine_if_missing: TensorRT only: build the engine now (minutes) instead of failing with the command.
        cuda_graph: torch on CUDA only: replay the network as a captured CUDA graph.
        onnx_cache_dir: onnxruntime with a `.pt`: where its export is kept (`cached_onnx`; None:
            `$XDG_CACHE_HOME/wsvs_ros/onnx`, beside the TensorRT engines).
    Raises:
        FileNotFoundError: no such model file.
        ValueError: a combination that cannot work, naming the fix (e.g. a .pt file for onnxruntime).
        ImportError: the backend's runtime is not installed.
    """
    path = Path(model)
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    check_model_file(path)
    if device.type == "cuda" and not torch.cuda.is_available() and backend != "tensorrt":
        # (TensorRT still runs then, through pycuda, with frames and flows on the CPU.)
        raise ValueError(f"device {device} asked for, but this PyTorch build sees no CUDA device; use device cpu")
    is_onnx = path.suffix == ".onnx"
    if backend == "torch":
        if is_onnx:
            raise ValueError(f"the torch backend loads .pt checkpoints; {path} is ONNX (use backend onnxruntime)")
        if precision == "int8":
            raise ValueError("int8 needs the tensorrt backend")
        ckpt = load_checkpoint(path)
        half = None if precision == "auto" else precision == "fp16"
        return TorchEngine(ckpt.model, device=device, half=half, cuda_graph=cuda_graph), ckpt.spec
    if backend == "onnxruntime":
        if device.type != "cpu" or precision not in ("auto", "fp32"):
            raise ValueError("the onnxruntime backend runs fp32 on the CPU; use device cpu")
        if not is_onnx:  # a checkpoint: exported once, then read from the cache
            path = cached_onnx(path, onnx_cache_dir or default_cache_dir().parent / "onnx")
        engine: OnnxRuntimeEngine | TensorRTEngine = OnnxRuntimeEngine(path)
        return engine, engine.spec
    if not is_onnx:
        raise ValueError(f"the tensorrt backend loads an exported .onnx; run `wsvs export {path} --out model.onnx`")
    if device.type != "cuda":
        raise ValueError("the tensorrt backend needs a CUDA device; use device cuda")
    from wsvs_ros.engine.tensorrt_cache import load_tensorrt_engine  # lazy: needs tensorrt

    engine = load_tensorrt_engine(
        path, precision="fp16" if precision == "auto" else precision, device=device,
        build_if_missing=build_engine_if_missing,
    )  # fmt: skip
    return engine, engine.spec
