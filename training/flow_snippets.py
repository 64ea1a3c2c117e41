"""Flow for training, exactly as the node computes it, and the snippet of frames each target frame's window needs.

Frames go through `frame_to_tensor`, one flow per consecutive pair from `make_flow(spec)` (as in
`wsvs_ros.pipeline.Segmenter`), encoded with `encode_flow` and stacked by a `FlowWindow` with the model's L and window
alignment. Pair flows are computed once per clip and cached on disk under a key made of the flow method, its
parameters and the input size (`FlowCache`); the window is rebuilt from them for each frame.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from wsvs_ros.atomic_file import atomic_write
from wsvs_ros.flow import FlowWindow, make_flow
from wsvs_ros.preprocess import encode_flow, frame_to_tensor
from wsvs_ros.spec import ModelSpec
from wsvs_training.datasets.clips import Clip, read_rgb


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
