"""Network-input encoding shared by the node, replay, export calibration and training (one source of truth)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from wsvs_ros.spec import ModelSpec


def frame_to_tensor(rgb: np.ndarray, spec: ModelSpec, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 in 0..255 at the model's input size, on `device`.

    The uint8 image crosses to the device before any arithmetic (a quarter of the float32 bytes), and is resized
    there with antialiasing so that downscaled 1024x512 frames do not alias before the flow.
    Raises:
        ValueError: for anything but a non-empty (H, W, 3) uint8 array.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    rgb = np.ascontiguousarray(rgb)
    if not rgb.flags.writeable:
        # A zero-copy decode of a message buffer is read-only; torch would warn on sharing it, and only the float
        # copy below (or the device copy) is ever written, so sharing is safe.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            x = torch.from_numpy(rgb)
    else:
        x = torch.from_numpy(rgb)
    x = x.to(device, non_blocking=True)
    x = x.permute(2, 0, 1).unsqueeze(0).float()
    if (x.shape[3], x.shape[2]) != spec.input_size:
        x = F.interpolate(
            x, size=(spec.input_height, spec.input_width), mode="bilinear", align_corners=False, antialias=True
        )
    return x


def normalize_rgb(frame: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """(B, 3, H, W) RGB in 0..255 -> the RGB stream's input, (x / 255 - mean) / std per channel."""
    scale, shift = _rgb_affine(spec.rgb_mean, spec.rgb_std, frame.device, frame.dtype)
    return torch.addcmul(shift, frame, scale)


@functools.lru_cache(maxsize=16)
def _rgb_affine(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) scale and shift with x * scale + shift == (x / 255 - mean) / std, made once per device: building
    them per frame would be two blocking host-to-device copies."""
    std_t = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1)
    shift = (-torch.tensor(mean, dtype=torch.float64) / std_t).view(1, 3, 1, 1)
    return scale.to(device, dtype), shift.to(device, dtype)


def encode_flow(flow: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """(B, 2k, H, W) flow in pixels -> the flow stream's input: flow / flow_scale, clipped to ±flow_clip.

    Linear around zero, so the zeros that stand in for missing flows stay zeros.
    """
    return (flow / spec.flow_scale).clamp(-spec.flow_clip, spec.flow_clip)
