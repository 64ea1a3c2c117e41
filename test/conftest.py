"""Shared fixtures: tiny models and specs so tests take seconds on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_spec

from wsvs_ros.model.checkpoint import build_model, save_checkpoint

__all__ = ["DEVICES", "SHARED_DATA", "tiny_spec"]  # tests import these from conftest

# The real-data folder beside the repository (../shared/data); WSVS_SHARED_DATA points elsewhere (a git worktree).
SHARED_DATA = Path(os.environ.get("WSVS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# CUDA variants run wherever a GPU is present (the lent GPU machine, a workstation); CI has CPU only.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


# torchvision.models.vgg16().state_dict(), written out: features.N are the 13 convs (ReLUs and pools sit at the
# indices in between), classifier.0/3/6 are fc6, fc7 and the 1000-way ImageNet classifier.
TORCHVISION_VGG16_CONVS = {
    0: (64, 3), 2: (64, 64),
    5: (128, 64), 7: (128, 128),
    10: (256, 128), 12: (256, 256), 14: (256, 256),
    17: (512, 256), 19: (512, 512), 21: (512, 512),
    24: (512, 512), 26: (512, 512), 28: (512, 512),
}  # fmt: skip
TORCHVISION_VGG16_SHAPES: dict[str, tuple[int, ...]] = {
    **{f"features.{i}.weight": (out, inp, 3, 3) for i, (out, inp) in TORCHVISION_VGG16_CONVS.items()},
    **{f"features.{i}.bias": (out,) for i, (out, _) in TORCHVISION_VGG16_CONVS.items()},
    "classifier.0.weight": (4096, 25088),
    "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096),
    "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}


@pytest.fixture(scope="session")
def vgg16_state() -> dict[str, torch.Tensor]:
    """torchvision's VGG-16 keys and shapes with random values (no weights can be downloaded).

    The classifier matrices are Hankel views, W[i, j] = s[i + j], of one short random vector: every row and column
    differs, so a transposed or misordered reshape is caught, yet torch.save writes the short vector: the file is
    59 MB (the convs), not 553 MB. Files of real size filled the CI disk (two per run, kept by pytest for three runs).
    """
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in TORCHVISION_VGG16_SHAPES.items():
        if key.startswith("classifier.") and len(shape) == 2:
            values = torch.randn(shape[0] + shape[1] - 1, generator=generator) * 0.01
            state[key] = values.as_strided(shape, (1, 1))
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.01
    return state


@pytest.fixture(scope="session")
def vgg16_file(vgg16_state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(vgg16_state, path)
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    spec = tiny_spec()
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, build_model(spec), spec, info={"trained_with": "test fixture"})
    return path
