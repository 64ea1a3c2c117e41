"""Evaluation against pixel-level ground truth: `wsvs-train evaluate CKPT --data DIR --split val --out DIR`.

Reads annotations (`wsvs_training.datasets.clips.load_label_map`); only `wsvs_training.heatmap_quality` does too.
Frames go through the deployed preprocessing and flow window (`frame_to_tensor`, the model's flow backend,
`FlowWindow` via `window_flows`; the flows are those the node computes, cached per clip), the network, optionally a
dense CRF at the input size (`--crf`, paper 4.2), and the labels are resized to the annotation's size with nearest
neighbours.

Metrics come from one confusion matrix accumulated over all evaluated frames (rows: ground truth, columns:
prediction), void pixels (255) ignored:
- IoU_k = TP_k / (TP_k + FP_k + FN_k); a class with TP + FP + FN = 0 (absent from both the ground truth and the
  prediction of every frame) has no IoU (null in metrics.json) and is left out of the mean IoU.
- class accuracy_k = TP_k / (TP_k + FN_k); classes absent from the ground truth have none and are left out of the mean.
- global accuracy = sum TP / number of non-void pixels.
Annotations in another label set than the model's (CamVid's, Cityscapes' for a `drive` model) are mapped onto the
model's classes by name (`relabel_lut`); pixels of a class the model lacks (CamVid's sign, fence, bicyclist) are kept
as one extra confusion row, "unscored": whatever the model predicts there counts against that class's IoU and the
global accuracy, as it would in the dataset's own benchmark, but they have no IoU of their own.
By default only frames whose L flows all exist are evaluated (`skip_warming`): the first L frames of a clip are what
the node outputs while "warming up", and Cityscapes' / CamVid's annotated frames always have full windows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from wsvs_ros.crf import dense_crf
from wsvs_ros.labels import VOID_ID, LabelSet, get_label_set
from wsvs_ros.model.checkpoint import load_checkpoint
from wsvs_ros.model.two_stream import TwoStreamNet
from wsvs_ros.preprocess import frame_to_tensor, normalize_rgb
from wsvs_ros.spec import ModelSpec
from wsvs_training.datasets.clips import Clip, load_label_map, read_rgb
from wsvs_training.datasets.stills import OTHER_ID, relabel_lut
from wsvs_training.flow_snippets import FlowCache, has_full_window, window_flows


def confusion_matrix(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, [truth, prediction], over the pixels whose truth is not void.

    Args:
        prediction: (H, W) integer class ids in 0..C-1.
        truth: (H, W) integer class ids, `VOID_ID` for void.
    Raises:
        ValueError: shapes differ, or a non-void id is out of range.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} must have the same shape")
    valid = truth != VOID_ID
    t = truth[valid].astype(np.int64)
    p = prediction[valid].astype(np.int64)
    if t.size and (t.max() >= num_classes or p.max() >= num_classes or p.min() < 0):
        raise ValueError(f"class ids must lie in 0..{num_classes - 1} (or {VOID_ID} in the ground truth)")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """mIoU, mean class accuracy, global accuracy and per-class IoU / accuracy from a confusion matrix.

    `cm` is (C, C) for the C `names`, or (C + 1, C + 1) with a last row of unscored ground-truth pixels (a class the
    model lacks; see module docstring), which count as false positives of what was predicted there.
    Returns fractions in 0..1; per-class values are None where undefined (see module docstring).
    """
    cm = cm.astype(np.float64)
    k = len(names)
    tp = np.diag(cm)[:k]
    truth = cm.sum(axis=1)[:k]
    predicted = cm.sum(axis=0)[:k]
    union = truth + predicted - tp
    iou = [float(tp[k] / union[k]) if union[k] > 0 else None for k in range(len(names))]
    acc = [float(tp[k] / truth[k]) if truth[k] > 0 else None for k in range(len(names))]
    ious = [v for v in iou if v is not None]
    accs = [v for v in acc if v is not None]
    return {
        "miou": float(np.mean(ious)) if ious else None,
        "mean_class_acc": float(np.mean(accs)) if accs else None,
        "global_acc": float(tp.sum() / cm.sum()) if cm.sum() > 0 else None,
        "per_class_iou": dict(zip(names, iou, strict=True)),
        "per_class_acc": dict(zip(names, acc, strict=True)),
        "pixels": int(cm.sum()),
    }


def percent(value: float | None) -> str:
    """A metric in 0..1 as "12.3%", "n/a" for an undefined one (None)."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


@dataclass(frozen=True)
class Prediction:
    clip: str
    index: int
    labels: np.ndarray  # (H, W) uint8 at the annotation's size
    truth: np.ndarray  # (H, W) uint8


def evaluated_frames(clip: Clip, spec: ModelSpec, *, skip_warming: bool = True) -> list[int]:
    """The annotated target frames of a clip that evaluation scores (see `skip_warming` in the module docstring)."""
    return [
        i
        for i in clip.targets
        if i in clip.annotations and (not skip_warming or has_full_window(i, len(clip.frames), spec))
    ]


@torch.no_grad()
def predict_clip(
    model: TwoStreamNet,
    spec: ModelSpec,
    clip: Clip,
    flow_cache: FlowCache,
    *,
    crf: bool = False,
    skip_warming: bool = True,
    truth_lut: np.ndarray | None = None,
) -> list[Prediction]:
    """Predictions for the annotated target frames of a clip (labels at the annotation's size); `truth_lut` maps the
    annotation's ids onto the model's (`truth_mapping`)."""
    first, flows = flow_cache.get(clip)
    out = []
    for index in evaluated_frames(clip, spec, skip_warming=skip_warming):
        rgb = read_rgb(clip.frames[index])
        frame = frame_to_tensor(rgb, spec, torch.device("cpu"))
        stacked, _ = window_flows(flows, index - first, spec)
        logits = model(normalize_rgb(frame, spec), stacked[None])
        probs = logits.softmax(dim=1)
        if crf:
            probs = dense_crf(probs, frame)
        labels = probs.argmax(dim=1)[0].to(torch.uint8).numpy()
        truth = load_label_map(clip, index)
        if truth_lut is not None:
            truth = truth_lut[truth]
        labels = cv2.resize(labels, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
        out.append(Prediction(clip.name, index, labels, truth))
    return out


def truth_mapping(annotations: LabelSet, model: LabelSet) -> np.ndarray | None:
    """(256,) lookup from annotation ids to the model's ids, a class the model lacks to C (the unscored row), void
    kept; None when the sets are the same."""
    if annotations.name == model.name:
        return None
    lut = relabel_lut(annotations, model)
    lut[lut == OTHER_ID] = len(model)
    return lut


def evaluate_model(
    model: TwoStreamNet,
    spec: ModelSpec,
    clips: Sequence[Clip],
    *,
    cache_dir: str | Path,
    crf: bool = False,
    keep: int = 0,
    annotations: LabelSet | None = None,
    skip_warming: bool = True,
) -> tuple[dict[str, Any], np.ndarray, list[Prediction]]:
    """(metrics, confusion matrix, the first `keep` predictions) over all annotated targets of `clips`.

    Args:
        annotations: the label set the clips' annotations decode to (None: the model's).
        skip_warming: see the module docstring; False scores stills, whose flow window is all warming zeros.
    """
    model.eval()
    labels = get_label_set(spec.label_set)
    lut = None if annotations is None else truth_mapping(annotations, labels)
    size = len(labels) + (lut is not None)
    cm = np.zeros((size, size), np.int64)
    cache = FlowCache(Path(cache_dir) / "flow", spec)
    kept: list[Prediction] = []
    frames = 0
    for clip in clips:
        for p in predict_clip(model, spec, clip, cache, crf=crf, skip_warming=skip_warming, truth_lut=lut):
            cm += confusion_matrix(p.labels, p.truth, size)
            frames += 1
            if len(kept) < keep and (not kept or kept[-1].clip != p.clip):  # one frame per clip
                kept.append(p)
    if frames == 0:
        raise ValueError("no annotated frame with a full flow window in these clips; nothing to evaluate")
    metrics = metrics_from_confusion(cm, labels.names)
    metrics["frames"] = frames
    # Annotated frames too close to a clip's start for L flows: said, so a benchmark subset is never silent.
    metrics["frames_skipped_warming"] = sum(i in c.annotations for c in clips for i in c.targets) - frames
    return metrics, cm, kept


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: Path) -> None:
    """Row-normalised confusion matrix (each ground-truth class sums to 1) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(names), 1 + 0.6 * len(names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    for i in range(len(names)):
        for j in range(len(names)):
            if norm[i, j] >= 0.01:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay(rgb: np.ndarray, prediction: Prediction, labels: LabelSet) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the frame, ground truth and prediction side by side (void black)."""
    truth = labels.colorize(prediction.truth)
    pred = labels.colorize(prediction.labels)
    blend = (0.5 * rgb + 0.5 * pred).astype(np.uint8)
    return np.concatenate([rgb, truth, blend], axis=1)


def write_report(
    out: str | Path,
    metrics: dict[str, Any],
    cm: np.ndarray,
    predictions: Sequence[Prediction],
    clips: Sequence[Clip],
    labels: LabelSet,
) -> None:
    """out/metrics.json, out/confusion.png and out/overlay_{clip}_{frame}.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**metrics, "confusion": cm.tolist()}, indent=2) + "\n")
    unscored = ("unscored",) if cm.shape[0] > len(labels) else ()  # `truth_mapping`'s extra row
    plot_confusion(cm, (*labels.names, *unscored), out / "confusion.png")
    by_name = {c.name: c for c in clips}
    for p in predictions:
        rgb = read_rgb(by_name[p.clip].frames[p.index])
        rgb = cv2.resize(rgb, (p.truth.shape[1], p.truth.shape[0]), interpolation=cv2.INTER_AREA)
        image = overlay(rgb, p, labels)
        cv2.imwrite(str(out / f"overlay_{p.clip}_{p.index:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def evaluate_checkpoint(
    checkpoint: str | Path,
    clips: Sequence[Clip],
    *,
    out: str | Path,
    cache_dir: str | Path,
    crf: bool = False,
    overlays: int = 4,
    annotations: LabelSet | None = None,
    skip_warming: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint file on clips and write the report; returns the metrics. `annotations`, `skip_warming`:
    see `evaluate_model`."""
    ckpt = load_checkpoint(checkpoint)
    metrics, cm, kept = evaluate_model(
        ckpt.model, ckpt.spec, clips, cache_dir=cache_dir, crf=crf, keep=overlays, annotations=annotations,
        skip_warming=skip_warming,
    )  # fmt: skip
    metrics["checkpoint"] = str(checkpoint)
    metrics["crf"] = crf
    write_report(out, metrics, cm, kept, clips, get_label_set(ckpt.spec.label_set))
    return metrics


def perfect_coarse_labels(truth: np.ndarray, num_classes: int, cells: tuple[int, int]) -> np.ndarray:
    """The labels of an ideal score map on a (rows, cols) grid: each cell holds the class fractions of its area of
    `truth` (void counts for no class), upsampled bilinearly to `truth`'s size as the network's deconvolution is at
    init, then argmax (class 0 where no cell sees any class).
    """
    t = torch.from_numpy(truth.astype(np.int64))
    valid = t != VOID_ID
    one_hot = F.one_hot(torch.where(valid, t, 0), num_classes).permute(2, 0, 1)[None].float() * valid
    scores = F.adaptive_avg_pool2d(one_hot, cells)
    return F.interpolate(scores, size=truth.shape, mode="bilinear", align_corners=False).argmax(dim=1)[0].numpy()


def output_stride_bound(clips: Sequence[Clip], spec: ModelSpec, strides: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Metrics of `perfect_coarse_labels` for the score grid a stride-S network has at the spec's input size, over
    the frames evaluation scores, for each S in `strides`: what the output stride alone costs, however well the
    network learns. An estimate of the ceiling, not a proof (a learnt deconvolution is not bilinear).
    """
    labels = get_label_set(spec.label_set)
    k = len(labels)
    grids = {s: (-(-spec.input_height // s), -(-spec.input_width // s)) for s in strides}
    cms = {s: np.zeros((k, k), np.int64) for s in strides}
    for clip in clips:
        for index in evaluated_frames(clip, spec):
            truth = load_label_map(clip, index)
            for s, cells in grids.items():
                cms[s] += confusion_matrix(perfect_coarse_labels(truth, k, cells), truth, k)
    if not any(cm.sum() for cm in cms.values()):
        raise ValueError("no annotated frame with a full flow window in these clips; nothing to measure")
    return {s: {"cells": list(grids[s]), **metrics_from_confusion(cms[s], labels.names)} for s in strides}
