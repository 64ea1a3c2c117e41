"""`WeakDataset`: the samples training sees (frame, flow window, video-level tag vector), never a pixel label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from wsvs_ros.labels import LabelSet
from wsvs_ros.preprocess import frame_to_tensor
from wsvs_ros.spec import ModelSpec
from wsvs_training.datasets.clips import Clip, read_rgb
from wsvs_training.flow_snippets import FlowCache, has_full_window, window_flows


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
