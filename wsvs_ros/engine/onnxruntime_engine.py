"""`OnnxRuntimeEngine`: an exported model on ONNX Runtime's CPU provider (the no-PyTorch-weights reference)."""

from __future__ import annotations

import os

import numpy as np
import torch

from wsvs_ros.engine.onnx_export import INPUT_NAMES, OUTPUT_NAME, read_onnx_spec


class OnnxRuntimeEngine:
    """Args:
    path: an ONNX file written by `export_onnx`.
    threads: intra-op threads (0: ONNX Runtime's default, all cores).
    Raises:
        ImportError: onnxruntime is not installed (install the [onnx] extra).
    """

    device = torch.device("cpu")

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("the onnxruntime backend needs onnxruntime: pip install 'wsvs_ros[onnx]'") from e
        self.spec = read_onnx_spec(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def infer(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        feeds = {
            name: np.ascontiguousarray(t.detach().cpu().float().numpy())
            for name, t in zip(INPUT_NAMES, (rgb, flow), strict=True)
        }
        (logits,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(logits)
