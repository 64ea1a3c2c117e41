"""The synthetic drives written by `wsvs_training.synth` (`wsvs-train synth`): Cityscapes' layout with city `synth`,
every frame annotated in `gtFine/{split}/synth/*_gtFine_labelTrainIds.png` (DRIVE ids, 255 void).
"""

from __future__ import annotations

from pathlib import Path

from wsvs_ros.labels import DRIVE, LabelSet
from wsvs_training.datasets.cityscapes import _group_cityscapes_frames
from wsvs_training.datasets.clips import Clip, read_tags


def synth_clips(root: str | Path, split: str, *, label_set: LabelSet = DRIVE, require_tags: bool = True) -> list[Clip]:
    """Synthetic drives written by `wsvs_training.synth`: every frame is a target and (for evaluation) annotated.

    Args:
        require_tags: False gives clips without a tag file empty tags instead of raising FileNotFoundError.
    """
    root = Path(root)
    clips = []
    for name, frames in _group_cityscapes_frames(root / "leftImg8bit_sequence" / split).items():
        annotations = {}
        for i, frame in enumerate(frames):
            gt = label_map_path(root, split, frame)
            if gt.is_file():
                annotations[i] = gt
        clips.append(
            Clip(
                name=name,
                frames=tuple(frames),
                tags=read_tags(root, split, name, label_set, required=require_tags),
                targets=tuple(range(len(frames))),
                annotations=annotations,
                label_format="train_ids",
            )
        )
    return clips


def label_map_path(root: Path, split: str, frame: Path) -> Path:
    """Where the drives keep the DRIVE-id label map of `frame` (a `leftImg8bit_sequence/{split}/synth/` file)."""
    return root / "gtFine" / split / frame.parent.name / frame.name.replace("_leftImg8bit", "_gtFine_labelTrainIds")
