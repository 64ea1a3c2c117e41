"""The class-score layer's start from an ImageNet classifier (paper 4.2), shared by every pretrained backbone.

"For the last convolutional layer, we used the weights corresponding to the classes shared by the datasets used here
and in ILSVRC. For the background classes, we initialized the weights with zero-mean Gaussian noise with a standard
deviation of 0.1."
"""

from __future__ import annotations

import torch
from torch import nn

from wsvs_ros.labels import LabelSet

IMAGENET_CLASSES = 1000
BACKGROUND_SCORE_STD = 0.1  # paper 4.2: classes not in ILSVRC start from N(0, 0.1)


def check_label_set(num_classes: int, label_set: LabelSet) -> None:
    """Raise ValueError unless a net with `num_classes` scores fits `label_set` and its ImageNet ids are in 0..999."""
    if num_classes != len(label_set):
        raise ValueError(
            f"net has num_classes={num_classes} but label set {label_set.name!r} has {len(label_set)} classes"
        )
    for c in label_set.classes:
        bad = [i for i in c.imagenet_ids if not 0 <= i < IMAGENET_CLASSES]
        if bad:
            raise ValueError(f"class {c.name!r} of label set {label_set.name!r} has imagenet_ids {bad} outside 0..999")


def init_score_layer(
    score: nn.Conv2d,
    classifier_weight: torch.Tensor,
    classifier_bias: torch.Tensor,
    *,
    label_set: LabelSet,
    generator: torch.Generator | None = None,
) -> None:
    """Set a 1x1 score conv (C, F, 1, 1) from an ImageNet classifier (1000, F) and (1000,), in place.

    Rows of classes with `imagenet_ids`: the mean of those classifier rows and biases. Other rows: N(0, 0.1) drawn from
    `generator`, bias 0.
    """
    classifier_weight, classifier_bias = classifier_weight.float().cpu(), classifier_bias.float().cpu()
    weight = torch.zeros(len(label_set), classifier_weight.shape[1])
    bias = torch.zeros(len(label_set))
    mapped = torch.zeros(len(label_set), dtype=torch.bool)
    for c in label_set.classes:
        if c.imagenet_ids:
            ids = list(c.imagenet_ids)
            weight[c.id] = classifier_weight[ids].mean(dim=0)
            bias[c.id] = classifier_bias[ids].mean()
            mapped[c.id] = True
    device = generator.device if generator is not None else torch.device("cpu")
    unmapped = torch.randn(weight.shape, generator=generator, device=device).cpu() * BACKGROUND_SCORE_STD
    assert score.bias is not None, "the score conv is built with a bias"
    with torch.no_grad():
        score.weight.copy_(torch.where(mapped[:, None], weight, unmapped).reshape(score.weight.shape))
        score.bias.copy_(bias)
