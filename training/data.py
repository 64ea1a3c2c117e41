"""Training and evaluation data: clips of video frames with video-level tags, in three on-disk layouts.

A `Clip` is a run of consecutive frames of one video with the classes tagged on it. Its `annotations` are the paths of
pixel-level ground truth, which only `training.evaluate` reads (`load_label_map`): training never opens them, so no
pixel label can reach a loss.

Layouts (paths relative to the dataset root):
- Cityscapes (`cityscapes_clips`): `leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`, the
  30-frame snippets whose 20th frame (index 19) is annotated in `gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_
  labelIds.png` (Cityscapes label ids, mapped to the 19 train ids by `CITYSCAPES_LABEL_ID_TO_TRAIN_ID`).
- Synthetic drives (`synth_clips`, written by `training.synth`): the same layout with city `synth`, every frame
  annotated in `gtFine/{split}/synth/*_gtFine_labelTrainIds.png` (DRIVE ids, 255 void).
- CamVid (`camvid_clips`): SegNet's layout `{split}/{seq}_{frame}.png` + `{split}annot/{seq}_{frame}.png` (the 11
  class ids 0..10, 11 = void) for the annotated stills, and the 30 Hz frames extracted from the videos in
  `frames/{seq}/{seq}_{frame}.png`, named like the stills (`0001TP_006690`, `Seq05VD_f00000`: the frame number keeps
  its prefix and zero padding).
Tags are video-level: `tags/{split}/{clip}.json` holding `{"tags": [class names]}` (one file per clip; `clip` is
`{city}_{seq}` or, for CamVid, `{seq}_{frame}` of the annotated still). The synthetic generator writes them; for
Cityscapes and CamVid they are derived once from the annotations (image-level labels only) by
`wsvs-train tags --dataset cityscapes|camvid --data ROOT --split SPLIT`, which loads the clips with
`require_tags=False` (no tags yet) and calls `write_tags_from_annotations`.

Flow follows the deployed node exactly (`wsvs_ros.pipeline.Segmenter`): frames go through `frame_to_tensor`, one flow
per consecutive pair from `make_flow(spec)`, encoded with `encode_flow` and stacked by a `FlowWindow` with the
model's L and window alignment. Pair flows are computed once per clip and cached on disk under a key made of the flow
method, its parameters and the input size (`FlowCache`); the window is rebuilt from them for each frame.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from wsvs_ros.atomic_file import atomic_write
from wsvs_ros.flow import FlowWindow, make_flow
from wsvs_ros.labels import CAMVID, CITYSCAPES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID, DRIVE, VOID_ID, LabelSet
from wsvs_ros.preprocess import encode_flow, frame_to_tensor
from wsvs_ros.spec import ModelSpec

CITYSCAPES_ANNOTATED_INDEX = 19
"""Cityscapes annotates the 20th frame of each 30-frame snippet (paper 4.1)."""

CAMVID_VOID = 11
"""SegNet's CamVid annotations mark void pixels 11."""

DATASETS = ("synth", "cityscapes", "camvid")
"""The on-disk layouts `dataset_clips` reads."""

_CITYSCAPES_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png$")
_CAMVID_NAME = re.compile(r"^(?P<seq>.+)_(?P<prefix>[A-Za-z]*)(?P<frame>\d+)\.png$")


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


# ---------------------------------------------------------------------------------------------------------------------
# Layouts


def dataset_clips(
    dataset: str, root: str | Path, split: str, *, spec: ModelSpec, label_set: LabelSet, require_tags: bool = True
) -> list[Clip]:
    """The clips of a split in one of the `DATASETS` layouts; `spec` is read by CamVid only (its flow window).

    Raises:
        ValueError: `dataset` is not one of `DATASETS`; and what the layout's loader raises.
    """
    if dataset == "synth":
        return synth_clips(root, split, label_set=label_set, require_tags=require_tags)
    if dataset == "cityscapes":
        return cityscapes_clips(root, split, label_set=label_set, require_tags=require_tags)
    if dataset == "camvid":
        return camvid_clips(root, split, spec=spec, label_set=label_set, require_tags=require_tags)
    raise ValueError(f"dataset={dataset!r}: use one of {DATASETS}")


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


def synth_clips(root: str | Path, split: str, *, label_set: LabelSet = DRIVE, require_tags: bool = True) -> list[Clip]:
    """Synthetic drives written by `training.synth`: every frame is a target and (for evaluation) annotated.

    Args:
        require_tags: False gives clips without a tag file empty tags instead of raising FileNotFoundError.
    """
    root = Path(root)
    clips = []
    for name, frames in _group_cityscapes_frames(root / "leftImg8bit_sequence" / split).items():
        annotations = {}
        for i, frame in enumerate(frames):
            gt = (
                root
                / "gtFine"
                / split
                / frame.parent.name
                / frame.name.replace("_leftImg8bit", "_gtFine_labelTrainIds")
            )
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


def read_tags(root: Path, split: str, name: str, label_set: LabelSet, *, required: bool = True) -> frozenset[str]:
    """The class names tagged on clip `name`, from `tags/{split}/{name}.json` (`{"tags": [...]}`).

    Args:
        required: False reads a missing tag file as no tags (a present one is still read and checked).

    Raises:
        FileNotFoundError: no tag file while `required` (the message names `wsvs-train tags`).
        KeyError: a tag that is not a class of `label_set`.
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
    tags = json.loads(path.read_text())["tags"]
    return frozenset(label_set.by_name(t).name for t in tags)


def write_tags_from_annotations(root: str | Path, split: str, clips: Sequence[Clip], label_set: LabelSet) -> None:
    """Write `tags/{split}/{clip}.json` with the classes present in each clip's annotations.

    This turns pixel labels into video-level tags (the weak labels the paper assumes given); it is a one-off
    dataset preparation step (`wsvs-train tags`), never part of training. Load the clips with `require_tags=False`
    for this, since their tag files do not exist yet.

    Args:
        label_set: the set whose train ids the annotations decode to (`load_label_map`): the dataset's own.

    Raises:
        ValueError: a clip has no annotated frame (nothing to derive its tags from); nothing is written then.
    """
    unannotated = [c.name for c in clips if not c.annotations]
    if unannotated:
        raise ValueError(
            f"{len(unannotated)} clip(s) of split {split} have no annotation to derive tags from (first: "
            f"{unannotated[0]}); extract the split's pixel annotations (Cityscapes gtFine, CamVid {split}annot) first"
        )
    out = Path(root) / "tags" / split
    out.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        present: set[int] = set()
        for index in clip.annotations:
            ids = np.unique(load_label_map(clip, index))
            present.update(int(i) for i in ids if i != VOID_ID)
        names = [label_set.by_id(i).name for i in sorted(present)]
        (out / f"{clip.name}.json").write_text(json.dumps({"tags": names}) + "\n")


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


# ---------------------------------------------------------------------------------------------------------------------
# Flow, exactly as the node computes it


def window_extent(spec: ModelSpec) -> tuple[int, int]:
    """(frames before, frames after) frame t that its flow window reads: (L, 0) causal, (L/2, L/2) centered."""
    if spec.window == "centered":
        return spec.flow_length // 2, spec.flow_length // 2
    return spec.flow_length, 0


def snippet_range(target: int, num_frames: int, spec: ModelSpec) -> tuple[int, int]:
    """First and last (inclusive) frame index of the L + 1 frames around `target`, clipped to the clip."""
    before, after = window_extent(spec)
    return max(0, target - before), min(num_frames - 1, target + after)


def has_full_window(target: int, num_frames: int, spec: ModelSpec) -> bool:
    """True if all L flows of `target`'s window exist inside the clip (no warming zeros)."""
    first, last = snippet_range(target, num_frames, spec)
    return last - first == spec.flow_length


def pair_flows(frames: Sequence[np.ndarray], spec: ModelSpec, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Flows between consecutive frames as the node computes them, in pixels at the model's input size.

    Args:
        frames: N (H, W, 3) uint8 RGB frames in time order.
    Returns:
        (N, 2, h, w) float32 on the CPU; entry 0 is zeros (no previous frame), entry i the flow frame i-1 -> i.
    """
    device = torch.device(device)
    flow = make_flow(spec)
    tensors = [frame_to_tensor(f, spec, device) for f in frames]
    out = torch.zeros(len(frames), 2, spec.input_height, spec.input_width)
    for i in range(1, len(frames)):
        out[i] = flow(tensors[i - 1], tensors[i])[0].cpu()
    return out


def window_flows(flows: torch.Tensor, target: int, spec: ModelSpec) -> tuple[torch.Tensor, bool]:
    """The flow stream's input for frame `target`, stacked by the node's `FlowWindow` from cached pair flows.

    The frames of `snippet_range` are pushed through a `FlowWindow` with the model's L and window; its flow function
    hands out the cached pair flows in push order, encoded with `encode_flow` as the node does.

    Args:
        flows: (N, 2, h, w) pair flows of a clip in pixels (`pair_flows`).
        target: frame index in 0..N-1.
    Returns:
        ((2L, h, w) encoded flows, warming) where warming means some of the L flows were missing (zeros).
    """
    first, last = snippet_range(target, flows.shape[0], spec)
    queue: Iterator[torch.Tensor] = iter(flows[first + 1 : last + 1])
    window = FlowWindow(
        lambda prev, cur: encode_flow(next(queue)[None], spec),
        length=spec.flow_length,
        window=spec.window,
    )
    placeholder = flows.new_zeros(1, 3, *flows.shape[-2:])  # the cached flows stand in for the frames' content
    samples = []
    for i in range(first, last + 1):
        samples += window.push(placeholder, float(i), payload=i)
    samples += window.flush()
    sample = next(s for s in samples if s.payload == target)
    return sample.flows[0], sample.warming


def _digest(payload: object) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def frame_signatures(paths: Sequence[Path]) -> list[str]:
    """What a cache entry computed from these frame files records: path, size and modification time of each, so a
    regenerated or replaced dataset (same file names, other pixels) is never served another's flows or heatmaps."""
    signatures = []
    for p in paths:
        stat = p.stat()
        signatures.append(f"{p}|{stat.st_size}|{stat.st_mtime_ns}")
    return signatures


class FlowCache:
    """Pair flows per clip on disk, under `root/{flow_method}-{digest of method, parameters, input size}/`.

    Each file also records the frames it was computed from (`frame_signatures`); a clip whose frames changed is
    recomputed.
    """

    def __init__(self, root: str | Path, spec: ModelSpec):
        self.spec = spec
        params = make_flow(spec).params  # the backend's effective parameters, defaults included
        key = {"method": spec.flow_method, "params": params, "size": list(spec.input_size)}
        self.dir = Path(root) / f"{spec.flow_method}-{_digest(key)}"
        self.key = key

    def path(self, clip: Clip) -> Path:
        return self.dir / f"{clip.name}.pt"

    def span(self, clip: Clip) -> tuple[int, int]:
        """The frame range the clip's targets need: the union of their snippets."""
        ranges = [snippet_range(t, len(clip.frames), self.spec) for t in clip.targets]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def get(self, clip: Clip) -> tuple[int, torch.Tensor]:
        """(first frame index, (n, 2, h, w) pair flows of frames first..first+n-1), computed on a cache miss."""
        first, last = self.span(clip)
        names = frame_signatures(clip.frames[first : last + 1])
        path = self.path(clip)
        if path.is_file():
            cached = torch.load(path, weights_only=True)
            if cached["frames"] == names and cached["key"] == self.key:
                return first, cached["flows"]
        flows = pair_flows([read_rgb(p) for p in clip.frames[first : last + 1]], self.spec)
        with atomic_write(path) as f:
            torch.save({"frames": names, "key": self.key, "flows": flows}, f)
        return first, flows


# ---------------------------------------------------------------------------------------------------------------------
# Training samples (no annotations)


@dataclass(frozen=True)
class Sample:
    """One training frame: what the losses may see, and nothing else.

    Attributes:
        image: (3, H, W) float32 RGB in 0..255 at the model's input size (`frame_to_tensor`; the CRF's colours).
        flows: (2L, H, W) encoded flow window (`window_flows`).
        tags: (C,) bool video-level tags.
        clip: clip name; index: frame index in the clip (for heatmap look-up).
    """

    image: torch.Tensor
    flows: torch.Tensor
    tags: torch.Tensor
    clip: str
    index: int


def tag_vector(tags: frozenset[str], label_set: LabelSet) -> torch.Tensor:
    """(C,) bool multi-hot vector of tag names."""
    out = torch.zeros(len(label_set), dtype=torch.bool)
    for name in tags:
        out[label_set.by_name(name).id] = True
    return out


class WeakDataset(torch.utils.data.Dataset):
    """Samples for the weak losses: frames with their flow windows and their clip's tags; annotations never read.

    Only targets whose window lies fully inside the clip are used when `full_windows` is set (the synthetic drives,
    where every frame is a target), so training sees the same complete windows the node sees once warmed up.

    Args:
        clips: the clips (any layout).
        spec: the model's ModelSpec (input size, flow method, L, window).
        flow_cache: where pair flows are kept (computed on first use).
        label_set: the set the tags belong to.
        full_windows: drop targets whose window would have warming zeros.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        *,
        spec: ModelSpec,
        flow_cache: FlowCache,
        label_set: LabelSet,
        full_windows: bool = True,
    ):
        self.clips = {c.name: c for c in clips}
        self.spec = spec
        self.flow_cache = flow_cache
        self.label_set = label_set
        self.items = [
            (c.name, t) for c in clips for t in c.targets if not full_windows or has_full_window(t, len(c.frames), spec)
        ]
        if not self.items:
            raise ValueError(
                f"no training frames: {len(clips)} clip(s) have no target with a full window of L={spec.flow_length} "
                f"flows ({spec.window}); use longer clips or a smaller flow_length"
            )
        self._flows: dict[str, tuple[int, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def precompute(self) -> None:
        """Fill the flow cache for every clip (slow the first time, then a file read)."""
        for name in self.clips:
            self._clip_flows(name)

    def _clip_flows(self, name: str) -> tuple[int, torch.Tensor]:
        if name not in self._flows:
            self._flows[name] = self.flow_cache.get(self.clips[name])
        return self._flows[name]

    def __getitem__(self, i: int) -> Sample:
        name, target = self.items[i]
        clip = self.clips[name]
        first, flows = self._clip_flows(name)
        stacked, _ = window_flows(flows, target - first, self.spec)
        image = frame_to_tensor(read_rgb(clip.frames[target]), self.spec, torch.device("cpu"))[0]
        return Sample(image=image, flows=stacked, tags=tag_vector(clip.tags, self.label_set), clip=name, index=target)
