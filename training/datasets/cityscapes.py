"""Cityscapes: `leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`, the 30-frame snippets whose
20th frame (index 19) is annotated in `gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png` (Cityscapes
label ids, mapped to the 19 train ids by `CITYSCAPES_LABEL_ID_TO_TRAIN_ID`). Tags: `tags/{split}/{city}_{seq}.json`.
"""

from __future__ import annotations

import re
from pathlib import Path

from wsvs_ros.labels import CITYSCAPES, LabelSet
from wsvs_training.datasets.clips import Clip, read_tags

CITYSCAPES_ANNOTATED_INDEX = 19

"""Cityscapes annotates the 20th frame of each 30-frame snippet (paper 4.1)."""


_CITYSCAPES_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png$")


def cityscapes_clips(
    root: str | Path, split: str, *, label_set: LabelSet = CITYSCAPES, require_tags: bool = True
) -> list[Clip]:
    """Cityscapes `leftImg8bit_sequence` snippets, the annotated 20th frame of each as the target.

    Args:
        require_tags: False gives clips without a tag file empty tags (to derive them: `write_tags_from_annotations`).

    Raises:
        FileNotFoundError: the split's sequence folder is missing, a snippet lacks its annotated frame, or a tag file
            is missing while `require_tags` (the message says how to write it).
    """
    root = Path(root)
    clips = []
    for name, frames in _group_cityscapes_frames(root / "leftImg8bit_sequence" / split).items():
        if len(frames) <= CITYSCAPES_ANNOTATED_INDEX:
            raise FileNotFoundError(
                f"Cityscapes snippet {name} has {len(frames)} frames in leftImg8bit_sequence/{split}; the annotated "
                f"frame is the {CITYSCAPES_ANNOTATED_INDEX + 1}th of 30, extract the full sequence package"
            )
        annotated = frames[CITYSCAPES_ANNOTATED_INDEX]
        gt = (
            root / "gtFine" / split / annotated.parent.name / annotated.name.replace("_leftImg8bit", "_gtFine_labelIds")
        )
        clips.append(
            Clip(
                name=name,
                frames=tuple(frames),
                tags=read_tags(root, split, name, label_set, required=require_tags),
                targets=(CITYSCAPES_ANNOTATED_INDEX,),
                annotations={CITYSCAPES_ANNOTATED_INDEX: gt} if gt.is_file() else {},
                label_format="cityscapes_label_ids",
            )
        )
    return clips


def _group_cityscapes_frames(split_dir: Path) -> dict[str, list[Path]]:
    """{city}_{seq} -> its frames sorted by frame number, for a `leftImg8bit_sequence/{split}` folder."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir} does not exist (expected the Cityscapes sequence layout)")
    groups: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(split_dir.glob("*/*_leftImg8bit.png")):
        m = _CITYSCAPES_NAME.match(path.name)
        if m is None:
            raise ValueError(f"{path} is not named {{city}}_{{seq}}_{{frame}}_leftImg8bit.png")
        groups.setdefault(f"{m['city']}_{m['seq']}", []).append((int(m["frame"]), path))
    clips = {}
    for name, numbered in sorted(groups.items()):
        numbered.sort()
        numbers = [n for n, _ in numbered]
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            raise ValueError(f"clip {name} in {split_dir} has missing frames: numbers {numbers}")
        clips[name] = [p for _, p in numbered]
    if not clips:
        raise FileNotFoundError(f"no *_leftImg8bit.png frames under {split_dir}/*/")
    return clips
