"""The two-stream segmentation network of paper 3.2 (Fig. 3): RGB and optical-flow VGG-16 streams, convolutional early
fusion at conv5_3, late fusion of the class scores of the fused and the appearance heads, and a bilinear
deconvolution back to the input size.

`output_stride` 32 is the paper's network (FCN-32s: one deconvolution from the stride-32 scores). 16 and 8 add FCN's
skip layers (Long et al., FCN-16s / FCN-8s) from pool4 and pool3 of both streams. At the small input sizes a CPU or a
Jetson can afford, stride 32 is a hard ceiling: a 256x128 frame gets an 8x4 score map, and even a perfect 8x4 map
upsampled loses thin and distant classes (docs/results/output_stride.md).

`width` scales every channel count (1.0 is VGG-16 exactly, which `load_vgg16_weights` can initialise); smaller widths
are the CPU and real-time Jetson variants and are trained from the initialisation below.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from wsvs_ros.spec import OUTPUT_STRIDES

# VGG-16's conv1_1..conv5_3 output channels per block; a 2x2 max-pool follows blocks 1-4 (pool5 lives in the heads),
# so conv5_3 is at stride 16 and the score maps at stride 32.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_FC_CHANNELS = 4096
FC6_KERNEL = 7  # VGG's fc6 sees a 7x7 pool5 map; FCN turns it into a 7x7 conv.
SIZE_MULTIPLE = 32  # four pools in the streams + pool5 in the heads: inputs are padded to a multiple of this


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

    def pooled_channels(self) -> list[int]:
        """Channels of pool1..pool4, the maps `features` returns before conv5_3."""
        ends = [i for i, pool in enumerate(self._pool_after) if pool]
        return [self.conv_layers()[i].out_channels for i in ends]


class ConvFusion(nn.Module):
    """Early fusion of paper 3.2, as Feichtenhofer et al. (CVPR 2016): concatenate the two conv5_3 maps and let a 1x1
    conv learn which appearance and motion channels to combine at each pixel, then ReLU.

    Initialised to sum fusion (weight [I, I], bias 0), as Feichtenhofer et al. do: at init the fused features are the
    RGB conv5_3 features plus the flow ones, so the spatio-temporal head starts from the appearance features VGG's fc6
    was trained on, shifted by motion, rather than from halved ones (a mean would halve every fc6 input). Both inputs
    come out of a ReLU, so the ReLU is a no-op at init; it keeps pool5/fc6's input non-negative as in VGG.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        channels = self.conv.out_channels
        identity = torch.eye(channels).reshape(channels, channels, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([identity, identity], dim=1))
            conv_bias(self.conv).zero_()

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Two (B, C, h, w) conv5_3 maps -> fused (B, C, h, w)."""
        return F.relu(self.conv(torch.cat([rgb, flow], dim=1)))


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
        rgb_stream, flow_stream: `VGGStream`s (3 and 2L input channels) up to conv5_3.
        fusion: `ConvFusion` of the two conv5_3 maps (early fusion).
        spatiotemporal_head: `ScoreHead` on the fused features.
        appearance_head: `ScoreHead` on the RGB conv5_3 alone.
        skips: for output_stride 16 / 8, a `SkipScores` per finer level (pool4, then pool3), FCN-16s / 8s style:
            the scores so far are upsampled 2x (`BilinearUpsample`) and the level's scores added.
        upsample: `BilinearUpsample`, the stride-`output_stride` deconvolution to full resolution.

    Late fusion is the plain sum of the two heads' class scores. A learnable weight per head would add nothing: it
    multiplies a linear score layer, so each head's `score` conv can already learn any scale, and a sum keeps the
    exported graph a single Add.

    Args:
        num_classes: number of output classes (the label set's size).
        flow_length: L, the number of stacked flows; the flow stream takes 2L channels (x, y per flow).
        width: channel multiplier; 1.0 is VGG-16 (about 269M parameters with both heads), 0.25 is the lite variant.
        output_stride: 32 (the paper's), 16 or 8; see the module docstring.

    Raises:
        ValueError: num_classes or flow_length below 1, width not a positive finite number, or an output_stride
            not in OUTPUT_STRIDES.
    """

    def __init__(self, num_classes: int, *, flow_length: int = 10, width: float = 1.0, output_stride: int = 32) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer (the label set's size), got {num_classes!r}")
        if not isinstance(flow_length, int) or flow_length < 1:
            raise ValueError(f"flow_length must be a positive integer (L stacked flows), got {flow_length!r}")
        if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
            raise ValueError(f"width must be a positive number (1.0 = VGG-16, e.g. 0.25 for lite), got {width!r}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        self.num_classes = num_classes
        self.flow_length = flow_length
        self.width = float(width)
        self.output_stride = output_stride

        self.rgb_stream = VGGStream(3, width=width)
        self.flow_stream = VGGStream(2 * flow_length, width=width)
        features = self.rgb_stream.out_channels
        self.fusion = ConvFusion(features)
        self.spatiotemporal_head = ScoreHead(features, num_classes, width=width)
        self.appearance_head = ScoreHead(features, num_classes, width=width)
        # pool4 (stride 16) is features[3], pool3 (stride 8) features[2]
        self._skip_levels = [level for level, stride in ((3, 16), (2, 8)) if stride >= output_stride]
        rgb_pooled, flow_pooled = self.rgb_stream.pooled_channels(), self.flow_stream.pooled_channels()
        pooled = [a + b for a, b in zip(rgb_pooled, flow_pooled, strict=True)]
        self.skips = nn.ModuleList(SkipScores(pooled[level], num_classes) for level in self._skip_levels)
        self.upsample = BilinearUpsample(num_classes, output_stride)
        self._init_from_scratch()

    def _init_from_scratch(self) -> None:
        # No BatchNorm in VGG, so a from-scratch net (the small widths, with no pretrained weights) needs He init to
        # keep activations alive through 15 ReLU layers; scores start near 0 (uniform softmax), as torchvision's VGG.
        # `load_vgg16_weights` overwrites the VGG parts for width 1.0.
        for head in (self.spatiotemporal_head, self.appearance_head):
            for conv in (head.fc6, head.fc7):
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(conv_bias(conv))
            nn.init.normal_(head.score.weight, std=0.01)
            nn.init.zeros_(conv_bias(head.score))
        for stream in (self.rgb_stream, self.flow_stream):
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
