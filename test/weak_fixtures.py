"""Tiny datasets for the training tests: synthetic drives in their real layout, plus quick iconic images."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import pytest
import torch

from wsvs_ros.labels import DRIVE
from wsvs_training.datasets.synth_drives import label_map_path
from wsvs_training.synth.drives import write_drives

T = TypeVar("T")


def write_tiny_drives(
    root: Path, *, clips: int = 3, frames: int = 7, size: tuple[int, int] = (64, 32), seed: int = 3
) -> Path:
    """`clips` synthetic drives (the last one in "val") and 4 iconic images per DRIVE class, each class its colour.

    The generator's own iconic images take seconds each to find; flat class colours with noise are enough to
    exercise the classifier plumbing.
    """
    write_drives(root, clips=clips, frames_per_clip=frames, size=size, seed=seed, val_clips=1, iconic_per_class=0)
    rng = np.random.default_rng(0)
    write_iconic(root / "iconic", {c.name: [noisy_colour(rng, c.color, 20) for _ in range(4)] for c in DRIVE.classes})
    return root


def noisy_colour(rng: np.random.Generator, colour: tuple[int, int, int], noise: float) -> np.ndarray:
    """A 48x48 RGB uint8 image of one colour with Gaussian noise of `noise` (0..255 scale)."""
    return np.clip(np.array(colour) + rng.normal(0, noise, (48, 48, 3)), 0, 255).astype(np.uint8)


def write_iconic(root: Path, images: dict[str, list[np.ndarray]]) -> None:
    """RGB images as `root/{class}/{index:04d}.png`, the layout `wsvs-train classifiers` reads."""
    for name, arrays in images.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, rgb in enumerate(arrays):
            cv2.imwrite(str(root / name / f"{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_during_first_save(monkeypatch: pytest.MonkeyPatch, other_run: Callable[[], T]) -> list[T]:
    """Make `other_run()` (another process writing the same cache file) run inside the first `torch.save`, after its
    bytes are written and before the writer moves them into place; the returned list receives its result."""
    save, saves, results = torch.save, [], []

    def save_then_let_the_other_run_write(obj: object, f: object) -> None:
        save(obj, f)
        saves.append(f)
        if len(saves) == 1:
            results.append(other_run())

    monkeypatch.setattr(torch, "save", save_then_let_the_other_run_write)
    return results


def write_video_layout(drives: Path, out: Path, split: str = "train") -> Path:
    """The synthetic drives of `split` rewritten in the video layout: each clip once as a frame folder with its label
    maps in `labels_net/` (their ids as they are) and once as an mp4 (`{clip}_mp4.mp4`), tags beside both."""
    for tags in sorted((drives / "tags" / split).glob("*.json")):
        name = tags.stem
        frames = sorted((drives / "leftImg8bit_sequence" / split).glob(f"*/{name}_*_leftImg8bit.png"))
        folder = out / split / name
        (folder / "frames").mkdir(parents=True)
        (folder / "labels_net").mkdir()
        for frame in frames:
            shutil.copy(frame, folder / "frames" / frame.name)
            gt = label_map_path(drives, split, frame)
            shutil.copy(gt, folder / "labels_net" / gt.name)
        write_mp4(
            out / split / f"{name}_mp4.mp4", [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in frames]
        )
        for clip in (name, f"{name}_mp4"):
            shutil.copy(tags, out / split / f"{clip}.tags.json")
    return out


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> None:
    """RGB uint8 frames (all one size, even sides) as an MPEG-4 Part 2 video (OpenCV's built-in `mp4v` encoder)."""
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write mp4v to {path}"
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def write_stills_layout(drives: Path, out: Path, split: str = "train", every: int = 2) -> Path:
    """Every `every`-th frame of the synthetic drives of `split` as CamVid-style stills (`out/split/*.png`, labels in
    `out/{split}annot/` in CamVid's ids: the drive set's road, sidewalk, vegetation, building, sky, pole, car, person
    as CamVid's Road, Pavement, Tree, Building, Sky, Pole, Car, Pedestrian), without tags files."""
    drive_to_camvid = np.full(256, 11, np.uint8)  # 11: CamVid's void
    drive_to_camvid[: len(DRIVE)] = [3, 4, 5, 1, 0, 2, 8, 9]
    (out / split).mkdir(parents=True)
    (out / f"{split}annot").mkdir()
    frames = sorted((drives / "leftImg8bit_sequence" / split).glob("*/*_leftImg8bit.png"))[::every]
    for frame in frames:
        stem = frame.name.removesuffix("_leftImg8bit.png")
        shutil.copy(frame, out / split / f"{stem}.png")
        labels = cv2.imread(str(label_map_path(drives, split, frame)), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(out / f"{split}annot" / f"{stem}.png"), drive_to_camvid[labels])
    return out
