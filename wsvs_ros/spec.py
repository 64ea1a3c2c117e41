"""`ModelSpec`: everything a model needs its inputs to look like, stored in every checkpoint.

One source of truth for preprocessing (DESIGN.md): training writes it, export / engines / the node read it back, and
a runtime setting that contradicts it is refused rather than silently applied.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from wsvs_ros.labels import get_label_set

WINDOWS = ("causal", "centered")
FLOW_METHODS = ("torch", "opencv")
OUTPUT_STRIDES = (32, 16, 8)  # TwoStreamNet's: FCN-32s (the paper's), FCN-16s, FCN-8s
BACKBONES = ("vgg16", "efficientnet_lite0")  # TwoStreamNet's streams: the paper's VGG-16, ImageNet EfficientNet-Lite0
UNRECORDED_WEIGHTS = "unrecorded"  # backbone_weights of metadata written before the field existed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What the network was trained on.

    Attributes:
        label_set: name of a set in `wsvs_ros.labels.LABEL_SETS`; `class_names` must match it.
        input_width, input_height: network input size in pixels; camera frames are resized to it.
        flow_length: L, the number of stacked flows (the flow stream takes 2L channels).
        window: "causal" (flows of the last L frame pairs) or "centered" (the paper's (t - L/2, t + L/2]).
        flow_method: "torch" (`TorchFlow`) or "opencv" (`OpenCVFlow`); `flow_params` are its keyword arguments.
        flow_scale: pixels that map to 1.0 in the flow stream's input; `flow_clip` bounds the scaled value.
        rgb_mean, rgb_std: per-channel normalisation of RGB in 0..1.
        width: channel multiplier of the VGG-16 backbone (1.0 = VGG-16); 1.0 for efficientnet_lite0, whose
            channels its ImageNet weights fix.
        output_stride: stride of the score map the final deconvolution starts from: 32 is the paper's network
            (FCN-32s), 16 / 8 add FCN skip layers (`TwoStreamNet`). Checkpoints without it are stride 32.
        backbone: the streams' architecture, one of BACKBONES. Checkpoints without it are vgg16.
        backbone_weights: where the network's initial weights came from: "random" (from scratch), the ImageNet
            package as "<pip name>==<version> <file> sha256=<hex>", or the VGG-16 file as "<file> sha256=<hex>".
            Provenance only: nothing reads it to build the network. Checkpoints without it say "unrecorded".
    """

    label_set: str
    class_names: tuple[str, ...]
    input_width: int = 512
    input_height: int = 256
    flow_length: int = 10
    window: str = "causal"
    flow_method: str = "torch"
    flow_params: dict[str, Any] = field(default_factory=dict)
    flow_scale: float = 10.0
    flow_clip: float = 5.0
    rgb_mean: tuple[float, float, float] = IMAGENET_MEAN
    rgb_std: tuple[float, float, float] = IMAGENET_STD
    width: float = 1.0
    output_stride: int = 32
    backbone: str = "vgg16"
    backbone_weights: str = "random"

    FORMAT_VERSION = 1  # bumped when a field changes meaning; loading refuses other versions

    def __post_init__(self) -> None:
        label_set = get_label_set(self.label_set)
        if tuple(self.class_names) != label_set.names:
            raise ValueError(
                f"class_names {list(self.class_names)} do not match label set {self.label_set!r}: "
                f"{list(label_set.names)}"
            )
        for name in ("input_width", "input_height", "flow_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if self.window == "centered" and self.flow_length % 2:
            raise ValueError(f"a centered window needs an even flow_length, got {self.flow_length}")
        if self.flow_method not in FLOW_METHODS:
            raise ValueError(f"flow_method must be one of {FLOW_METHODS}, got {self.flow_method!r}")
        for name in ("flow_scale", "flow_clip", "width"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone != "vgg16" and self.width != 1.0:
            raise ValueError(
                f"width={self.width} but backbone {self.backbone!r} has no width multiplier (its ImageNet weights fix "
                "its channels); set width to 1.0"
            )
        for name in ("rgb_mean", "rgb_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must have 3 values (R, G, B), got {getattr(self, name)!r}")
        if min(self.rgb_std) <= 0:
            raise ValueError(f"rgb_std must be positive, got {self.rgb_std!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.input_width, self.input_height

    @property
    def delay_frames(self) -> int:
        """How many frames after frame t its mask can be computed (0 causal, L/2 centered)."""
        return self.flow_length // 2 if self.window == "centered" else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format_version"] = self.FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Rebuild from `to_dict()` output, naming any missing, unknown or invalid field."""
        d = dict(d)
        version = d.pop("format_version", None)
        if version != cls.FORMAT_VERSION:
            raise ValueError(f"model format_version is {version!r}; this wsvs_ros reads {cls.FORMAT_VERSION}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model metadata has unknown field(s) {unknown}")
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"model metadata lacks field(s) {missing}")
        d.setdefault("backbone_weights", UNRECORDED_WEIGHTS)
        for name in ("class_names", "rgb_mean", "rgb_std"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)
