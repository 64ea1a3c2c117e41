"""Losses of section 3.2.1 against values computed by hand with `math`, in float32 and float64."""

from __future__ import annotations

import math

import pytest
import torch

from wsvs_training.losses import (
    PROB_FLOOR,
    binary_masks,
    crf_kl_loss,
    heatmap_loss,
    log1m,
    lse_pool,
    safe_log,
    tag_loss,
)

DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


def tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}


# Two classes, two pixels: class 0 scores (0, 2), class 1 scores (1, -1).
LOGITS = [[[[0.0, 2.0]], [[1.0, -1.0]]]]


def softmax2(a: float, b: float) -> tuple[float, float]:
    return math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b))


P0A, P1A = softmax2(0.0, 1.0)  # pixel a
P0B, P1B = softmax2(2.0, -1.0)  # pixel b


def lse(values: list[float], r: float = 5.0) -> float:
    return math.log(sum(math.exp(r * v) for v in values) / len(values)) / r


def logits_tensor(values: list, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype)


# --- LSE pooling (Eq. 3) -------------------------------------------------------------------------------------------


def test_lse_pool_matches_eq3_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    probs = torch.tensor([[[[0.2, 0.6]], [[0.8, 0.4]]]], device=device, dtype=dtype)
    expected = torch.tensor([[lse([0.2, 0.6]), lse([0.8, 0.4])]], device=device, dtype=dtype)
    torch.testing.assert_close(lse_pool(probs), expected, **tol(dtype))


def test_lse_pool_lies_between_mean_and_max_and_tends_to_each(device: torch.device, dtype: torch.dtype) -> None:
    probs = torch.rand(2, 3, 4, 5, device=device, dtype=dtype)
    pooled = lse_pool(probs)
    mean, peak = probs.mean(dim=(2, 3)), probs.amax(dim=(2, 3))
    assert bool((pooled >= mean - 1e-6).all()) and bool((pooled <= peak + 1e-6).all())
    torch.testing.assert_close(lse_pool(probs, r=1e-2), mean, rtol=0, atol=1e-3)
    assert bool(((peak - lse_pool(probs, r=1e4)) < 3 * math.log(20) / 1e4).all())


def test_lse_pool_rejects_non_positive_r() -> None:
    with pytest.raises(ValueError, match="r=0"):
        lse_pool(torch.rand(1, 2, 2, 2), r=0)


# --- Tag loss (Eq. 2) ----------------------------------------------------------------------------------------------


def test_tag_loss_matches_eq2_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    logits = logits_tensor(LOGITS, device, dtype)
    tags = torch.tensor([[True, False]], device=device)
    expected = -math.log(lse([P0A, P0B])) - math.log(1 - lse([P1A, P1B]))
    torch.testing.assert_close(tag_loss(logits, tags), torch.tensor(expected, device=device, dtype=dtype), **tol(dtype))


def test_all_tagged_frame_has_no_absent_term(device: torch.device, dtype: torch.dtype) -> None:
    logits = logits_tensor(LOGITS, device, dtype)
    tags = torch.tensor([[True, True]], device=device)
    expected = -(math.log(lse([P0A, P0B])) + math.log(lse([P1A, P1B]))) / 2
    loss = tag_loss(logits, tags)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, torch.tensor(expected, device=device, dtype=dtype), **tol(dtype))


def test_single_tag_averages_the_absent_term_over_the_untagged_classes(
    device: torch.device, dtype: torch.dtype
) -> None:
    raw = [[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]  # three classes, two pixels
    logits = torch.tensor(raw, device=device, dtype=dtype).view(1, 3, 1, 2)
    sums = [sum(math.exp(raw[c][i]) for c in range(3)) for i in range(2)]
    pooled = [lse([math.exp(raw[k][i]) / sums[i] for i in range(2)]) for k in range(3)]
    expected = -math.log(pooled[1]) - (math.log(1 - pooled[0]) + math.log(1 - pooled[2])) / 2
    loss = tag_loss(logits, torch.tensor([[False, True, False]], device=device))
    torch.testing.assert_close(loss, torch.tensor(expected, device=device, dtype=dtype), **tol(dtype))


def test_tag_loss_is_the_mean_over_the_batch(device: torch.device, dtype: torch.dtype) -> None:
    logits = torch.randn(3, 4, 3, 5, device=device, dtype=dtype)
    tags = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], device=device).bool()
    singles = torch.stack([tag_loss(logits[i : i + 1], tags[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(tag_loss(logits, tags), singles.mean(), **tol(dtype))


def test_tag_loss_rejects_non_bool_tags() -> None:
    with pytest.raises(ValueError, match="tags must be a bool"):
        tag_loss(torch.randn(1, 2, 2, 2), torch.tensor([[1.0, 0.0]]))


# --- Binary masks and heatmap loss (Eq. 4) -------------------------------------------------------------------------


def test_binary_mask_keeps_values_strictly_above_a_fifth_of_the_maximum(
    device: torch.device, dtype: torch.dtype
) -> None:
    heat = torch.tensor([[[[0.0, 1.0], [2.0, 10.0]], [[-1.0, -2.0], [-3.0, -0.5]]]], device=device, dtype=dtype)
    masks = binary_masks(heat)
    assert masks.dtype == torch.bool
    assert masks[0, 0].tolist() == [[False, False], [False, True]]  # 2 is not > 0.2 * 10
    assert not masks[0, 1].any()  # a heatmap whose maximum is <= 0 gives an empty mask
    assert binary_masks(heat, fraction=0.05)[0, 0].tolist() == [[False, True], [True, True]]


def test_binary_mask_thresholds_each_image_and_class_by_its_own_maximum(device: torch.device) -> None:
    heat = torch.tensor([[1.0, 4.0], [100.0, 50.0]], device=device).view(2, 1, 1, 2)
    assert binary_masks(heat, fraction=0.5).view(2, 2).tolist() == [[False, True], [True, False]]


def test_binary_masks_reject_a_fraction_outside_0_1() -> None:
    with pytest.raises(ValueError, match="fraction=1.0"):
        binary_masks(torch.rand(1, 1, 2, 2), fraction=1.0)


def test_heatmap_loss_matches_eq4_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    logits = logits_tensor(LOGITS, device, dtype)
    masks = torch.tensor([[[[True, False]], [[True, True]]]], device=device)
    tags = torch.tensor([[True, True]], device=device)
    expected = -(math.log(P0A) + (math.log(P1A) + math.log(P1B)) / 2) / 2
    loss = heatmap_loss(logits, masks, tags)
    torch.testing.assert_close(loss, torch.tensor(expected, device=device, dtype=dtype), **tol(dtype))


def test_heatmap_loss_ignores_masks_of_untagged_classes(device: torch.device, dtype: torch.dtype) -> None:
    logits = logits_tensor(LOGITS, device, dtype)
    masks = torch.tensor([[[[True, False]], [[True, True]]]], device=device)
    loss = heatmap_loss(logits, masks, torch.tensor([[True, False]], device=device))
    torch.testing.assert_close(loss, torch.tensor(-math.log(P0A), device=device, dtype=dtype), **tol(dtype))


def test_tagged_class_with_empty_mask_is_skipped_not_counted(device: torch.device, dtype: torch.dtype) -> None:
    logits = logits_tensor(LOGITS, device, dtype)
    masks = torch.tensor([[[[True, False]], [[False, False]]]], device=device)
    loss = heatmap_loss(logits, masks, torch.tensor([[True, True]], device=device))
    torch.testing.assert_close(loss, torch.tensor(-math.log(P0A), device=device, dtype=dtype), **tol(dtype))


def test_frame_without_any_masked_tagged_class_gives_zero_loss_and_zero_gradient(
    device: torch.device, dtype: torch.dtype
) -> None:
    logits = torch.randn(2, 3, 4, 4, device=device, dtype=dtype, requires_grad=True)
    masks = torch.zeros(2, 3, 2, 2, dtype=torch.bool, device=device)
    masks[1, 2] = True  # a mask, but for an untagged class
    tags = torch.tensor([[True, True, False], [True, False, False]], device=device)
    loss = heatmap_loss(logits, masks, tags)
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad is not None and bool((logits.grad == 0).all())


def test_coarse_masks_are_resized_nearest_to_the_logits(device: torch.device, dtype: torch.dtype) -> None:
    logits = torch.randn(1, 2, 4, 6, device=device, dtype=dtype)
    coarse = torch.tensor([[[[True, False, False], [False, False, True]], [[False, True, True], [True, True, False]]]])
    fine = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).to(device)
    tags = torch.tensor([[True, True]], device=device)
    torch.testing.assert_close(heatmap_loss(logits, coarse.to(device), tags), heatmap_loss(logits, fine, tags))


def test_mask_pixels_map_to_the_logit_pixels_whose_centres_they_cover(device: torch.device) -> None:
    # Width 3 -> 4: fine pixel centres 0.5, 1.5, 2.5, 3.5 fall in coarse pixels 0, 1, 1, 2 (scaled by 3/4).
    logits = torch.randn(1, 2, 1, 4, device=device)
    coarse = torch.tensor([[[[True, False, False]], [[False, True, False]]]], device=device)
    fine = torch.tensor([[[[True, False, False, False]], [[False, True, True, False]]]], device=device)
    tags = torch.tensor([[True, True]], device=device)
    torch.testing.assert_close(heatmap_loss(logits, coarse, tags), heatmap_loss(logits, fine, tags))


def test_heatmap_loss_rejects_masks_with_another_class_count() -> None:
    with pytest.raises(ValueError, match="masks must be a bool"):
        heatmap_loss(torch.randn(1, 3, 4, 4), torch.ones(1, 2, 4, 4, dtype=torch.bool), torch.ones(1, 3).bool())


# --- CRF constraint (KL) -------------------------------------------------------------------------------------------


def test_crf_kl_loss_matches_kl_of_crf_to_network_by_hand(device: torch.device, dtype: torch.dtype) -> None:
    logits = logits_tensor(LOGITS, device, dtype)
    crf = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]]]], device=device, dtype=dtype)  # pixel a certain, b undecided
    kl_a = math.log(1 / P0A)  # the 0 * log 0 term is 0
    kl_b = 0.5 * math.log(0.5 / P0B) + 0.5 * math.log(0.5 / P1B)
    expected = torch.tensor((kl_a + kl_b) / 2, device=device, dtype=dtype)
    torch.testing.assert_close(crf_kl_loss(logits, crf), expected, **tol(dtype))


def test_crf_kl_loss_is_zero_when_the_network_agrees_with_the_crf(device: torch.device, dtype: torch.dtype) -> None:
    logits = torch.randn(2, 4, 3, 3, device=device, dtype=dtype)
    loss = crf_kl_loss(logits, logits.softmax(dim=1))
    assert abs(loss.item()) < (1e-6 if dtype == torch.float32 else 1e-14)


def test_crf_kl_gradient_is_network_minus_crf_per_pixel_and_crf_gets_none(
    device: torch.device, dtype: torch.dtype
) -> None:
    logits = torch.randn(2, 3, 2, 4, device=device, dtype=dtype, requires_grad=True)
    crf = torch.rand(2, 3, 2, 4, device=device, dtype=dtype).softmax(dim=1).requires_grad_()
    crf_kl_loss(logits, crf).backward()
    assert crf.grad is None
    n_pixels = 2 * 2 * 4
    torch.testing.assert_close(logits.grad, (logits.softmax(dim=1) - crf).detach() / n_pixels, **tol(dtype))


def test_crf_kl_loss_rejects_a_crf_output_of_another_size() -> None:
    with pytest.raises(ValueError, match="crf_probs has shape"):
        crf_kl_loss(torch.randn(1, 2, 4, 4), torch.rand(1, 2, 2, 2))


# --- Numerical safety ----------------------------------------------------------------------------------------------


def test_safe_logs_are_finite_at_zero_and_one() -> None:
    zero_one = torch.tensor([0.0, 1.0])
    assert torch.isfinite(safe_log(zero_one)).all() and torch.isfinite(log1m(zero_one)).all()
    assert safe_log(zero_one)[0].item() == pytest.approx(math.log(PROB_FLOOR))
    assert log1m(zero_one)[1].item() == pytest.approx(math.log(PROB_FLOOR))


def test_saturated_logits_give_finite_losses_and_gradients(device: torch.device, dtype: torch.dtype) -> None:
    # Class 0 wins everywhere by 2e4: S -> 1 for the untagged class 0, S -> 0 for the tagged classes 1 and 2.
    base = torch.tensor([1e4, -1e4, -1e4], device=device, dtype=dtype).view(1, 3, 1, 1).expand(2, 3, 3, 3)
    logits = base.clone().requires_grad_()
    tags = torch.tensor([[False, True, True], [True, True, True]], device=device)
    masks = torch.ones(2, 3, 3, 3, dtype=torch.bool, device=device)
    crf = torch.full((2, 3, 3, 3), 1 / 3, device=device, dtype=dtype)
    for loss in (tag_loss(logits, tags), heatmap_loss(logits, masks, tags), crf_kl_loss(logits, crf)):
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss), loss
        assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("name", ["lse_pool", "tag_loss", "heatmap_loss", "crf_kl_loss"])
def test_gradients_match_finite_differences(name: str, device: torch.device) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 2, 3, dtype=torch.float64, generator=generator).to(device).requires_grad_()
    tags = torch.tensor([[True, False, True], [False, True, False]], device=device)
    masks = torch.rand(2, 3, 1, 2, generator=generator).to(device) > 0.3
    crf = torch.rand(2, 3, 2, 3, dtype=torch.float64, generator=generator).to(device).softmax(dim=1)
    functions = {
        "lse_pool": lambda x: lse_pool(x.sigmoid()),
        "tag_loss": lambda x: tag_loss(x, tags),
        "heatmap_loss": lambda x: heatmap_loss(x, masks, tags),
        "crf_kl_loss": lambda x: crf_kl_loss(x, crf),
    }
    assert torch.autograd.gradcheck(functions[name], (logits,))
