"""Checkpoint = one file holding the weights and the `ModelSpec` they need; loading names any mismatch."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from wsvs_ros.atomic_file import atomic_write
from wsvs_ros.model.two_stream import TwoStreamNet
from wsvs_ros.spec import ModelSpec

_KEYS = ("spec", "state_dict", "info")


@dataclass
class Checkpoint:
    model: TwoStreamNet
    spec: ModelSpec
    info: dict[str, Any] = field(default_factory=dict)  # provenance: the command that trained it, metrics, ...


def default_model_path() -> Path:
    """The model shipped in the package, wsvs_ros/data/default_model.pt (check `.is_file()`: an install may lack it)."""
    # A filesystem path: the package is installed unzipped (zip_safe=False), and the loaders want a real file.
    return Path(str(resources.files("wsvs_ros") / "data" / "default_model.pt"))


def build_model(spec: ModelSpec) -> TwoStreamNet:
    """A freshly initialised network shaped by `spec`."""
    return TwoStreamNet(
        spec.num_classes,
        flow_length=spec.flow_length,
        width=spec.width,
        output_stride=spec.output_stride,
        backbone=spec.backbone,
    )


def save_checkpoint(
    path: str | os.PathLike[str], model: TwoStreamNet, spec: ModelSpec, *, info: dict | None = None
) -> None:
    """Write atomically (temporary file + rename), so a crash mid-write never leaves a truncated checkpoint."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"spec": spec.to_dict(), "state_dict": state, "info": dict(info or {})}
    with atomic_write(path) as f:
        torch.save(payload, f)


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint written by `save_checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a wsvs_ros checkpoint, invalid metadata (the field is named), or weights that do not fit
            the network the metadata describes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for non-checkpoint files
        raise ValueError(f"{path} is not a readable wsvs_ros checkpoint: {e}") from e
    if not isinstance(payload, dict) or any(k not in payload for k in _KEYS):
        raise ValueError(f"{path} is not a wsvs_ros checkpoint (expected a dict with keys {list(_KEYS)})")
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: bad model metadata: {e}") from e
    model = build_model(spec)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the network its metadata describes: {e}") from e
    return Checkpoint(model=model.eval(), spec=spec, info=dict(payload["info"]))
