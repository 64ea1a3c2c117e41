"""A `Clip` (consecutive frames of one video with its video-level tags), the tag files, and the annotation maps that
only evaluation reads.

Tags are video-level: `tags/{split}/{clip}.json` holding `{"tags": [class names]}` (one file per clip). The synthetic
generator writes them; for Cityscapes and CamVid they are derived once from the annotations (image-level labels
only) by `wsvs-train tags --dataset cityscapes|camvid --data ROOT --split SPLIT`, which loads the clips with
`require_tags=False` (no tags yet) and calls `write_tags_from_annotations`. The video layout
(`wsvs_training.datasets.video`) keeps a `{clip}.tags.json` beside each video file or frame folder instead; both hold
the same JSON and are read by `read_tag_file`. A clip's `annotations` are the paths of
pixel-level ground truth, which only `wsvs_training.evaluate` reads (`load_label_map`): training never opens them, so no
pixel label can reach a loss.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from wsvs_ros.labels import CITYSCAPES_LABEL_ID_TO_TRAIN_ID, VOID_ID, LabelSet

CAMVID_VOID = 11

"""SegNet's CamVid annotations mark void pixels 11."""


@dataclass(frozen=True)
class Clip:
    """Consecutive frames of one video.

    Attributes:
        name: unique within a split; names the tag file and the cache files.
        frames: frame paths in time order, consecutive (one flow per neighbouring pair).
        tags: the class names tagged on the video (weak labels).
        targets: indices into `frames` of the frames used as samples (the annotated ones where annotations are
            sparse, every frame for the synthetic drives).
        annotations: frame index -> ground-truth label map path; evaluation only (`load_label_map`).
        label_format: how the annotation files store classes: "train_ids" (ids as they are, 255 void),
            "cityscapes_label_ids" (mapped by CITYSCAPES_LABEL_ID_TO_TRAIN_ID) or "camvid" (11 = void).
    """

    name: str
    frames: tuple[Path, ...]
    tags: frozenset[str]
    targets: tuple[int, ...]
    annotations: Mapping[int, Path] = field(default_factory=dict)
    label_format: str = "train_ids"


def read_tags(root: Path, split: str, name: str, label_set: LabelSet, *, required: bool = True) -> frozenset[str]:
    """The class names tagged on clip `name`, from `tags/{split}/{name}.json` (`{"tags": [...]}`).

    Args:
        required: False reads a missing tag file as no tags (a present one is still read and checked).

    Raises:
        FileNotFoundError: no tag file while `required` (the message names `wsvs-train tags`).
        ValueError: a tag that is not a class of `label_set`.
    """
    path = root / "tags" / split / f"{name}.json"
    if not path.is_file():
        if not required:
            return frozenset()
        raise FileNotFoundError(
            f'clip {name} has no tag file {path}; write one with {{"tags": [class names]}} or, for Cityscapes or '
            f"CamVid, derive them once from the annotations with `wsvs-train tags --dataset cityscapes|camvid "
            f"--data {root} --split {split}`"
        )
    return read_tag_file(path, label_set)


def read_tag_file(path: Path, label_set: LabelSet) -> frozenset[str]:
    """The class names in a tag file `{"tags": [class names]}`, as `label_set` names them (aliases resolved).

    Raises:
        ValueError: the file is not JSON of that form (the message shows the form).
        ValueError: a tag that is not a class of `label_set` (the message lists its classes).
    """
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f'tag file {path} is not JSON ({e}); write {{"tags": ["road", "car", ...]}}') from None
    tags = raw.get("tags") if isinstance(raw, dict) else None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(
            f'tag file {path} must hold {{"tags": [class names]}}, e.g. {{"tags": ["road", "car"]}}; got {raw!r:.80}'
        )
    try:
        return frozenset(label_set.by_name(t).name for t in tags)
    except KeyError as e:
        raise ValueError(f"tag file {path}: {e.args[0]}") from None


def write_tag_file(path: Path, names: Sequence[str]) -> None:
    """Write `{"tags": names}` to `path` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tags": list(names)}) + "\n")


def annotation_tags(clips: Sequence[Clip], label_set: LabelSet, *, min_fraction: float = 0.0) -> dict[str, list[str]]:
    """Clip name -> the class names present in its annotations, in class-id order (void is no class).

    Args:
        min_fraction: a class is present when it covers more than 0 and at least this fraction of the clip's
            labelled (non-void) pixels, summed over its annotated frames. 0 for human annotations; network-made label
            maps scatter stray pixels of classes that are not there, which a small fraction (1e-4) drops.

    Raises:
        ValueError: a clip has no annotated frame (nothing to derive its tags from).
    """
    unannotated = [c.name for c in clips if not c.annotations]
    if unannotated:
        raise ValueError(
            f"{len(unannotated)} clip(s) have no annotation to derive tags from (first: {unannotated[0]}); "
            f"extract the pixel annotations (Cityscapes gtFine, CamVid SPLITannot, labels_net/) first"
        )
    out = {}
    for clip in clips:
        counts = np.zeros(256, np.int64)
        for index in clip.annotations:
            counts += np.bincount(load_label_map(clip, index).ravel(), minlength=256)
        counts[VOID_ID] = 0
        labelled = max(int(counts.sum()), 1)
        present = [i for i in np.flatnonzero(counts) if counts[i] >= min_fraction * labelled]
        out[clip.name] = [label_set.by_id(int(i)).name for i in present]
    return out


def write_tags_from_annotations(
    root: str | Path, split: str, clips: Sequence[Clip], label_set: LabelSet, *, min_fraction: float = 0.0
) -> None:
    """Write `tags/{split}/{clip}.json` with the classes present in each clip's annotations.

    This turns pixel labels into video-level tags (the weak labels the paper assumes given); it is a one-off
    dataset preparation step (`wsvs-train tags`), never part of training. Load the clips with `require_tags=False`
    for this, since their tag files do not exist yet.

    Args:
        label_set: the set whose train ids the annotations decode to (`load_label_map`): the dataset's own.
        min_fraction: see `annotation_tags`.

    Raises:
        ValueError: a clip has no annotated frame (nothing to derive its tags from); nothing is written then.
    """
    names = annotation_tags(clips, label_set, min_fraction=min_fraction)
    for clip in clips:
        write_tag_file(Path(root) / "tags" / split / f"{clip.name}.json", names[clip.name])


def load_label_map(clip: Clip, index: int) -> np.ndarray:
    """(H, W) uint8 train ids of annotated frame `index`, void = `VOID_ID`. Evaluation only.

    Raises:
        KeyError: the frame is not annotated.
        FileNotFoundError: the annotation file cannot be read.
    """
    path = clip.annotations[index]
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise FileNotFoundError(f"cannot read annotation {path}")
    if raw.ndim != 2:
        raise ValueError(f"annotation {path} must be a single-channel id image, got shape {raw.shape}")
    if clip.label_format == "train_ids":
        return raw.astype(np.uint8)
    lut = np.full(256, VOID_ID, np.uint8)
    if clip.label_format == "cityscapes_label_ids":
        for label_id, train_id in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
            lut[label_id] = train_id
    elif clip.label_format == "camvid":
        lut[:CAMVID_VOID] = np.arange(CAMVID_VOID)
    else:
        raise ValueError(f"clip {clip.name}: unknown label_format {clip.label_format!r}")
    return lut[raw]


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB image. Raises FileNotFoundError if it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
