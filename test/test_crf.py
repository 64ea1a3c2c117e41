"""Dense CRF: marginals, edge snapping, smoothing, both kernel paths, and agreement with the reference code."""

from __future__ import annotations

import pytest
import torch

from wsvs_ros import crf as crf_module
from wsvs_ros.crf import CRFParams, dense_crf

PATHS = pytest.mark.parametrize("exact", [True, False], ids=["exact", "lattice"])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def two_class(p1: torch.Tensor) -> torch.Tensor:
    """(H, W) probability of class 1 -> (1, 2, H, W) probabilities."""
    return torch.stack([1 - p1, p1])[None]


def step_image(height: int, width: int, edge: int, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W) uint8: dark grey left of column `edge`, bright yellow from it on."""
    image = torch.empty(1, 3, height, width, dtype=torch.uint8, device=device)
    image[..., :edge] = torch.tensor([40, 40, 40], dtype=torch.uint8, device=device).view(3, 1, 1)
    image[..., edge:] = torch.tensor([230, 210, 30], dtype=torch.uint8, device=device).view(3, 1, 1)
    return image


@PATHS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_output_is_a_distribution_per_pixel_in_the_input_dtype(
    exact: bool, dtype: torch.dtype, device: torch.device
) -> None:
    probs = torch.rand(2, 4, 12, 16, dtype=dtype, device=device).softmax(dim=1)
    image = torch.randint(0, 256, (2, 3, 12, 16), device=device).to(dtype)
    q = dense_crf(probs, image, exact=exact)
    assert q.shape == probs.shape and q.dtype == dtype
    assert bool((q >= 0).all())
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2, 12, 16, dtype=dtype, device=device))


@PATHS
@pytest.mark.parametrize("edge", [11, 20])
def test_blurry_boundary_snaps_to_the_image_edge(exact: bool, edge: int, device: torch.device) -> None:
    # A soft ramp whose 50 % point is at column 15.5, on an image whose colour steps at column `edge`.
    height, width = 8, 32
    columns = torch.arange(width, dtype=torch.float32, device=device)
    probs = two_class(torch.sigmoid((columns - 15.5) / 3).expand(height, width))
    assert (probs.argmax(dim=1)[0, 0] == 1).nonzero().min().item() == 16  # the unary alone says 16
    q = dense_crf(probs, step_image(height, width, edge, device), exact=exact)
    first_class1 = (q.argmax(dim=1)[0] == 1).int().argmax(dim=1)  # per row
    assert bool(((first_class1 - edge).abs() <= 1).all()), first_class1.tolist()


@PATHS
def test_constant_image_keeps_a_constant_unarys_decision(exact: bool, device: torch.device) -> None:
    probs = torch.tensor([0.2, 0.5, 0.3], device=device).view(1, 3, 1, 1).expand(1, 3, 10, 14)
    image = torch.full((1, 3, 10, 14), 128.0, device=device)
    q = dense_crf(probs, image, exact=exact)
    assert bool((q.argmax(dim=1) == 1).all())


@PATHS
def test_smoothness_kernel_alone_removes_an_isolated_noisy_pixel(exact: bool, device: torch.device) -> None:
    p1 = torch.full((12, 12), 0.2, device=device)
    p1[5, 6] = 0.8
    image = torch.randint(0, 256, (1, 3, 12, 12), device=device)  # colour gives no help: appearance is off
    q = dense_crf(two_class(p1), image, params=CRFParams(appearance_weight=0.0), exact=exact)
    assert bool((q.argmax(dim=1) == 0).all())


@PATHS
def test_scale_shrinks_the_spatial_kernels_to_the_crf_grid(exact: bool, device: torch.device) -> None:
    # At scale 0.002, theta_gamma = 0.006 px and theta_alpha = 0.16 px: neighbours do not interact, the pixel stays.
    p1 = torch.full((12, 12), 0.2, device=device)
    p1[5, 6] = 0.8
    image = torch.full((1, 3, 12, 12), 128, dtype=torch.uint8, device=device)
    assert bool((dense_crf(two_class(p1), image, exact=exact).argmax(dim=1) == 0).all())
    assert dense_crf(two_class(p1), image, scale=0.002, exact=exact).argmax(dim=1)[0, 5, 6].item() == 1


def test_the_kept_smoothness_kernel_follows_size_scale_and_path(device: torch.device) -> None:
    # The position-only kernel is built once per grid and kept; a new size, scale or path must not reuse a stale one.
    calls = [((10, 14), 1.0, True), ((12, 9), 1.0, True), ((10, 14), 0.1, True), ((10, 14), 1.0, False)] * 2
    inputs = {hw: (torch.rand(1, 3, *hw, device=device).softmax(1), torch.rand(1, 3, *hw, device=device) * 255)
              for hw, _, _ in calls}  # fmt: skip
    smoothness_only = CRFParams(appearance_weight=0.0)
    for hw, scale, exact in calls:
        probs, image = inputs[hw]
        kept = dense_crf(probs, image, params=smoothness_only, scale=scale, exact=exact)
        crf_module._smoothness_filter.cache_clear()
        fresh = dense_crf(probs, image, params=smoothness_only, scale=scale, exact=exact)
        torch.testing.assert_close(kept, fresh)


def test_exact_and_lattice_paths_agree_at_a_small_size(device: torch.device) -> None:
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(24), indexing="ij")
    image = torch.stack([(cols // 8) * 100.0, (rows // 8) * 120.0 + 20, 3.0 * cols]).to(device)[None]
    labels = ((cols // 8) + 3 * (rows // 8)) % 4
    clean = torch.nn.functional.one_hot(labels, 4).permute(2, 0, 1)[None].float().to(device)
    probs = (clean + 0.8 * torch.rand(1, 4, 16, 24, device=device)).softmax(dim=1)  # noisy unary
    params = CRFParams()
    exact = dense_crf(probs, image, params=params, scale=0.1, exact=True)
    lattice = dense_crf(probs, image, params=params, scale=0.1, exact=False)
    assert (exact.argmax(dim=1) == lattice.argmax(dim=1)).float().mean().item() >= 0.97
    assert (exact - lattice).abs().mean().item() < 0.02


# pydensecrf2 1.1 (Krähenbühl's densecrf 2.x) on the inputs of the test below: DenseCRF2D(8, 4, 3),
# setUnaryEnergy(-log(max(probs, 1e-6))), addPairwiseGaussian(sxy=0.3, compat=1),
# addPairwiseBilateral(sxy=8, srgb=13, rgbim=image, compat=2), inference(5).
DENSECRF_Q = [
    [
        [0.9884, 0.9766, 0.9462, 0.8566, 0.5058, 0.0080, 0.0026, 0.0009],
        [0.9851, 0.9742, 0.9487, 0.8765, 0.6190, 0.0128, 0.0040, 0.0014],
        [0.9693, 0.9436, 0.8817, 0.6851, 0.3584, 0.0438, 0.0175, 0.0068],
        [0.9589, 0.9262, 0.8374, 0.5487, 0.2682, 0.0353, 0.0198, 0.0105],
    ],
    [
        [0.0032, 0.0091, 0.0281, 0.0949, 0.4043, 0.9785, 0.9903, 0.9948],
        [0.0021, 0.0056, 0.0165, 0.0551, 0.2298, 0.9577, 0.9809, 0.9896],
        [0.0015, 0.0041, 0.0119, 0.0394, 0.1011, 0.4391, 0.6921, 0.8431],
        [0.0009, 0.0023, 0.0070, 0.0219, 0.0454, 0.1595, 0.3044, 0.5549],
    ],
    [
        [0.0084, 0.0142, 0.0256, 0.0485, 0.0899, 0.0135, 0.0072, 0.0042],
        [0.0128, 0.0201, 0.0348, 0.0684, 0.1512, 0.0295, 0.0151, 0.0090],
        [0.0291, 0.0523, 0.1064, 0.2755, 0.5405, 0.5171, 0.2904, 0.1501],
        [0.0402, 0.0715, 0.1556, 0.4294, 0.6863, 0.8052, 0.6758, 0.4346],
    ],
]


def test_lattice_path_reproduces_the_reference_densecrf(device: torch.device) -> None:
    y, x = torch.meshgrid(torch.arange(4.0), torch.arange(8.0), indexing="ij")
    image = torch.stack(
        [torch.where(x < 5, 40, 200) + 10 * y, torch.where(x < 5, 90, 60) + 5 * x, torch.where(y < 2, 120, 30)]
    )
    logits = torch.stack([-(x - 2) / 2, (x - 4) / 2 - 0.5 * y, 0.3 * y - 1])
    probs = logits.softmax(dim=0)[None].to(device)
    q = dense_crf(
        probs,
        image[None].to(device, torch.uint8),
        params=CRFParams(appearance_weight=2.0, smoothness_weight=1.0),
        scale=0.1,
        exact=False,
    )
    torch.testing.assert_close(q[0], torch.tensor(DENSECRF_Q, device=device), rtol=0, atol=2e-4)


def test_images_of_a_batch_do_not_interact(device: torch.device) -> None:
    probs = torch.rand(3, 2, 10, 12, device=device).softmax(dim=1)
    image = torch.randint(0, 256, (3, 3, 10, 12), dtype=torch.uint8, device=device)
    image[1] = image[0]  # identical colours and positions in two images: a shared lattice would mix them
    for exact in (True, False):
        batched = dense_crf(probs, image, exact=exact)
        singles = torch.cat([dense_crf(probs[i : i + 1], image[i : i + 1], exact=exact) for i in range(3)])
        torch.testing.assert_close(batched, singles, rtol=0, atol=1e-4)


def test_uint8_and_float_images_give_the_same_marginals(device: torch.device) -> None:
    probs = torch.rand(1, 3, 8, 8, device=device).softmax(dim=1)
    image = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8, device=device)
    torch.testing.assert_close(dense_crf(probs, image), dense_crf(probs, image.float()))


def test_default_path_is_exact_for_score_maps_and_lattice_for_images(device: torch.device) -> None:
    small = torch.rand(1, 2, 16, 32, device=device).softmax(dim=1), torch.rand(1, 3, 16, 32, device=device) * 255
    torch.testing.assert_close(dense_crf(*small), dense_crf(*small, exact=True))
    large = torch.rand(1, 2, 40, 40, device=device).softmax(dim=1), torch.rand(1, 3, 40, 40, device=device) * 255
    torch.testing.assert_close(dense_crf(*large), dense_crf(*large, exact=False))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused(bad: float) -> None:
    probs = torch.full((1, 2, 4, 4), 0.5)
    image = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="probs contains NaN or inf"):
        dense_crf(probs.index_put((torch.tensor([0]),) * 4, torch.tensor(bad)), image)
    with pytest.raises(ValueError, match="image contains NaN or inf"):
        dense_crf(probs, image.index_put((torch.tensor([0]),) * 4, torch.tensor(bad)))


def test_image_of_another_size_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="pass scale="):
        dense_crf(torch.full((1, 2, 4, 4), 0.5), torch.zeros(1, 3, 8, 8))


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="theta_beta"):
        CRFParams(theta_beta=0.0)
    with pytest.raises(ValueError, match="appearance_weight"):
        CRFParams(appearance_weight=-1.0)
    with pytest.raises(ValueError, match="iterations=0"):
        dense_crf(torch.full((1, 2, 4, 4), 0.5), torch.zeros(1, 3, 4, 4), iterations=0)
