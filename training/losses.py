"""Weak-supervision losses of Saleh et al. (ICCV 2017, section 3.2.1): tags, heatmaps and the CRF constraint.

Every loss is a pure function of tensors, batched over B and averaged over it. The numerical guards all live at the
top of this module: `PROB_FLOOR` with `safe_log` / `log1m` for the logarithms of pooled probabilities, and
`_masked_mean` for averages over sets that may be empty (no absent class, no tagged class with heatmap pixels).
Log-probabilities of pixels come from `log_softmax`, which is exact and needs no floor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from wsvs_ros.crf import UNARY_FLOOR

PROB_FLOOR = UNARY_FLOOR
"""Smallest probability a logarithm sees (1e-6), the dense CRF's unary floor, so the CRF-KL target and the network's
log-probabilities are capped alike. Far below what a network assigns while it learns, and large enough that 1 - S
stays representable in float32 (its resolution near 1 is 6e-8); below it the log is flat (zero gradient)."""


def safe_log(p: Tensor) -> Tensor:
    """log(p) with p floored at `PROB_FLOOR`, so that a probability of 0 gives a finite value and gradient."""
    return torch.log(p.clamp_min(PROB_FLOOR))


def log1m(p: Tensor) -> Tensor:
    """log(1 - p) with 1 - p floored at `PROB_FLOOR`, finite as p -> 1."""
    return safe_log(1.0 - p)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """(B, C) values, (B, C) bool mask -> (B,) mean of the selected values per row; an empty selection gives 0."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=1)
    return total / mask.sum(dim=1).clamp_min(1).to(values.dtype)


def _check_bchw(name: str, x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}")


def _check_tags(tags: Tensor, logits: Tensor) -> None:
    if tags.dtype != torch.bool or tags.shape != logits.shape[:2]:
        raise ValueError(
            f"tags must be a bool (B, C) = {tuple(logits.shape[:2])} tensor matching the logits, "
            f"got {tags.dtype} {tuple(tags.shape)}; pass a multi-hot tensor as `tags.bool()`"
        )


def lse_pool(probs: Tensor, r: float = 5.0) -> Tensor:
    """Log-Sum-Exp pooling of per-pixel probabilities into one score per class (Eq. 3).

    Computed in log space, (logsumexp(r * S) - log |I|) / r, so no exponential is ever formed. The result lies
    between the mean (r -> 0) and the maximum (r -> inf) of each map.

    Args:
        probs: (B, C, H, W) per-pixel class probabilities S.
        r: sharpness, > 0; the paper uses 5.

    Returns:
        (B, C) pooled scores S^k.

    Raises:
        ValueError: if probs is not 4-D or r <= 0.
    """
    _check_bchw("probs", probs)
    if not r > 0:
        raise ValueError(f"r={r} must be > 0 (the paper uses r=5)")
    n_pixels = probs.shape[2] * probs.shape[3]
    return (torch.logsumexp(r * probs.flatten(2), dim=2) - math.log(n_pixels)) / r  # Eq. 3


def tag_loss(logits: Tensor, tags: Tensor, r: float = 5.0) -> Tensor:
    """Tag loss (Eq. 2): tagged classes should appear somewhere in the frame, untagged ones nowhere.

    S^k is the LSE pooling (Eq. 3) of the softmax probabilities (Eq. 1). The first term averages -log S^k over the
    tagged classes, the second -log(1 - S^k) over the untagged ones; a term whose set is empty (every class tagged,
    or none) contributes 0.

    Args:
        logits: (B, C, H, W) network scores s.
        tags: (B, C) bool, True for the classes tagged on the frame's video.
        r: LSE sharpness (Eq. 3).

    Returns:
        Scalar, the mean over the batch.

    Raises:
        ValueError: for a logits tensor that is not 4-D or tags that are not a (B, C) bool tensor.
    """
    _check_bchw("logits", logits)
    _check_tags(tags, logits)
    pooled = lse_pool(logits.softmax(dim=1), r)  # Eq. 1, Eq. 3
    present = _masked_mean(-safe_log(pooled), tags)  # Eq. 2, first term
    absent = _masked_mean(-log1m(pooled), ~tags)  # Eq. 2, second term
    return (present + absent).mean()


def binary_masks(heatmaps: Tensor, fraction: float = 0.2) -> Tensor:
    """Binary localisation masks B_k from classifier heatmaps (section 3.2.1): heatmap > fraction * its maximum.

    The maximum is taken per image and per class. A class whose heatmap maximum is <= 0 gets an empty mask (its
    classifier found nothing), whatever the threshold would say.

    Args:
        heatmaps: (B, C, h, w) classifier activations, any real scale.
        fraction: threshold relative to each map's maximum, in [0, 1); the paper uses 0.2.

    Returns:
        (B, C, h, w) bool masks.

    Raises:
        ValueError: if heatmaps is not 4-D or fraction is outside [0, 1).
    """
    _check_bchw("heatmaps", heatmaps)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction={fraction} must be in [0, 1) (the paper uses 0.2)")
    peak = heatmaps.amax(dim=(2, 3), keepdim=True)
    return (heatmaps > fraction * peak) & (peak > 0)


def heatmap_loss(logits: Tensor, masks: Tensor, tags: Tensor) -> Tensor:
    """Heatmap loss (Eq. 4): high probability of class k inside its mask B_k, for each tagged class.

    For each tagged class, -log S^k is averaged over the pixels of B_k; these are averaged over the tagged classes
    whose mask has pixels (a tagged class with an empty B_k is skipped, not counted). A frame with no such class
    contributes 0 (with a zero gradient). Masks coarser or finer than the logits, as heatmaps usually are, are
    resized to the logits' size with nearest-neighbour sampling at pixel centres ("nearest-exact").

    Args:
        logits: (B, C, H, W) network scores s.
        masks: (B, C, h, w) bool B_k, e.g. from `binary_masks`; any h, w.
        tags: (B, C) bool, True for the tagged classes.

    Returns:
        Scalar, the mean over the batch.

    Raises:
        ValueError: for tensors that are not 4-D, masks that are not bool or whose (B, C) differs from the logits',
            or tags that are not a (B, C) bool tensor.
    """
    _check_bchw("logits", logits)
    _check_bchw("masks", masks)
    _check_tags(tags, logits)
    if masks.dtype != torch.bool or masks.shape[:2] != logits.shape[:2]:
        raise ValueError(
            f"masks must be a bool (B, C, h, w) tensor with (B, C) = {tuple(logits.shape[:2])} like the logits, "
            f"got {masks.dtype} {tuple(masks.shape)}; build it with binary_masks(heatmaps)"
        )
    if masks.shape[2:] != logits.shape[2:]:
        masks = F.interpolate(masks.to(logits.dtype), size=logits.shape[2:], mode="nearest-exact") > 0.5
    log_probs = logits.log_softmax(dim=1)  # log of Eq. 1, exact
    area = masks.sum(dim=(2, 3))  # |B_k|, (B, C)
    inside = torch.where(masks, log_probs, torch.zeros_like(log_probs)).sum(dim=(2, 3))
    per_class = inside / area.clamp_min(1).to(log_probs.dtype)
    return _masked_mean(-per_class, tags & (area > 0)).mean()  # Eq. 4


def crf_kl_loss(logits: Tensor, crf_probs: Tensor) -> Tensor:
    """Mean per-pixel KL(Q || P) from the dense CRF's output Q to the network's softmax P (constrain-to-boundary).

    Kolesnikov & Lampert's SEC loss, which the paper follows: the CRF output is a fixed target (detached), and the
    divergence is taken in the direction KL(Q || P) = sum_k Q^k log(Q^k / P^k). In this direction the loss is a
    cross-entropy with a soft target minus Q's (constant) entropy: its gradient with respect to the logits is
    simply P - Q per pixel, and P is pushed to cover every class the CRF keeps on a pixel. The entropy term is kept
    so the value is a true divergence, 0 exactly when the network agrees with the CRF.

    Args:
        logits: (B, C, H, W) network scores.
        crf_probs: (B, C, H, W) CRF marginals Q, e.g. from `wsvs_ros.crf.dense_crf`; no gradient flows into it.

    Returns:
        Scalar, the mean over the B * H * W pixels.

    Raises:
        ValueError: if the tensors are not 4-D or their shapes differ.
    """
    _check_bchw("logits", logits)
    if crf_probs.shape != logits.shape:
        raise ValueError(
            f"crf_probs has shape {tuple(crf_probs.shape)} but logits {tuple(logits.shape)}; run the CRF on the "
            "softmax of these logits, at their resolution"
        )
    target = crf_probs.detach()
    kl = (torch.xlogy(target, target) - target * logits.log_softmax(dim=1)).sum(dim=1)
    return kl.mean()
