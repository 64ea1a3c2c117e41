"""Checkpoint = one file holding the weights and the `ModelSpec` they need; loading names any mismatch."""

from __future__ import annotations

import os
import pickle
import zipfile
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


def check_model_file(path: Path) -> None:
    """Refuse a model path that names no file, a directory or an empty file, before any loader reads it.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: `path` is a directory or an empty file (a copy or download that failed), named as such.
    """
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".pt", ".onnx"))
        hint = f" (it holds {', '.join(inside[:5])})" if inside else ""
        raise ValueError(f"model {path} is a directory, not a model file; pass the .pt or .onnx file itself{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"model file {path} is empty (0 bytes); the copy or download that made it failed")


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint written by `save_checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a directory or an empty file, not a wsvs_ros checkpoint, invalid metadata (the field is named),
            or weights that do not fit the network the metadata describes (the tensors are named).
    """
    path = Path(path)
    check_model_file(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message offers weights_only=False, which would run whatever code the file holds: never that.
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path} is not a readable wsvs_ros checkpoint: not a file torch.save wrote (neither its zip format "
                "nor a legacy pickle of tensors); checkpoints come from wsvs-train"
            ) from None
        detail = str(e).partition("WeightsUnpickler error:")[2].strip().splitlines()
        raise ValueError(
            f"{path} is not a readable wsvs_ros checkpoint: it holds Python objects, not only tensors and plain data "
            f"({detail[0] if detail else 'refused by torch.load(weights_only=True)'}), and is not unpickled"
        ) from None
    except Exception as e:  # torch raises several types for other non-checkpoint files
        first = str(e).strip().splitlines()
        reason = first[0] if first else type(e).__name__
        raise ValueError(f"{path} is not a readable wsvs_ros checkpoint: {reason}") from e
    if not isinstance(payload, dict) or any(k not in payload for k in _KEYS):
        raise ValueError(f"{path} is not a wsvs_ros checkpoint (expected a dict with keys {list(_KEYS)})")
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: bad model metadata: {e}") from e
    model = build_model(spec)
    state = payload["state_dict"]
    expected = model.state_dict()
    if not isinstance(state, dict):
        raise ValueError(f"{path}: state_dict is a {type(state).__name__}, not a dict of tensors")
    problems = _state_mismatch(expected, state)
    if problems:
        raise ValueError(f"{path}: weights do not match the network its metadata describes: {problems}")
    model.load_state_dict(state, strict=True)
    return Checkpoint(model=model.eval(), spec=spec, info=dict(payload["info"]))


def _state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, Any]) -> str:
    """One line naming the missing, unexpected and misshapen tensors of `given` (a few of each); "" if it fits."""

    def first(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshapen = [
        f"{k} {tuple(given[k].shape)} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if isinstance(given.get(k), torch.Tensor) and given[k].shape != v.shape
    ]
    not_tensors = [k for k in expected if k in given and not isinstance(given[k], torch.Tensor)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing ({first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({first(unexpected)})")
    if misshapen:
        parts.append(f"{len(misshapen)} of the wrong shape ({first(misshapen)})")
    if not_tensors:
        parts.append(f"{len(not_tensors)} not tensors ({first(not_tensors)})")
    return "; ".join(parts)
