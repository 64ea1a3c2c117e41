"""Annotated real frames without their video: CamVid stills and Cityscapes snippets, for scoring heatmap masks, and
the `stills` training layout (`still_clips`).

- CamVid as SegNet prepared it (`{split}/*.png|jpg`, `{split}annot/*.png` with ids 0..10, 11 void; human labels).
  No neighbouring video frames are needed: each still is a one-frame clip.
- Cityscapes snippets as vid2vid ships them (`seqNNNN/frames/*_leftImg8bit.jpg`, `seqNNNN/labels_net/
  *_labelIds_net.png`, Cityscapes labelIds made by a segmentation network: comparison only, not ground truth).

A clip's tags are the classes its label map shows (the image-level tags the paper assumes are given); they decide
which classes are scored on a frame, as only tagged classes get a heatmap term (Eq. 4). Pixel labels never leave the
scoring code (`wsvs_training.heatmap_quality`).

The heatmaps are made in the model's label set (e.g. `drive`), which need not be the dataset's: `relabel_lut` maps the
dataset's ids onto it by class name (aliases included); a dataset class the label set lacks becomes OTHER_ID, which
counts against a mask's precision like any wrong pixel, and void stays void.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wsvs_ros.labels import CAMVID, CITYSCAPES, VOID_ID, LabelSet
from wsvs_training.datasets.clips import Clip, load_label_map, read_tag_file
from wsvs_training.datasets.video import TAGS_SUFFIX, video_clips

OTHER_ID = 254  # a labelled pixel of a class the target label set does not have
STILLS = ("camvid", "cityscapes")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Dataset classes that are another set's class under another name (beyond LabelClass.aliases).
SYNONYMS = {"pedestrian": "person"}


def relabel_lut(source: LabelSet, target: LabelSet) -> np.ndarray:
    """(256,) uint8 lookup table: `source` ids -> `target` ids by class name; unmatched classes -> OTHER_ID, void and
    ids outside the source set stay VOID_ID."""
    lut = np.full(256, VOID_ID, np.uint8)
    names = {n.lower() for c in target.classes for n in (c.name, *c.aliases)}
    for c in source.classes:
        matched = [n for n in (c.name, *c.aliases, SYNONYMS.get(c.name, "")) if n and n.lower() in names]
        lut[c.id] = target.by_name(matched[0]).id if matched else OTHER_ID
    return lut


def translate_tags(tags: frozenset[str], source: LabelSet, target: LabelSet) -> frozenset[str]:
    """Tags named in `source` as `target` names them, matched by name as `relabel_lut` matches ids; a class `target`
    lacks is dropped (no class of the trained set is present for it)."""
    lut = relabel_lut(source, target)
    ids = (int(lut[source.by_name(t).id]) for t in tags)
    return frozenset(target.by_id(i).name for i in ids if i < len(target))


def still_clips(
    root: str | Path,
    split: str,
    *,
    label_set: LabelSet,
    tags_dir: str | Path | None = None,
    require_tags: bool = True,
) -> list[Clip]:
    """The `stills` training layout: CamVid-style stills (`root/split/*.png|jpg`, labels in `root/{split}annot/`, read
    by evaluation only), each a one-frame clip whose tags are `{stem}.tags.json` in `tags_dir` (None: `root/split`).

    A still has no neighbouring frames, so its flow window is all warming zeros: what the node feeds the flow
    stream on a camera's first frame. Training on such clips teaches the appearance stream with the flow stream silent.

    Raises:
        FileNotFoundError: what `camvid_stills` raises, or a missing tags file while `require_tags` (the message says
            how to write them).
    """
    tags_folder = Path(root) / split if tags_dir is None else Path(tags_dir)
    clips = []
    for clip in camvid_stills(root, split):
        path = tags_folder / f"{clip.name}{TAGS_SUFFIX}"
        if path.is_file():
            clip = dataclasses.replace(clip, tags=read_tag_file(path, label_set))
        elif require_tags:
            raise FileNotFoundError(
                f"still {clip.name} has no tags file {path}; derive them once from the label maps with "
                f"`wsvs-train tags --dataset stills --data {root} --split {split} --tags {tags_folder}`"
            )
        clips.append(clip)
    return clips


def _tags(labels: np.ndarray, label_set: LabelSet) -> frozenset[str]:
    return frozenset(label_set.by_id(int(i)).name for i in np.unique(labels) if i < len(label_set))


def camvid_stills(root: str | Path, split: str) -> list[Clip]:
    """CamVid's annotated stills of a split, one untagged clip each (`stills` tags them).

    Raises:
        FileNotFoundError: `root/split` or `root/{split}annot` is missing, holds no image, or a still has no label.
    """
    root = Path(root)
    images, annotations = root / split, root / f"{split}annot"
    if not images.is_dir() or not annotations.is_dir():
        raise FileNotFoundError(f"CamVid stills need {images} and {annotations} (SegNet's layout)")
    clips = []
    for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        label = annotations / f"{image.stem}.png"
        if not label.is_file():
            raise FileNotFoundError(f"CamVid still {image} has no label map {label}")
        clips.append(_still(image, label, "camvid"))
    if not clips:
        raise FileNotFoundError(f"no CamVid still (*.png, *.jpg) in {images}")
    return clips


def cityscapes_stills(root: str | Path, *, every: int = 1) -> list[Clip]:
    """Frames of vid2vid's Cityscapes snippets (`root/seqNNNN/frames`, `labels_net`), every `every`-th of each, one
    untagged clip each (`stills` tags them).

    Raises:
        FileNotFoundError: no snippet under root has label maps (what `video_clips` raises for a bad folder).
        ValueError: a snippet's `labels_net` holds another number of maps than it has frames.
    """
    root = Path(root)
    # The snippets are frame folders of the video layout, whose labels_net/ maps are their annotations.
    snippets = video_clips(root.parent, root.name, label_set=CITYSCAPES, frames_cache=None, require_tags=False)
    clips = [
        _still(snippet.frames[i], snippet.annotations[i], "cityscapes_label_ids")
        for snippet in snippets
        for i in sorted(snippet.annotations)[::every]
    ]
    if not clips:
        raise FileNotFoundError(f"no Cityscapes snippet frames with label maps under {root} (seqNNNN/labels_net)")
    return clips


def _still(image: Path, label: Path, label_format: str) -> Clip:
    return Clip(image.stem, (image,), frozenset(), (0,), {0: label}, label_format)


def stills(
    dataset: str, root: str | Path, split: str, label_set: LabelSet
) -> tuple[list[Clip], Callable[[Clip, int], np.ndarray]]:
    """Annotated stills scored in `label_set`: the clips, tagged with the `label_set` classes their label maps show,
    and the function reading a frame's label map in `label_set` ids (for `mask_quality(truth=...)`).

    Args:
        dataset: "camvid" (`camvid_stills` of `split`) or "cityscapes" (`cityscapes_stills`, no splits: "all").

    Raises:
        ValueError: unknown dataset, or a split for Cityscapes other than "all".
    """
    if dataset == "camvid":
        clips, source = camvid_stills(root, split), CAMVID
    elif dataset == "cityscapes":
        if split != "all":
            raise ValueError(f"split={split!r}: the Cityscapes snippets are scored as one set, use --split all")
        clips, source = cityscapes_stills(root), CITYSCAPES
    else:
        raise ValueError(f"stills dataset {dataset!r}: use one of {STILLS}")
    lut = relabel_lut(source, label_set)

    def truth(clip: Clip, index: int) -> np.ndarray:
        return lut[load_label_map(clip, index)]

    tagged = [dataclasses.replace(c, tags=_tags(truth(c, 0), label_set)) for c in clips]
    return tagged, truth
