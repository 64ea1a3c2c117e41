"""Your own footage: video files and folders of frames, each with a tags file written by someone who watched it.

Layout (`dataset: video`; `data` is DATA, `split` is SPLIT):

    DATA/SPLIT/my_drive.mp4          a video file (.mp4 .mov .avi .mkv .m4v .webm: whatever OpenCV's FFmpeg reads)
    DATA/SPLIT/my_drive.tags.json    {"tags": ["road", "car", ...]}: the classes that appear in the clip
    DATA/SPLIT/other_drive/          a folder of frames (.jpg .jpeg .png .bmp), time order = file names in natural
                                     order (frame_9 before frame_10), or the same in a `frames/` subfolder
    DATA/SPLIT/other_drive.tags.json

Tag names are classes of the label set the training config uses (`wsvs_ros.labels`, aliases allowed). When the
footage is read-only (a shared drive, `../shared/data`), keep the tags files elsewhere and name that folder:
`tags: FOLDER` in the config (`FOLDER/my_drive.tags.json`), `--tags FOLDER` on the command line. Other files in
SPLIT (stills, notes, hidden files) are not clips and are skipped.

A video's frames are decoded once with `cv2.VideoCapture` and written as lossless PNG under `frames_cache`
(training uses `CACHE/frames/`), so every clip is a tuple of frame files: `read_rgb`, the flow and heatmap caches and
evaluation read them as they read any dataset, and the PNG holds exactly the decoded pixels. The extraction is keyed
by the video's path, size and modification time; a replaced video is extracted again.

Label maps (evaluation and `wsvs-train tags` only): a frame folder with a `frames/` subfolder may have a
`labels_net/` subfolder with one Cityscapes labelIds PNG per frame in the same order, which is the layout of
`../shared/data/cityscapes_aachen/seqNNNN/` (network-made labels). Every frame is a target; training keeps the
frames whose flow window lies inside the clip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2

from wsvs_ros.labels import LabelSet
from wsvs_training.datasets.clips import Clip, annotation_tags, read_tag_file, write_tag_file
from wsvs_training.flow_snippets import frame_signatures

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
TAGS_SUFFIX = ".tags.json"


def video_clips(
    root: str | Path,
    split: str,
    *,
    label_set: LabelSet,
    frames_cache: str | Path | None,
    tags_dir: str | Path | None = None,
    require_tags: bool = True,
) -> list[Clip]:
    """The video files and frame folders of `root/split`, with their tags.

    Args:
        frames_cache: folder the frames of video files are extracted to (once); None refuses video files.
        tags_dir: folder of the `{clip}.tags.json` files; None: beside the clips, in `root/split`.
        require_tags: False gives clips without a tags file empty tags (a present one is still read and checked).

    Raises:
        FileNotFoundError: `root/split` is missing or holds no clip, a frame folder holds no image, a tags file is
            missing while `require_tags` (the message says where to write it), or a video cannot be opened.
        ValueError: two clips share a name, a tags file is malformed, a video has no frames or `frames_cache` is None.
        ValueError: a tag that is not a class of `label_set`.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (expected video files and frame folders in DATA/SPLIT)")
    tags_folder = folder if tags_dir is None else Path(tags_dir)
    sources: dict[str, Path] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or entry.suffix.lower() in VIDEO_SUFFIXES:
            name = entry.name if entry.is_dir() else entry.stem
            if name in sources:
                raise ValueError(f"{folder}: clips {sources[name].name} and {entry.name} share the name {name}")
            sources[name] = entry
    if not sources:
        raise FileNotFoundError(f"{folder} holds no video file ({' '.join(sorted(VIDEO_SUFFIXES))}) or frame folder")
    clips = []
    for name, source in sources.items():
        tags_path = tags_folder / f"{name}{TAGS_SUFFIX}"
        if tags_path.is_file():
            tags = read_tag_file(tags_path, label_set)
        elif require_tags:
            raise FileNotFoundError(
                f"clip {name} ({source}) has no tags file {tags_path}; write the classes that appear in it as "
                f'{{"tags": ["road", "car", ...]}} (names of label set {label_set.name!r})'
                + ("" if tags_dir is not None else ", or keep tags files elsewhere and name the folder with `tags:`")
            )
        else:
            tags = frozenset()
        if source.is_dir():
            frames, annotations = _frame_folder(source)
        else:
            if frames_cache is None:
                raise ValueError(f"clip {name} is a video file: give a frames cache folder to extract it to")
            frames, annotations = extract_frames(source, frames_cache), {}
        clips.append(
            Clip(
                name=name,
                frames=frames,
                tags=tags,
                targets=tuple(range(len(frames))),
                annotations=annotations,
                label_format="cityscapes_label_ids",
            )
        )
    return clips


def write_video_tags(
    tags_dir: str | Path, clips: Sequence[Clip], label_set: LabelSet, *, min_fraction: float = 0.0
) -> None:
    """Write `{clip}.tags.json` into `tags_dir` from each clip's label maps (`wsvs-train tags --dataset video`).

    Args:
        min_fraction: see `annotation_tags` (network-made label maps want about 1e-4).

    Raises:
        ValueError: a clip has no label maps; nothing is written then.
    """
    names = annotation_tags(clips, label_set, min_fraction=min_fraction)
    for clip in clips:
        write_tag_file(Path(tags_dir) / f"{clip.name}{TAGS_SUFFIX}", names[clip.name])


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders the numbers in a name by value: `frame_9` before `frame_10`."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part)


def _images(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda p: natural_key(p.name))


def _frame_folder(folder: Path) -> tuple[tuple[Path, ...], dict[int, Path]]:
    """(frames in time order, frame index -> label map) of a frame folder."""
    frames_dir = folder / "frames" if (folder / "frames").is_dir() else folder
    frames = _images(frames_dir)
    if not frames:
        raise FileNotFoundError(f"frame folder {frames_dir} holds no image ({' '.join(sorted(IMAGE_SUFFIXES))})")
    annotations: dict[int, Path] = {}
    labels_dir = folder / "labels_net"
    if frames_dir != folder and labels_dir.is_dir():
        labels = _images(labels_dir)
        if len(labels) != len(frames):
            raise ValueError(
                f"{labels_dir} holds {len(labels)} label maps for {len(frames)} frames in {frames_dir}: one per frame"
            )
        annotations = dict(enumerate(labels))
    return tuple(frames), annotations


def extract_frames(video: Path, cache: str | Path) -> tuple[Path, ...]:
    """The frames of a video file as PNG files under `cache`, decoded once (later calls find them).

    The folder is `cache/{stem}-{digest of path, size, mtime}/`, written under a temporary name and renamed when
    complete, so a run that stops half-way or a second run extracting the same video at once never leaves a
    partial folder behind.

    Raises:
        FileNotFoundError: OpenCV cannot open the video. ValueError: it decodes to no frame.
    """
    [signature] = frame_signatures([video])
    out = Path(cache) / f"{video.stem}-{hashlib.sha1(signature.encode()).hexdigest()[:12]}"
    manifest = out / "frames.json"
    if not manifest.is_file():
        Path(cache).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=cache))
        try:
            count = _decode_to_png(video, tmp)
            (tmp / "frames.json").write_text(json.dumps({"video": signature, "frames": count}) + "\n")
            try:
                os.rename(tmp, out)
            except OSError:  # another run finished the same extraction first
                if not manifest.is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    count = json.loads(manifest.read_text())["frames"]
    return tuple(out / f"{i:06d}.png" for i in range(count))


def _decode_to_png(video: Path, out: Path) -> int:
    """Decode every frame of `video` into `out/{index:06d}.png` (BGR as OpenCV reads it); returns the count."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise FileNotFoundError(
            f"OpenCV cannot open video {video}; convert it to H.264 mp4 (ffmpeg -i IN -c:v libx264 OUT.mp4) or "
            f"extract its frames into a folder"
        )
    count = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            cv2.imwrite(str(out / f"{count:06d}.png"), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise ValueError(f"video {video} decodes to no frame; check it plays (ffprobe {video})")
    return count
