"""Inference engines: one `infer(rgb, flow) -> logits` contract, several runtimes.

`TorchEngine` (CPU/CUDA) and `OnnxRuntimeEngine` (CPU) live here; TensorRT is imported lazily so that a missing
runtime is an error only when asked for.
"""

from wsvs_ros.engine.loading import open_engine
from wsvs_ros.engine.onnxruntime_engine import OnnxRuntimeEngine
from wsvs_ros.engine.protocol import Engine
from wsvs_ros.engine.torch_engine import TorchEngine

__all__ = ["Engine", "OnnxRuntimeEngine", "TorchEngine", "open_engine"]
