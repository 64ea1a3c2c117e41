"""The one contract every inference runtime meets."""

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
