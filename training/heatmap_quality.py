"""How well the heatmap masks B_k match the annotations: `wsvs-train heatmaps CONFIG.yaml [--split val]`.

Evaluation only, like `wsvs_training.evaluate`: the annotations are read here (`load_label_map`) to score the masks the
heatmap loss (Eq. 4) would use, and what this module returns never reaches a loss. A mask's errors become the
network's: pixels of B_k that are not class k (low precision) are pushed towards k, and class-k pixels outside B_k
(low recall) get no heatmap term at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from wsvs_ros.labels import VOID_ID, get_label_set
from wsvs_ros.preprocess import frame_to_tensor
from wsvs_ros.spec import ModelSpec
from wsvs_training.datasets.clips import Clip, load_label_map, read_rgb
from wsvs_training.heatmaps import HEATMAP_STRIDE
from wsvs_training.losses import binary_masks
from wsvs_training.weak_dataset import tag_vector

COUNTS = ("frames", "masked_frames", "mask_pixels", "class_pixels", "hits")


def mask_quality(
    source: Callable[[torch.Tensor], torch.Tensor],
    clips: Sequence[Clip],
    spec: ModelSpec,
    *,
    fraction: float = 0.2,
    every: int = 1,
    progress: bool = True,
    truth: Callable[[Clip, int], np.ndarray] = load_label_map,
) -> dict[str, Any]:
    """Precision and recall of the binary masks B_k = `binary_masks(source(frame), fraction)` against annotations.

    A class is scored on a frame only where its clip tags it, as only tagged classes get an Eq. 4 term. Frames are
    prepared as for training (`frame_to_tensor` at the spec's input size) and the annotation is resized to the
    heatmap grid (input size / HEATMAP_STRIDE) with nearest-neighbour sampling at cell centres
    (cv2.INTER_NEAREST_EXACT, the sampling `heatmap_loss` applies to the masks). Void pixels (`VOID_ID`) on the grid
    count neither in B_k nor in the class.

    Counts are pooled over all evaluated frames before dividing (a pixel-weighted figure, not a mean of per-frame
    ratios):
    - precision_k = hits_k / mask_pixels_k: share of B_k's non-void pixels labelled k.
    - recall_k = hits_k / class_pixels_k: share of the pixels labelled k that lie inside B_k.
    - f1_k = 2 hits_k / (mask_pixels_k + class_pixels_k), their harmonic mean where both exist.
    Each is None where its denominator is 0 (a class never tagged has no figures at all).

    Args:
        source: (1, 3, H, W) RGB 0..255 float -> (1, C, H / 8, W / 8) heatmaps in the spec's class order, e.g. a
            `wsvs_training.heatmaps.HeatmapSource`.
        clips: clips with annotations; their annotated target frames are evaluated.
        spec: input size and classes.
        fraction: B_k threshold relative to each map's maximum (`TrainConfig.mask_fraction`, paper: 0.2).
        every: evaluate every `every`-th annotated target frame of each clip (1: all of them).
        progress: show a progress bar over the frames.
        truth: reads a frame's (H, W) label map in the spec's class ids (`wsvs_training.datasets.stills` maps other
            label sets' ids onto it; ids outside the set but not `VOID_ID` count as wrong pixels).

    Returns:
        {"frames": frames evaluated, "fraction": fraction, "mean_f1": mean of f1_k over the classes with a non-empty
        mask (None if none has), "per_class": {class name: {"precision", "recall", "f1", "frames": frames where the
        class is tagged, "masked_frames": those of them where B_k is not empty, "mask_pixels", "class_pixels",
        "hits"}}}, every class of the spec listed.

    Raises:
        ValueError: `every` < 1, no clip has an annotated target frame, or the heatmaps' shape is not
            (1, C, H / 8, W / 8).
    """
    if every < 1:
        raise ValueError(f"every={every} must be >= 1 (1 evaluates every annotated frame)")
    frames = [(clip, i) for clip in clips for i in [t for t in clip.targets if t in clip.annotations][::every]]
    if not frames:
        raise ValueError(
            f"none of the {len(clips)} clip(s) has an annotated target frame; heatmap masks are scored against "
            "pixel annotations (Cityscapes' gtFine, CamVid's {split}annot folders, the synthetic drives' gtFine)"
        )
    names = spec.class_names
    labels = get_label_set(spec.label_set)
    grid = (len(names), spec.input_height // HEATMAP_STRIDE, spec.input_width // HEATMAP_STRIDE)
    counts = np.zeros((len(COUNTS), len(names)), np.int64)
    for clip, index in tqdm(frames, desc="heatmap masks", unit="frame", disable=not progress):
        heat = source(frame_to_tensor(read_rgb(clip.frames[index]), spec, torch.device("cpu")))
        if tuple(heat.shape) != (1, *grid):
            raise ValueError(
                f"heatmaps of shape {tuple(heat.shape)} for a {spec.input_width}x{spec.input_height} frame; expected "
                f"(1, {grid[0]}, {grid[1]}, {grid[2]}), one map per class of label set {spec.label_set!r} at 1/"
                f"{HEATMAP_STRIDE} of the input"
            )
        masks = binary_masks(heat.float(), fraction)[0].cpu().numpy()  # (C, h, w)
        annotation = cv2.resize(truth(clip, index), (grid[2], grid[1]), interpolation=cv2.INTER_NEAREST_EXACT)
        valid = annotation != VOID_ID
        for k in np.flatnonzero(tag_vector(clip.tags, labels).numpy()):
            mask = masks[k] & valid
            is_k = annotation == k
            counts[:, k] += (1, mask.any(), mask.sum(), is_k.sum(), (mask & is_k).sum())
    per_class = {
        name: _class_quality(dict(zip(COUNTS, column, strict=True)))
        for name, column in zip(names, counts.T.tolist(), strict=True)
    }
    f1s = [q["f1"] for q in per_class.values() if q["mask_pixels"] > 0]
    return {
        "frames": len(frames),
        "fraction": fraction,
        "mean_f1": float(np.mean(f1s)) if f1s else None,
        "per_class": per_class,
    }


def _class_quality(counts: dict[str, int]) -> dict[str, Any]:
    """Pooled counts of one class -> the counts with precision, recall and F1 (None where undefined)."""
    hits, mask, truth = counts["hits"], counts["mask_pixels"], counts["class_pixels"]
    return {
        "precision": hits / mask if mask else None,
        "recall": hits / truth if truth else None,
        "f1": 2 * hits / (mask + truth) if mask + truth else None,
        **counts,
    }


def format_table(quality: dict[str, Any]) -> str:
    """`mask_quality`'s result as a text table: class, precision, recall, F1 (percent), frames tagged."""

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    width = max(len("class"), *(len(n) for n in quality["per_class"]))
    lines = [f"{'class':<{width}}  {'precision':>9}  {'recall':>6}  {'F1':>5}  {'frames':>6}"]
    for name, q in quality["per_class"].items():
        lines.append(
            f"{name:<{width}}  {percent(q['precision']):>9}  {percent(q['recall']):>6}  {percent(q['f1']):>5}  "
            f"{q['frames']:>6}"
        )
    lines.append(
        f"in percent; mean F1 over classes with a mask: {percent(quality['mean_f1'])}  ({quality['frames']} frames, "
        f"B_k at {quality['fraction']:g} of each heatmap's maximum)"
    )
    return "\n".join(lines)
