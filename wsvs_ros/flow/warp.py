"""Backward warping with a dense flow, and the photometric error it leaves.

Flow convention everywhere in `wsvs_ros.flow` (the same as OpenCV's `calcOpticalFlowFarneback(prev, next)`):
a flow (B, 2, H, W) in pixels, channel 0 = x, channel 1 = y, such that prev(y, x) ≈ cur(y + flow_y, x + flow_x).
So `backward_warp(cur, flow)` is an estimate of `prev`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_flow(name: str, image: torch.Tensor, flow: torch.Tensor) -> None:
    if image.dim() != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(image.shape)}")
    if flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[0] != image.shape[0] or flow.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"flow must be (B, 2, H, W) matching {name} {tuple(image.shape)}, got shape {tuple(flow.shape)}; "
            "resize the flow (and scale its values) to the image size first"
        )


def sample_positions(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute sampling positions x + flow_x, y + flow_y in pixels.

    Args:
        flow: (B, 2, H, W) displacements in pixels.
    Returns:
        (x, y), each (B, H, W) in the flow's dtype; pixel centres are at integer positions 0..W-1, 0..H-1.
    """
    _, _, h, w = flow.shape
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype)
    return flow[:, 0] + xs, flow[:, 1] + ys[:, None]


def inside_mask(flow: torch.Tensor) -> torch.Tensor:
    """Which pixels sample inside the image, i.e. 0 <= x + flow_x <= W-1 and 0 <= y + flow_y <= H-1.

    Args:
        flow: (B, 2, H, W) in pixels.
    Returns:
        (B, 1, H, W) bool.
    """
    _, _, h, w = flow.shape
    x, y = sample_positions(flow)
    return ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).unsqueeze(1)


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at (x + flow_x, y + flow_y) with bilinear interpolation; outside samples take the border value.

    Args:
        image: (B, C, H, W) floating point.
        flow: (B, 2, H, W) in pixels, same batch and size as `image`.
    Returns:
        (B, C, H, W) in the image's dtype.
    Raises:
        ValueError: if the shapes do not match.
    """
    _check_flow("image", image, flow)
    _, _, h, w = image.shape
    x, y = sample_positions(flow.to(image.dtype))
    # align_corners=True puts -1 and +1 on the centres of the first and last pixels, so pixel i maps to
    # 2 i / (W - 1) - 1 and one unit of flow is exactly one pixel. max(.., 1) keeps 1-pixel-wide images finite.
    grid = torch.stack((x * (2.0 / max(w - 1, 1)) - 1.0, y * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def photometric_error(
    prev: torch.Tensor, cur: torch.Tensor, flow: torch.Tensor, *, ignore_outside: bool = False
) -> torch.Tensor:
    """Mean absolute difference between `prev` and `cur` warped back by `flow`, per batch item.

    Args:
        prev, cur: (B, C, H, W) images in the same units (e.g. 0..255).
        flow: (B, 2, H, W) prev -> cur in pixels (zeros give the error without motion compensation).
        ignore_outside: average only over pixels whose sample falls inside `cur` (those that left the view have
            no correspondence and would otherwise count their border-clamped value).
    Returns:
        (B,) mean absolute error in the images' units; NaN for an item where every sample fell outside.
    Raises:
        ValueError: if the shapes do not match.
    """
    if prev.shape != cur.shape:
        raise ValueError(f"prev and cur must have the same shape, got {tuple(prev.shape)} and {tuple(cur.shape)}")
    diff = (backward_warp(cur, flow) - prev).abs().mean(dim=1, keepdim=True)
    if not ignore_outside:
        return diff.mean(dim=(1, 2, 3))
    mask = inside_mask(flow).to(diff.dtype)
    return (diff * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))
