"""Inference engines: one `infer(rgb, flow) -> logits` contract, several runtimes.

`TorchEngine` (CPU/CUDA) and `OnnxRuntimeEngine` (CPU) live here; optional runtimes are imported lazily so that
a missing one is an error only when asked for.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Engine(Protocol):
    """Runs the two-stream network.

    `infer(rgb (1, 3, H, W), flow (1, 2L, H, W)) -> logits (1, C, H, W)`, inputs already normalised
    (`wsvs_ros.preprocess`), all on `device`.
    """

    device: torch.device

    def infer(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor: ...


from wsvs_ros.engine.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from wsvs_ros.engine.torch_engine import TorchEngine  # noqa: E402

__all__ = ["Engine", "OnnxRuntimeEngine", "TorchEngine"]
