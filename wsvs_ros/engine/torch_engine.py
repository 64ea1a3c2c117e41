"""`TorchEngine`: the network in PyTorch eager mode, fp32 on CPU and fp16 on CUDA."""

from __future__ import annotations

import torch

from wsvs_ros.cuda_graph import CudaGraphed
from wsvs_ros.model.two_stream import TwoStreamNet


class TorchEngine:
    """Args:
    model: the network (moved to `device`, put in eval mode).
    device: where inputs and outputs live.
    half: run in float16; default True on CUDA (Tensor Cores), False on CPU (slow there).
    cuda_graph: on CUDA, replay the whole forward pass as one captured CUDA graph (batch-1 inference is otherwise
        bound by per-layer launch overhead).
    """

    def __init__(
        self,
        model: TwoStreamNet,
        *,
        device: torch.device | str = "cpu",
        half: bool | None = None,
        cuda_graph: bool = False,
    ):
        self.device = torch.device(device)
        self.half = self.device.type == "cuda" if half is None else half
        self.model = model.to(self.device, torch.float16 if self.half else torch.float32).eval()
        if self.device.type == "cuda":
            # Input shapes never change in a run, so let cuDNN time its algorithms once: about 2x on VGG-16 convs.
            torch.backends.cudnn.benchmark = True
        self._forward = CudaGraphed(self._eager) if cuda_graph and self.device.type == "cuda" else self._eager

    @torch.inference_mode()
    def infer(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return self._forward(rgb, flow)

    def _eager(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        dtype = torch.float16 if self.half else torch.float32
        return self.model(rgb.to(dtype), flow.to(dtype)).float()
