"""Shared fixtures: tiny models and specs so tests take seconds on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsvs_ros.labels import DRIVE
from wsvs_ros.model.checkpoint import build_model, save_checkpoint
from wsvs_ros.spec import ModelSpec

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# CUDA variants run wherever a GPU is present (the lent GPU machine, a workstation); CI has CPU only.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def tiny_spec(**kw) -> ModelSpec:
    """A 64x32-input, 1/32-width model spec (opencv flow: fast and exact enough for plumbing tests)."""
    defaults = dict(input_width=64, input_height=32, flow_length=4, width=1 / 32, flow_method="opencv")
    return ModelSpec(DRIVE.name, DRIVE.names, **{**defaults, **kw})


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    spec = tiny_spec()
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, build_model(spec), spec, info={"trained_with": "test fixture"})
    return path
