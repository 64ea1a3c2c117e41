"""Tiny datasets for the training tests: synthetic drives in their real layout, plus quick iconic images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.synth import write_drives
from wsvs_ros.labels import DRIVE


def write_tiny_drives(
    root: Path, *, clips: int = 3, frames: int = 7, size: tuple[int, int] = (64, 32), seed: int = 3
) -> Path:
    """`clips` synthetic drives (the last one in "val") and 4 iconic images per DRIVE class, each class its colour.

    The generator's own iconic images take seconds each to find; flat class colours with noise are enough to
    exercise the classifier plumbing.
    """
    write_drives(root, clips=clips, frames_per_clip=frames, size=size, seed=seed, val_clips=1, iconic_per_class=0)
    rng = np.random.default_rng(0)
    for c in DRIVE.classes:
        folder = root / "iconic" / c.name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            image = np.clip(np.array(c.color) + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root
