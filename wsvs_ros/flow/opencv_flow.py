"""`OpenCVFlow`: dense optical flow with OpenCV on the CPU (DIS or Farnebäck), the fallback and reference backend.

Same interface and flow convention as `TorchFlow`: prev(y, x) ≈ cur(y + flow_y, x + flow_x).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from wsvs_ros.flow.torch_flow import check_frame_pair

METHODS = ("dis", "farneback")
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class OpenCVFlow:
    """Dense optical flow prev -> cur with OpenCV, one batch item at a time on the host.

    The OpenCV flow object is created once and reused for every call, so an instance must not be shared between
    threads.

    Args:
        method: "dis" (Kroeger et al. 2016, fast) or "farneback" (Farnebäck 2003).
        preset: DIS quality preset, "ultrafast", "fast" or "medium" (DIS only).
        pyr_scale, levels, winsize, iterations, poly_n, poly_sigma: Farnebäck's parameters, with the values of
            OpenCV's optical-flow tutorial (Farnebäck only): pyramid scale step, pyramid levels, averaging window
            (pixels), iterations per level, pixel neighbourhood of the polynomial expansion (5 or 7) and the Gaussian
            sigma that goes with it (1.1 for 5, 1.5 for 7; the tutorial uses 1.2 with 5).
    Raises:
        ValueError: if `method` or `preset` is unknown or a Farnebäck parameter is out of range.
    """

    def __init__(
        self,
        *,
        method: str = "dis",
        preset: str = "medium",
        pyr_scale: float = 0.5,
        levels: int = 3,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if preset not in DIS_PRESETS:
            raise ValueError(f"preset must be one of {tuple(DIS_PRESETS)}, got {preset!r}")
        if not 0.0 < pyr_scale < 1.0:
            raise ValueError(f"pyr_scale must be in (0, 1), got {pyr_scale!r}")
        for name, value in (("levels", levels), ("winsize", winsize), ("iterations", iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if poly_n not in (5, 7):
            raise ValueError(f"poly_n must be 5 or 7, got {poly_n!r}")
        if not poly_sigma > 0:
            raise ValueError(f"poly_sigma must be positive, got {poly_sigma!r}")
        self.method = method
        self.preset = preset
        self.pyr_scale = float(pyr_scale)
        self.levels = levels
        self.winsize = winsize
        self.iterations = iterations
        self.poly_n = poly_n
        self.poly_sigma = float(poly_sigma)
        self._cv_flow: cv2.DenseOpticalFlow
        if method == "dis":
            self._cv_flow = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])  # type: ignore[attr-defined]
        else:
            self._cv_flow = cv2.FarnebackOpticalFlow_create(  # type: ignore[attr-defined]
                numLevels=levels,
                pyrScale=pyr_scale,
                fastPyramids=False,
                winSize=winsize,
                numIters=iterations,
                polyN=poly_n,
                polySigma=poly_sigma,
                flags=0,
            )

    @property
    def params(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-serialisable: `OpenCVFlow(**flow.params)` rebuilds it."""
        return {
            "method": self.method,
            "preset": self.preset,
            "pyr_scale": self.pyr_scale,
            "levels": self.levels,
            "winsize": self.winsize,
            "iterations": self.iterations,
            "poly_n": self.poly_n,
            "poly_sigma": self.poly_sigma,
        }

    def __repr__(self) -> str:
        return f"OpenCVFlow({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    @torch.no_grad()
    def __call__(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Flow from `prev` to `cur`: prev(y, x) ≈ cur(y + flow_y, x + flow_x).

        Args:
            prev, cur: (B, 3, H, W) RGB, values 0..255, floating point, on the same (any) device.
        Returns:
            (B, 2, H, W) float32 flow in pixels (channel 0 = x, 1 = y), on the inputs' device.
        Raises:
            ValueError: if the inputs are not matching (B, 3, H, W) floating-point tensors on one device.
        """
        check_frame_pair(prev, cur)
        # One transfer of both frames as 8-bit HWC, the format OpenCV's flow methods take.
        frames = torch.stack((prev, cur)).clamp(0, 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2)
        frames_np = frames.cpu().numpy()
        flows = np.empty((prev.shape[0], *prev.shape[-2:], 2), np.float32)
        for b in range(prev.shape[0]):
            grey0, grey1 = (cv2.cvtColor(np.ascontiguousarray(f[b]), cv2.COLOR_RGB2GRAY) for f in frames_np)
            flows[b] = self._cv_flow.calc(grey0, grey1, None)  # type: ignore[call-overload]
        return torch.from_numpy(flows).permute(0, 3, 1, 2).contiguous().to(prev.device)
