"""The on-disk dataset layouts by name, for configs and the command line: `DATASETS` and `dataset_clips`."""

from __future__ import annotations

from pathlib import Path

from wsvs_ros.labels import LabelSet
from wsvs_ros.spec import ModelSpec
from wsvs_training.datasets.camvid import camvid_clips
from wsvs_training.datasets.cityscapes import cityscapes_clips
from wsvs_training.datasets.clips import Clip
from wsvs_training.datasets.stills import still_clips
from wsvs_training.datasets.synth_drives import synth_clips
from wsvs_training.datasets.video import video_clips

DATASETS = ("synth", "cityscapes", "camvid", "video", "stills")

"""The on-disk layouts `dataset_clips` reads."""

OWN_TAGS_FOLDER = ("video", "stills")
"""Layouts whose `{clip}.tags.json` files may lie in a folder of their own (`tags`), away from read-only footage."""

ANNOTATION_LABEL_SETS = {"cityscapes": "cityscapes", "camvid": "camvid", "video": "cityscapes", "stills": "camvid"}
"""The label set a layout's annotations decode to (`load_label_map`); the synthetic drives' is the trained set."""


def dataset_clips(
    dataset: str,
    root: str | Path,
    split: str,
    *,
    spec: ModelSpec,
    label_set: LabelSet,
    require_tags: bool = True,
    cache: str | Path | None = None,
    tags_dir: str | Path | None = None,
) -> list[Clip]:
    """The clips of a split in one of the `DATASETS` layouts; `spec` is read by CamVid only (its flow window).

    Args:
        cache: the video layout extracts video files' frames to `cache/frames/` (None refuses video files).
        tags_dir: the video and stills layouts' tags folder (None: beside the clips); the others read
            `root/tags/split/`.

    Raises:
        ValueError: `dataset` is not one of `DATASETS`, or `tags_dir` is given for a layout that does not read it;
            and what the layout's loader raises.
    """
    if tags_dir is not None and dataset not in OWN_TAGS_FOLDER:
        raise ValueError(
            f"tags={tags_dir} is read by the video and stills layouts only; dataset {dataset} reads "
            f"{root}/tags/{split}/"
        )
    if dataset == "synth":
        return synth_clips(root, split, label_set=label_set, require_tags=require_tags)
    if dataset == "cityscapes":
        return cityscapes_clips(root, split, label_set=label_set, require_tags=require_tags)
    if dataset == "camvid":
        return camvid_clips(root, split, spec=spec, label_set=label_set, require_tags=require_tags)
    if dataset == "video":
        frames = None if cache is None else Path(cache) / "frames"
        return video_clips(
            root, split, label_set=label_set, frames_cache=frames, tags_dir=tags_dir, require_tags=require_tags
        )
    if dataset == "stills":
        return still_clips(root, split, label_set=label_set, tags_dir=tags_dir, require_tags=require_tags)
    raise ValueError(f"dataset={dataset!r}: use one of {DATASETS}")
