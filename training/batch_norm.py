"""Batch normalisation for training the streams from scratch, folded away before a model is saved.

VGG-16 has no normalisation: it was trained in stages (the paper starts from ImageNet weights), and a plain
13-conv stream trained from scratch fits its weak targets poorly. A BatchNorm after each stream convolution, as in
torchvision's `vgg16_bn`, is the usual cure. At inference a BatchNorm is an affine map per channel, so
`fold_batch_norm` merges it into the convolution before it: the saved checkpoint is the plain `TwoStreamNet`
(same state-dict keys, ONNX graph and TensorRT engine) and no runtime knows batch norm was used.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from wsvs_ros.model.two_stream import TwoStreamNet, conv_bias


class ConvBatchNorm(nn.Module):
    """A stream convolution followed by BatchNorm2d (ReLU stays in `VGGStream.forward`)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels, device=conv.weight.device, dtype=conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def folded(self) -> nn.Conv2d:
        """A Conv2d equal to this module in eval mode.

        With s = gamma / sqrt(running_var + eps): w' = w * s and b' = (b - running_mean) * s + beta.
        """
        conv, bn = self.conv, self.bn
        assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats is on
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        out = copy.deepcopy(conv)
        with torch.no_grad():
            out.weight.copy_(conv.weight * scale[:, None, None, None])
            conv_bias(out).copy_((conv_bias(conv) - bn.running_mean) * scale + bn.bias)
        return out


def add_batch_norm(model: TwoStreamNet) -> None:
    """Put a BatchNorm after each of the 26 stream convolutions of `model`, in place (the heads are left as VGG's)."""
    for stream in (model.rgb_stream, model.flow_stream):
        for i, conv in enumerate(stream.conv_layers()):
            stream.convs[i] = ConvBatchNorm(conv)


def fold_batch_norm(model: TwoStreamNet) -> TwoStreamNet:
    """A copy of `model` with every `ConvBatchNorm` merged into its convolution; `model` itself is untouched.

    The copy computes what `model.eval()` computes (running statistics), with the layout of a plain `TwoStreamNet`.
    A model without batch norm is returned as an equal copy.
    """
    out = copy.deepcopy(model)
    for stream in (out.rgb_stream, out.flow_stream):
        for i, layer in enumerate(stream.convs):
            if isinstance(layer, ConvBatchNorm):
                stream.convs[i] = layer.folded()
    return out
