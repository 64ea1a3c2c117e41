"""CamVid in SegNet's layout: `{split}/{seq}_{frame}.png` + `{split}annot/{seq}_{frame}.png` (the 11 class ids 0..10,
11 = void) for the annotated stills, and the 30 Hz frames extracted from the videos in `frames/{seq}/{seq}_{frame}.png`,
named like the stills (`0001TP_006690`, `Seq05VD_f00000`: the frame number keeps its prefix and zero padding).
Tags: `tags/{split}/{seq}_{frame}.json`, one per annotated still.
"""

from __future__ import annotations

import re
from pathlib import Path

from wsvs_ros.labels import CAMVID, LabelSet
from wsvs_ros.spec import ModelSpec
from wsvs_training.datasets.clips import Clip, read_tags
from wsvs_training.flow_snippets import window_extent

_CAMVID_NAME = re.compile(r"^(?P<seq>.+)_(?P<prefix>[A-Za-z]*)(?P<frame>\d+)\.png$")


def camvid_clips(
    root: str | Path, split: str, *, spec: ModelSpec, label_set: LabelSet = CAMVID, require_tags: bool = True
) -> list[Clip]:
    """CamVid annotated stills (SegNet layout) with the neighbouring video frames their flow window needs.

    Each still becomes a clip of the frames `snippet_range` asks for (fewer at the start or end of a video).

    Args:
        require_tags: False gives clips without a tag file empty tags (to derive them: `write_tags_from_annotations`).

    Raises:
        FileNotFoundError: the split folder, the still's own frame in `frames/{seq}/`, or (while `require_tags`) a tag
            file is missing.
    """
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"CamVid split folder {split_dir} does not exist (expected SegNet's layout)")
    before, after = window_extent(spec)
    clips = []
    for still in sorted(split_dir.glob("*.png")):
        m = _CAMVID_NAME.match(still.name)
        if m is None:
            raise ValueError(f"CamVid still {still} is not named {{seq}}_{{frame}}.png (e.g. 0001TP_006690.png)")
        seq, prefix, digits = m["seq"], m["prefix"], m["frame"]
        number = int(digits)

        def frame_path(n: int, seq: str = seq, prefix: str = prefix, width: int = len(digits)) -> Path:
            return root / "frames" / seq / f"{seq}_{prefix}{n:0{width}d}.png"

        if not frame_path(number).is_file():
            raise FileNotFoundError(
                f"CamVid still {still.name} has no video frame {frame_path(number)}; extract the 30 Hz frames of "
                f"video {seq} into {root / 'frames' / seq}"
            )
        first = number
        while number - first < before and frame_path(first - 1).is_file():
            first -= 1
        last = number
        while last - number < after and frame_path(last + 1).is_file():
            last += 1
        name = still.stem
        clips.append(
            Clip(
                name=name,
                frames=tuple(frame_path(n) for n in range(first, last + 1)),
                tags=read_tags(root, split, name, label_set, required=require_tags),
                targets=(number - first,),
                annotations={number - first: root / f"{split}annot" / still.name},
                label_format="camvid",
            )
        )
    return clips
