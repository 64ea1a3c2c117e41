"""The two-stream segmentation network of paper 3.2 (Fig. 3): RGB and optical-flow VGG-16 streams, convolutional early
fusion at conv5_3, late fusion of the class scores of the fused and the appearance heads, and a bilinear
deconvolution back to the input size.

`output_stride` 32 is the paper's network (FCN-32s: one deconvolution from the stride-32 scores). 16 and 8 add FCN's
skip layers (Long et al., FCN-16s / FCN-8s) from pool4 and pool3 of both streams. At the small input sizes a CPU or a
Jetson can afford, stride 32 is a hard ceiling: a 256x128 frame gets an 8x4 score map, and even a perfect 8x4 map
upsampled loses thin and distant classes (docs/results/output_stride.md).

`width` scales every channel count (1.0 is VGG-16 exactly, which `load_vgg16_weights` can initialise); smaller widths
are the CPU and real-time Jetson variants and are trained from the initialisation below.

`backbone="efficientnet_lite0"` builds the same network on EfficientNet-Lite0 (`efficientnet_lite.py`), which
`load_efficientnet_lite0_weights` initialises from ImageNet: each stream is its stem and 16 MBConv blocks (stride 32,
320 channels, where VGG's streams stop at conv5_3, stride 16), fused there by a linear 1x1 conv, and each head is its
1x1 conv to 1280 channels and a class-score conv; the skips take its stride-16 and stride-8 maps. Its BatchNorms are
folded into the convolutions when the network is built (`fold_batch_norms`): the network trains at batch 1 (paper
4.2), where batch statistics mean nothing, and the checkpoint, ONNX graph and TensorRT engine hold plain convs, as
for VGG. It has no width multiplier: its ImageNet weights fix its channels.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from wsvs_ros.model.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    FEATURE_CHANNELS,
    FEATURE_STRIDES,
    HEAD_CHANNELS,
    EfficientNetLite,
    backbone_features,
)
from wsvs_ros.spec import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, OUTPUT_STRIDES

# VGG-16's conv1_1..conv5_3 output channels per block; a 2x2 max-pool follows blocks 1-4 (pool5 lives in the heads),
# so conv5_3 is at stride 16 and the score maps at stride 32.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_FC_CHANNELS = 4096
FC6_KERNEL = 7  # VGG's fc6 sees a 7x7 pool5 map; FCN turns it into a 7x7 conv.
SIZE_MULTIPLE = 32  # four pools in the streams + pool5 in the heads (EfficientNet: five stride-2 convs): inputs are
# padded to a multiple of this
LITE_DROPOUT = 0.2  # EfficientNet-Lite0's dropout before its classifier
# ModelSpec.rgb_mean / rgb_std each backbone's ImageNet weights were trained with (torchvision's for VGG-16; the TF
# lite models' (x - 127) / 128 for EfficientNet-Lite0)
RGB_NORMALISATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "vgg16": (IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": (EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD),
}


def scaled_channels(channels: int, width: float) -> int:
    """VGG-16 channel count `channels` scaled by `width`, rounded, at least 1 (so widths like 1/32 still build)."""
    return max(1, round(channels * width))


def conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    """`conv.bias`, which every conv of this network has (built with bias=True); torch types it `Tensor | None`."""
    assert conv.bias is not None, f"{conv} has no bias"
    return conv.bias


class VGGStream(nn.Module):
    """One stream of Fig. 3: VGG-16 conv1_1..conv5_3, 3x3 convs with padding 1 and ReLU, max-pools after blocks 1-4.

    `convs` holds the 13 convolutions in VGG order (conv1_1 is `convs[0]`, conv5_3 is `convs[12]`).
    """

    strides = (2, 4, 8, 16, 16)  # of the maps `features` returns

    def __init__(self, in_channels: int, *, width: float) -> None:
        super().__init__()
        convs = []
        self._pool_after: list[bool] = []
        channels = in_channels
        for block in VGG16_BLOCKS:
            for i, out in enumerate(block):
                out = scaled_channels(out, width)
                convs.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
                channels = out
                self._pool_after.append(i == len(block) - 1)
        self._pool_after[-1] = False  # pool5 belongs to each head (the fused one pools after fusion)
        self.convs = nn.ModuleList(convs)
        self.out_channels = channels

    def conv_layers(self) -> list[nn.Conv2d]:
        """`convs` typed as the `nn.Conv2d`s it holds (a type checker sees a `ModuleList`'s items as `nn.Module`)."""
        return [cast(nn.Conv2d, conv) for conv in self.convs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) with H, W multiples of 16 -> conv5_3 after ReLU, (B, out_channels, H/16, W/16)."""
        return self.features(x)[-1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Like `forward`, but returns [pool1, pool2, pool3, pool4, conv5_3]: strides 2, 4, 8, 16, 16."""
        out = []
        for conv, pool in zip(self.convs, self._pool_after, strict=True):
            x = F.relu(conv(x))
            if pool:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
                out.append(x)
        return [*out, x]

    def feature_channels(self) -> list[int]:
        """Channels of the maps `features` returns: pool1..pool4, conv5_3."""
        ends = [i for i, pool in enumerate(self._pool_after) if pool]
        return [self.conv_layers()[i].out_channels for i in ends] + [self.out_channels]


def fold_batch_norms(module: nn.Module) -> None:
    """Merge each BatchNorm of `efficientnet_lite.conv_bn`'s layout (a Sequential with `conv` then `bn`) into its
    conv, in place: the conv gains a bias and the `bn` entry is removed. Uses the running statistics, so the result
    computes what `module.eval()` computed.
    """
    for seq in module.modules():
        conv, bn = getattr(seq, "conv", None), getattr(seq, "bn", None)
        if isinstance(seq, nn.Sequential) and isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            seq.conv = fuse_conv_bn_eval(conv.eval(), bn.eval())
            del seq.bn


class EfficientNetStream(nn.Module):
    """One stream of Fig. 3 on EfficientNet-Lite0: its stem and 16 MBConv blocks, BatchNorms folded.

    The ImageNet classifier's 1x1 head and fc are not part of it: they start the score heads (`LiteScoreHead`).
    """

    strides = FEATURE_STRIDES  # of the maps `features` returns: 4, 8, 16, 32

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        lite = EfficientNetLite(in_channels=in_channels)
        fold_batch_norms(lite)
        self.stem, self.blocks = lite.stem, lite.blocks
        self.feature_blocks = lite.feature_blocks
        self.out_channels = FEATURE_CHANNELS[-1]

    def stem_conv(self) -> nn.Conv2d:
        """The stream's first convolution, 3x3 stride 2 (`stem.conv`, typed)."""
        return cast(nn.Conv2d, self.stem.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) with H, W multiples of 32 -> the last block's map, (B, 320, H/32, W/32)."""
        return self.features(x)[-1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Like `forward`, but returns the maps at strides 4, 8, 16, 32 (24, 40, 112, 320 channels)."""
        return backbone_features(self.stem, self.blocks, self.feature_blocks, x)

    def feature_channels(self) -> list[int]:
        """Channels of the maps `features` returns: 24, 40, 112, 320."""
        return list(FEATURE_CHANNELS)


class ConvFusion(nn.Module):
    """Early fusion of paper 3.2, as Feichtenhofer et al. (CVPR 2016): concatenate the two conv5_3 maps and let a 1x1
    conv learn which appearance and motion channels to combine at each pixel, then ReLU.

    Initialised to sum fusion (weight [I, I], bias 0), as Feichtenhofer et al. do: at init the fused features are the
    RGB conv5_3 features plus the flow ones, so the spatio-temporal head starts from the appearance features VGG's fc6
    was trained on, shifted by motion, rather than from halved ones (a mean would halve every fc6 input). Both inputs
    come out of a ReLU, so the ReLU is a no-op at init; it keeps pool5/fc6's input non-negative as in VGG.
    `relu=False` for EfficientNet, whose streams end in a linear bottleneck (the MBConv projection has no activation):
    a ReLU there would cut the negative half of what its head was trained on.
    """

    def __init__(self, channels: int, *, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=1)
        self.relu = relu
        self.reset_parameters()

    def reset_parameters(self) -> None:
        channels = self.conv.out_channels
        identity = torch.eye(channels).reshape(channels, channels, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([identity, identity], dim=1))
            conv_bias(self.conv).zero_()

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Two (B, C, h, w) conv5_3 maps -> fused (B, C, h, w)."""
        fused = self.conv(torch.cat([rgb, flow], dim=1))
        return F.relu(fused) if self.relu else fused


class ScoreHead(nn.Module):
    """pool5 -> fc6 (7x7 conv) -> fc7 (1x1 conv) -> score (1x1 conv): VGG's classifier made fully convolutional as in
    FCN, with VGG's dropout after fc6 and fc7 (active in train mode only). fc6 is padded by 3 so the score map keeps
    pool5's size (H/32, W/32) for any input that is a multiple of 32.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: float) -> None:
        super().__init__()
        fc = scaled_channels(VGG16_FC_CHANNELS, width)
        self.fc6 = nn.Conv2d(in_channels, fc, kernel_size=FC6_KERNEL, padding=FC6_KERNEL // 2)
        self.drop6 = nn.Dropout(0.5)
        self.fc7 = nn.Conv2d(fc, fc, kernel_size=1)
        self.drop7 = nn.Dropout(0.5)
        self.score = nn.Conv2d(fc, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H/16, W/16) conv5_3-level features -> class scores (B, num_classes, H/32, W/32)."""
        x = F.max_pool2d(x, kernel_size=2, stride=2)  # pool5
        x = self.drop6(F.relu(self.fc6(x)))
        x = self.drop7(F.relu(self.fc7(x)))
        return self.score(x)


class LiteScoreHead(nn.Module):
    """EfficientNet-Lite0's classifier made fully convolutional, per stride-32 cell: its 1x1 head conv to 1280
    channels (BatchNorm folded) and ReLU6, its dropout, then a 1x1 class-score conv in place of the 1000-way fc.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, HEAD_CHANNELS, kernel_size=1)
        self.dropout = nn.Dropout(LITE_DROPOUT)
        self.score = nn.Conv2d(HEAD_CHANNELS, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H/32, W/32) stream features -> class scores (B, num_classes, H/32, W/32)."""
        return self.score(self.dropout(F.relu6(self.head(x))))


class BilinearUpsample(nn.Module):
    """The deconvolution of Fig. 3: a learnable stride-`factor` transposed conv, one 2f x 2f kernel per class (groups =
    num_classes; FCN's C x C layer is diagonal at init anyway), initialised to bilinear interpolation.

    The score map is edge-extended by one cell first, so that at init the layer equals
    `F.interpolate(scores, scale_factor=32, mode="bilinear", align_corners=False)` everywhere, borders included
    (a plain deconv lets the border pixels fade towards 0). The extension uses Slice + Concat rather than Pad's
    "edge" mode, which not every ONNX consumer (older TensorRT parsers) accepts.
    """

    def __init__(self, num_classes: int, factor: int = SIZE_MULTIPLE) -> None:
        super().__init__()
        self.factor = factor
        # kernel 2f, stride f; padding f/2 centres each kernel on its pooled cell (cell i covers pixels fi..fi+f-1),
        # plus f for the extra cell on each side: output size is exactly f * (input size).
        self.deconv = nn.ConvTranspose2d(
            num_classes,
            num_classes,
            kernel_size=2 * factor,
            stride=factor,
            padding=factor // 2 + factor,
            groups=num_classes,
            bias=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        size = 2 * self.factor
        center = (size - 1) / 2
        taps = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / self.factor
        kernel = taps[:, None] * taps[None, :]  # FCN's upsample_filt
        with torch.no_grad():
            self.deconv.weight.copy_(kernel.expand_as(self.deconv.weight))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, factor * h, factor * w)."""
        scores = torch.cat([scores[:, :, :1], scores, scores[:, :, -1:]], dim=2)
        scores = torch.cat([scores[:, :, :, :1], scores, scores[:, :, :, -1:]], dim=3)
        return self.deconv(scores)


class SkipScores(nn.Module):
    """One FCN skip layer: the coarser scores upsampled 2x, plus class scores of a finer pooled map of both streams.

    The finer scores are a 1x1 conv of the two streams' maps concatenated, zero-initialised as in FCN, so a new skip
    starts as a no-op and the net starts out as the coarser one with a bilinear 2x step.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.up = BilinearUpsample(num_classes, 2)
        self.score = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(conv_bias(self.score))

    def forward(self, scores: torch.Tensor, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) scores, (B, *, 2h, 2w) stream maps -> (B, C, 2h, 2w) scores."""
        return self.up(scores) + self.score(torch.cat([rgb, flow], dim=1))


class TwoStreamNet(nn.Module):
    """Paper 3.2, Fig. 3: per-pixel class scores from an RGB frame and a stack of L optical flows.

    Submodules, in the order data flows:
        rgb_stream, flow_stream: `VGGStream`s up to conv5_3 (or `EfficientNetStream`s), 3 and 2L input channels.
        fusion: `ConvFusion` of the two streams' last maps (early fusion).
        spatiotemporal_head: `ScoreHead` (or `LiteScoreHead`) on the fused features.
        appearance_head: the same on the RGB stream's last map alone.
        skips: for output_stride 16 / 8, a `SkipScores` per finer level (stride 16, then 8: pool4 and pool3 for VGG),
            FCN-16s / 8s style: the scores so far are upsampled 2x (`BilinearUpsample`) and the level's scores added.
        upsample: `BilinearUpsample`, the stride-`output_stride` deconvolution to full resolution.

    Late fusion is the plain sum of the two heads' class scores. A learnable weight per head would add nothing: it
    multiplies a linear score layer, so each head's `score` conv can already learn any scale, and a sum keeps the
    exported graph a single Add.

    Args:
        num_classes: number of output classes (the label set's size).
        flow_length: L, the number of stacked flows; the flow stream takes 2L channels (x, y per flow).
        width: VGG-16 channel multiplier; 1.0 is VGG-16 (about 269M parameters with both heads), 0.25 is the lite
            variant. efficientnet_lite0 takes 1.0 only.
        output_stride: 32 (the paper's), 16 or 8; see the module docstring.
        backbone: "vgg16" (the paper's) or "efficientnet_lite0" (see the module docstring).

    Raises:
        ValueError: num_classes or flow_length below 1, width not a positive finite number (or not 1.0 for
            efficientnet_lite0), an output_stride not in OUTPUT_STRIDES, or a backbone not in BACKBONES.
    """

    rgb_stream: VGGStream | EfficientNetStream
    flow_stream: VGGStream | EfficientNetStream
    spatiotemporal_head: ScoreHead | LiteScoreHead
    appearance_head: ScoreHead | LiteScoreHead

    def __init__(
        self,
        num_classes: int,
        *,
        flow_length: int = 10,
        width: float = 1.0,
        output_stride: int = 32,
        backbone: str = "vgg16",
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer (the label set's size), got {num_classes!r}")
        if not isinstance(flow_length, int) or flow_length < 1:
            raise ValueError(f"flow_length must be a positive integer (L stacked flows), got {flow_length!r}")
        if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
            raise ValueError(f"width must be a positive number (1.0 = VGG-16, e.g. 0.25 for lite), got {width!r}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if backbone != "vgg16" and width != 1.0:
            raise ValueError(f"width={width}: backbone {backbone!r} has no width multiplier; use width=1.0")
        self.num_classes = num_classes
        self.flow_length = flow_length
        self.width = float(width)
        self.output_stride = output_stride
        self.backbone = backbone

        if backbone == "vgg16":
            self.rgb_stream = VGGStream(3, width=width)
            self.flow_stream = VGGStream(2 * flow_length, width=width)
            features = self.rgb_stream.out_channels
            self.fusion = ConvFusion(features)
            self.spatiotemporal_head = ScoreHead(features, num_classes, width=width)
            self.appearance_head = ScoreHead(features, num_classes, width=width)
        else:
            self.rgb_stream = EfficientNetStream(3)
            self.flow_stream = EfficientNetStream(2 * flow_length)
            features = self.rgb_stream.out_channels
            self.fusion = ConvFusion(features, relu=False)
            self.spatiotemporal_head = LiteScoreHead(features, num_classes)
            self.appearance_head = LiteScoreHead(features, num_classes)
        # The first map at stride 16, then at 8 (VGG: pool4, pool3; conv5_3 is stride 16 too but comes last).
        strides = self.rgb_stream.strides
        self._skip_levels = [strides.index(stride) for stride in (16, 8) if stride >= output_stride]
        rgb_maps, flow_maps = self.rgb_stream.feature_channels(), self.flow_stream.feature_channels()
        channels = [a + b for a, b in zip(rgb_maps, flow_maps, strict=True)]
        self.skips = nn.ModuleList(SkipScores(channels[level], num_classes) for level in self._skip_levels)
        self.upsample = BilinearUpsample(num_classes, output_stride)
        self._init_from_scratch()

    def _init_from_scratch(self) -> None:
        # Scores start near 0 (uniform softmax), as torchvision's VGG. No BatchNorm in VGG, so a from-scratch VGG
        # (the small widths, with no pretrained weights) needs He init to keep activations alive through 15 ReLU
        # layers; `load_vgg16_weights` overwrites the VGG parts for width 1.0. EfficientNet streams keep torch's
        # default init: they are meant to start from ImageNet (`load_efficientnet_lite0_weights`).
        for head in (self.spatiotemporal_head, self.appearance_head):
            hidden = (head.fc6, head.fc7) if isinstance(head, ScoreHead) else (head.head,)
            for conv in hidden:
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(conv_bias(conv))
            nn.init.normal_(head.score.weight, std=0.01)
            nn.init.zeros_(conv_bias(head.score))
        for stream in (self.rgb_stream, self.flow_stream):
            if isinstance(stream, VGGStream):
                for conv in stream.conv_layers():
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(conv_bias(conv))

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Class scores (logits, before softmax) for every pixel.

        Inputs of any size work: both are zero-padded at the bottom and right to the next multiple of 32 and the
        output is cropped back. Zero is the dataset mean colour after normalisation and "no motion" for flow, the same
        value the 3x3 convs already pad every border with; padding only bottom/right keeps pixel (0, 0) on the
        stride-32 grid, so no shift is introduced.

        Args:
            rgb: (B, 3, H, W) normalised RGB frame.
            flow: (B, 2L, H, W) stacked flows (x, y per flow), scaled as the model's ModelSpec says.

        Returns:
            (B, num_classes, H, W) logits.

        Raises:
            ValueError: an input that is not 4-D, has the wrong channel count, or whose batch or size differs from the
                other's.
        """
        self._check_inputs(rgb, flow)
        height, width = rgb.shape[-2:]
        pad_bottom, pad_right = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        rgb = _zero_pad_bottom_right(rgb, pad_bottom, pad_right)
        flow = _zero_pad_bottom_right(flow, pad_bottom, pad_right)

        rgb_maps = self.rgb_stream.features(rgb)
        flow_maps = self.flow_stream.features(flow)
        appearance, motion = rgb_maps[-1], flow_maps[-1]
        fused = self.fusion(appearance, motion)
        # late fusion (paper 3.2): the spatio-temporal and appearance scores meet where each predicts classes
        scores = self.spatiotemporal_head(fused) + self.appearance_head(appearance)
        for level, skip in zip(self._skip_levels, self.skips, strict=True):
            scores = skip(scores, rgb_maps[level], flow_maps[level])
        return self.upsample(scores)[:, :, :height, :width]

    def _check_inputs(self, rgb: torch.Tensor, flow: torch.Tensor) -> None:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must be (B, 3, H, W), got shape {tuple(rgb.shape)}")
        if flow.dim() != 4 or flow.shape[1] != 2 * self.flow_length:
            raise ValueError(
                f"flow must be (B, 2L, H, W) = (B, {2 * self.flow_length}, H, W) for flow_length={self.flow_length}, "
                f"got shape {tuple(flow.shape)}; check the ModelSpec's flow_length"
            )
        if rgb.shape[0] != flow.shape[0] or rgb.shape[-2:] != flow.shape[-2:]:
            raise ValueError(
                f"rgb {tuple(rgb.shape)} and flow {tuple(flow.shape)} must share batch size and H, W; "
                "resize the flow to the frame's size"
            )


def _zero_pad_bottom_right(x: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H + bottom, W + right), zeros below and to the right.

    Concatenates zeros rather than calling F.pad: the dynamo ONNX exporter writes Pad at opset 18 and cannot convert
    it down to opset 17 (TensorRT 8.6's), while Concat exports at any opset. Both are no-ops when nothing is missing.
    """
    batch, channels, height, width = x.shape
    if bottom:
        x = torch.cat([x, x.new_zeros(batch, channels, bottom, width)], dim=2)
    if right:
        x = torch.cat([x, x.new_zeros(batch, channels, height + bottom, right)], dim=3)
    return x
