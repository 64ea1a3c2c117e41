"""Initialise a `TwoStreamNet` from a torchvision-format VGG-16 state dict (paper 4.2).

The file is what `torch.save(torchvision.models.vgg16(weights=...).state_dict(), path)` writes; nothing is downloaded
here, and torchvision is not needed to read it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from wsvs_ros.labels import LabelSet
from wsvs_ros.model.imagenet_scores import IMAGENET_CLASSES, check_label_set, init_score_layer
from wsvs_ros.model.two_stream import (
    FC6_KERNEL,
    VGG16_BLOCKS,
    VGG16_FC_CHANNELS,
    ScoreHead,
    TwoStreamNet,
    VGGStream,
    conv_bias,
)


def _conv_keys() -> list[str]:
    """torchvision's `features.N` indices of conv1_1..conv5_3 (ReLUs and pools take the indices in between)."""
    keys, index = [], 0
    for block in VGG16_BLOCKS:
        for _ in block:
            keys.append(f"features.{index}")
            index += 2  # conv, ReLU
        index += 1  # MaxPool
    return keys


VGG16_CONV_KEYS: tuple[str, ...] = tuple(_conv_keys())  # features.0, .2, .5, .7, .10, ..., .28


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    channels = 3
    out_channels = [out for block in VGG16_BLOCKS for out in block]
    for key, out in zip(VGG16_CONV_KEYS, out_channels, strict=True):
        shapes[f"{key}.weight"] = (out, channels, 3, 3)
        shapes[f"{key}.bias"] = (out,)
        channels = out
    fc = VGG16_FC_CHANNELS
    for key, shape in (
        ("classifier.0", (fc, channels * FC6_KERNEL * FC6_KERNEL)),
        ("classifier.3", (fc, fc)),
        ("classifier.6", (IMAGENET_CLASSES, fc)),
    ):
        shapes[f"{key}.weight"] = shape
        shapes[f"{key}.bias"] = shape[:1]
    return shapes


VGG16_STATE_SHAPES: dict[str, tuple[int, ...]] = _expected_shapes()


def load_vgg16_weights(
    net: TwoStreamNet,
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    *,
    label_set: LabelSet,
    generator: torch.Generator | None = None,
) -> None:
    """Initialise `net` in place from ImageNet-trained VGG-16 weights, as paper 4.2 describes.

    - rgb_stream and flow_stream conv1_2..conv5_3: VGG's convs (`features.*`).
    - flow_stream conv1_1: the mean over R, G, B of VGG's conv1_1 filters, repeated over the 2L flow channels and
      scaled by 3 / (2L). The scale keeps each filter's total weight, so a flow stack whose channels all equal v
      gets the response an RGB image whose channels all equal v gets; without it conv1_1's output (and, VGG having
      no normalisation layers, every activation after it) would be 2L / 3 times larger (6.7x for L = 10) than
      what the pretrained layers above were trained on.
    - fc6 / fc7 of both heads: `classifier.0` / `classifier.3` reshaped to [4096, 512, 7, 7] / [4096, 4096, 1, 1]
      (torchvision flattens pool5 as C, H, W, so the reshape is exact).
    - score rows of classes with `imagenet_ids`: the mean of those `classifier.6` rows and biases; other rows
      N(0, 0.1) with bias 0, drawn independently for each head from `generator`.
    - fusion: reset to sum fusion (see `ConvFusion`); the deconvolution: reset to bilinear.

    Args:
        net: a width-1.0 `TwoStreamNet` (any device and dtype; the weights are copied into it).
        source: path of a torchvision VGG-16 state-dict file, or such a dict already loaded.
        label_set: the classes of `net`'s scores, with their ImageNet ids.
        generator: random source for the N(0, 0.1) rows (for reproducible initialisation).

    Raises:
        ValueError: `net.width` is not 1.0; `net` and `label_set` disagree on the number of classes; an
            `imagenet_ids` entry is outside 0..999; `source` is not a state dict (the message names the path);
            or keys are missing, unexpected or of the wrong shape (all named, with the expected shape).
        FileNotFoundError: `source` names no file.
    """
    state = _read_state_dict(source)
    if net.backbone != "vgg16":
        raise ValueError(f"VGG-16 weights fit only backbone vgg16; this net has backbone {net.backbone!r}")
    if net.width != 1.0:
        raise ValueError(
            f"VGG-16 weights fit only width=1.0; this net has width={net.width}. "
            "Build TwoStreamNet(..., width=1.0), or train the smaller width from its own initialisation."
        )
    check_label_set(net.num_classes, label_set)
    _check_state_dict(state)
    assert isinstance(net.rgb_stream, VGGStream) and isinstance(net.flow_stream, VGGStream)  # backbone vgg16

    with torch.no_grad():
        rgb_convs, flow_convs = net.rgb_stream.conv_layers(), net.flow_stream.conv_layers()
        for key, rgb_conv, flow_conv in zip(VGG16_CONV_KEYS, rgb_convs, flow_convs, strict=True):
            weight, bias = state[f"{key}.weight"], state[f"{key}.bias"]
            rgb_conv.weight.copy_(weight)
            conv_bias(rgb_conv).copy_(bias)
            if flow_conv is net.flow_stream.convs[0]:  # conv1_1: 2L flow channels instead of 3 colours
                channels = flow_conv.in_channels
                weight = weight.float().sum(dim=1, keepdim=True).expand(-1, channels, -1, -1) / channels
            flow_conv.weight.copy_(weight)
            conv_bias(flow_conv).copy_(bias)

        for head in (net.spatiotemporal_head, net.appearance_head):
            assert isinstance(head, ScoreHead)
            head.fc6.weight.copy_(state["classifier.0.weight"].reshape(head.fc6.weight.shape))
            conv_bias(head.fc6).copy_(state["classifier.0.bias"])
            head.fc7.weight.copy_(state["classifier.3.weight"].reshape(head.fc7.weight.shape))
            conv_bias(head.fc7).copy_(state["classifier.3.bias"])
            init_score_layer(
                head.score,
                state["classifier.6.weight"],
                state["classifier.6.bias"],
                label_set=label_set,
                generator=generator,
            )

    net.fusion.reset_parameters()
    net.upsample.reset_parameters()


def _read_state_dict(source: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(source, Mapping):
        state, origin = source, "the given dict"
    else:
        path = os.fspath(source)
        origin = repr(path)
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except OSError:
            raise  # missing or unreadable file: its own error says so
        except Exception as exc:  # torch.load reports a non-torch file as KeyError, EOFError, UnpicklingError, ...
            raise ValueError(
                f"{path!r} is not a torch state-dict file ({exc.__class__.__name__}: {exc}); expected what "
                "torch.save(torchvision.models.vgg16(weights=...).state_dict(), path) writes"
            ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{origin} does not hold a state dict (a dict of name -> tensor) but a {type(state).__name__}; expected "
            "what torch.save(torchvision.models.vgg16(weights=...).state_dict(), path) writes"
        )
    return state


def _check_state_dict(state: Mapping[str, torch.Tensor]) -> None:
    """Raise one ValueError listing every missing, unexpected or wrongly shaped key."""
    problems = []
    for key, shape in VGG16_STATE_SHAPES.items():
        if key not in state:
            problems.append(f"missing {key} (expected shape {list(shape)})")
        elif tuple(state[key].shape) != shape:
            problems.append(f"{key} has shape {list(state[key].shape)}, expected {list(shape)}")
    problems += [f"unexpected key {key}" for key in state if key not in VGG16_STATE_SHAPES]
    if problems:
        raise ValueError(
            "not a torchvision VGG-16 state dict (torchvision.models.vgg16().state_dict()): " + "; ".join(problems)
        )
