"""Fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun, NIPS 2011), mean-field inference in torch.

Energy: E(x) = sum_i -log P_i(x_i) + sum_{i<j} [x_i != x_j] (w1 k_appearance(f_i, f_j) + w2 k_smoothness(f_i, f_j)),
with the appearance (bilateral) kernel exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2) and
the smoothness kernel exp(-|p_i - p_j|^2 / 2 theta_gamma^2) (their Eq. 3), Potts compatibility.

As in the authors' released code (densecrf 2.x, which pydensecrf wraps and DeepLab and SEC call), each kernel is
normalised symmetrically, D^-1/2 K D^-1/2 with D the kernel's row sums including the pixel itself, so a
message is close to a weighted average of neighbouring marginals and w1, w2 mean the same at every resolution.

Two ways to apply the kernels, one mean-field loop:
- exact: the dense N x N kernel matrices, for score-map resolution (32 x 16 = 512 pixels) inside the training loss;
- lattice: the permutohedral lattice of Adams, Baek & Davis (Eurographics 2010), the approximation Krähenbühl &
  Koltun use, for image resolution (512 x 256 x 19 classes: about 0.5 s on two CPU cores); O(N d^2), not O(N^2).
  It reproduces densecrf's marginals to float32 rounding.

Two users: training's CRF loss (paper 3.2.1, on the score map) and the paper's test-time refinement of the network's
output (paper 4.2, "we further applied a dense CRF"), which `Segmenter` runs when `crf_iterations` > 0. Plain torch,
so it runs wherever the network's output already is, CPU or CUDA.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

UNARY_FLOOR = 1e-6
"""Smallest probability the unary -log P sees: a probability of 0 would be an infinite unary, which no pairwise
message could overrule. Training's losses floor their logarithms at it too (`PROB_FLOOR`)."""

EXACT_MAX_PIXELS = 1024
"""Largest H * W for which `dense_crf` picks the exact path by default; beyond it the lattice is faster on CPU."""

Filter = Callable[[Tensor], Tensor]
"""(B, N, C) values -> (B, N, C) values filtered by one Gaussian kernel over the N pixels."""


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters; the defaults are Krähenbühl & Koltun's released example (densecrf `dense_inference`,
    pydensecrf's README: bilateral sxy=80, srgb=13, compat=10; Gaussian sxy=3, compat=3), which SEC's
    constrain-to-boundary loss, followed by the paper, also uses.

    Attributes:
        appearance_weight: w1 of the bilateral (position + colour) kernel.
        theta_alpha: its spatial standard deviation, in pixels of the full-resolution image.
        theta_beta: its colour standard deviation, in 0..255 intensity units.
        smoothness_weight: w2 of the position-only kernel.
        theta_gamma: its spatial standard deviation, in pixels of the full-resolution image.
    """

    appearance_weight: float = 10.0
    theta_alpha: float = 80.0
    theta_beta: float = 13.0
    smoothness_weight: float = 3.0
    theta_gamma: float = 3.0

    def __post_init__(self) -> None:
        for name in ("appearance_weight", "smoothness_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CRFParams.{name}={getattr(self, name)} must be >= 0 (0 switches the kernel off)")
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CRFParams.{name}={getattr(self, name)} must be > 0 (a standard deviation)")


def check_finite(name: str, x: Tensor) -> None:
    """Raise ValueError if `x` holds a NaN or an infinity; the CRF would spread it to every pixel."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} contains NaN or inf; check the network output (e.g. a diverged loss) before running the CRF"
        )


def dense_crf(
    probs: Tensor,
    image: Tensor,
    *,
    params: CRFParams = CRFParams(),
    iterations: int = 5,
    scale: float = 1.0,
    exact: bool | None = None,
) -> Tensor:
    """Mean-field marginals of a fully connected CRF whose unaries are -log(probs).

    Runs without autograd: the output is a target of training's CRF loss or a refined prediction, not part of a graph.

    Args:
        probs: (B, C, H, W) class probabilities per pixel (a softmax); floored at `UNARY_FLOOR`
            for the log.
        image: (B, 3, H, W) colour image at the same H, W, uint8 or float in the 0..255 range.
        params: kernel weights and widths; spatial widths are in full-resolution pixels.
        iterations: mean-field updates, >= 1 (densecrf's example uses 5).
        scale: CRF-grid pixels per full-resolution pixel, multiplying theta_alpha and theta_gamma; e.g. 32 / 512
            when the CRF runs on the 32 x 16 score map of a 512 x 256 frame.
        exact: True for the dense N x N kernels, False for the permutohedral lattice; None picks exact when
            H * W <= EXACT_MAX_PIXELS.

    Returns:
        (B, C, H, W) marginals Q, summing to 1 over C, in probs' dtype (computed in at least float32).

    Raises:
        ValueError: for mismatched shapes, non-finite inputs, iterations < 1 or scale <= 0.
    """
    if probs.ndim != 4 or image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(
            f"expected probs (B, C, H, W) and image (B, 3, H, W), got {tuple(probs.shape)} and {tuple(image.shape)}"
        )
    if image.shape[0] != probs.shape[0] or image.shape[2:] != probs.shape[2:]:
        raise ValueError(
            f"image {tuple(image.shape)} and probs {tuple(probs.shape)} differ in batch or size; resize the image "
            "to the probabilities' H x W and pass scale=H_crf / H_image"
        )
    if iterations < 1:
        raise ValueError(f"iterations={iterations} must be >= 1")
    if not scale > 0:
        raise ValueError(f"scale={scale} must be > 0 (CRF-grid pixels per full-resolution pixel)")
    check_finite("probs", probs)
    check_finite("image", image)

    batch, classes, height, width = probs.shape
    dtype = torch.promote_types(probs.dtype, torch.float32)
    if exact is None:
        exact = height * width <= EXACT_MAX_PIXELS
    build = _exact_filter if exact else _lattice_filter
    with torch.no_grad():
        colour = image.to(dtype).flatten(2).transpose(1, 2) / params.theta_beta  # (B, N, 3)
        position = _pixel_positions(batch, height, width, dtype, probs.device)  # (B, N, 2)
        kernels: list[tuple[float, Filter]] = []
        if params.appearance_weight > 0:
            features = torch.cat([position / (params.theta_alpha * scale), colour], dim=2)
            kernels.append((params.appearance_weight, _normalized(build(features), features)))
        if params.smoothness_weight > 0:
            smoothness = _smoothness_filter(
                batch, height, width, params.theta_gamma * scale, dtype, probs.device, exact
            )
            kernels.append((params.smoothness_weight, smoothness))
        log_unary = probs.to(dtype).clamp_min(UNARY_FLOOR).log().flatten(2).transpose(1, 2)  # -U, (B, N, C)
        q = log_unary.softmax(dim=2)
        for _ in range(iterations):  # mean field, K&K Algorithm 1
            # Potts: the penalty sum_j k_ij (1 - Q_j(l)) equals -sum_j k_ij Q_j(l) up to a per-pixel constant.
            message = sum(weight * apply(q) for weight, apply in kernels)
            q = (log_unary + message).softmax(dim=2)
    return q.transpose(1, 2).reshape(batch, classes, height, width).to(probs.dtype)


@functools.lru_cache(maxsize=8)
def _smoothness_filter(
    batch: int, height: int, width: int, theta: float, dtype: torch.dtype, device: torch.device, exact: bool
) -> Filter:
    """The normalised position-only kernel. It depends on the grid alone, not the image, so it is built once per
    size and kept: a camera's frames all share it, and at 256x128 its lattice is a fifth of a CPU CRF's time."""
    features = _pixel_positions(batch, height, width, dtype, device) / theta
    return _normalized((_exact_filter if exact else _lattice_filter)(features), features)


def _pixel_positions(batch: int, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(B, H * W, 2) pixel coordinates (x, y), row-major like `flatten`."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([x.flatten(), y.flatten()], dim=1).expand(batch, -1, -1)


def _normalized(apply: Filter, features: Tensor) -> Filter:
    """D^-1/2 K D^-1/2 from K (densecrf's NORMALIZE_SYMMETRIC). D includes the pixel's own weight, so it is > 0."""
    norm = apply(features.new_ones(*features.shape[:2], 1)).rsqrt()  # (B, N, 1)

    def filtered(values: Tensor) -> Tensor:
        return norm * apply(norm * values)

    return filtered


def _exact_filter(features: Tensor) -> Filter:
    """Gaussian kernel exp(-|f_i - f_j|^2 / 2) as a dense (B, N, N) matrix over (B, N, d) features."""
    distance = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist")
    kernel = torch.exp(-0.5 * distance.square())
    return lambda values: torch.bmm(kernel, values)


def _lattice_filter(features: Tensor) -> Filter:
    """The same Gaussian kernel, approximated on a permutohedral lattice (Adams et al. 2010), over (B, N, d)."""
    return _Permutohedral(features).filter


class _Permutohedral:
    """Permutohedral lattice over (B, N, d) features; `filter` splats, blurs along the d + 1 lattice axes, slices.

    Follows densecrf's `Permutohedral::init` / `seqCompute`, vectorised: the hash table becomes `torch.unique` over
    integer codes of the lattice keys, neighbour look-ups become `searchsorted`. Images of a batch never share a
    vertex (the batch index is the most significant digit of the code). Its overall gain (densecrf's "alpha") is
    left out: the symmetric normalisation cancels it.
    """

    def __init__(self, features: Tensor) -> None:
        batch, n_points, d = features.shape
        d1 = d + 1
        device, dtype = features.device, features.dtype
        f = features.reshape(batch * n_points, d)
        n = f.shape[0]

        # Elevate onto the plane sum(x) = 0 of R^(d+1), scaled so the blur below has unit standard deviation.
        axis = torch.arange(d, device=device, dtype=dtype)
        cf = f * (math.sqrt(2.0 / 3.0) * d1 / torch.sqrt((axis + 1) * (axis + 2)))
        suffix = torch.cat([cf.flip(1).cumsum(1).flip(1), cf.new_zeros(n, 1)], dim=1)  # suffix[:, k] = sum cf[k:]
        elevated = suffix - torch.cat([cf.new_zeros(n, 1), (axis + 1) * cf], dim=1)

        # The nearest remainder-0 lattice point, then the simplex around the feature: the ranks of its coordinates.
        up = torch.ceil(elevated / d1) * d1
        down = torch.floor(elevated / d1) * d1
        rem0 = torch.where(up - elevated < elevated - down, up, down)
        rem0_sum = torch.round(rem0.sum(1) / d1).long()
        delta = elevated - rem0
        axis1 = torch.arange(d1, device=device)
        later = axis1[None, :] > axis1[:, None]  # [i, j]: j comes after i
        earlier = axis1[None, :] < axis1[:, None]
        rank = (delta[:, None, :] > delta[:, :, None]).logical_and(later).sum(2)  # ties go to the earlier axis
        rank += (delta[:, None, :] >= delta[:, :, None]).logical_and(earlier).sum(2)
        rank += rem0_sum[:, None]
        wrap = (rank < 0).long() - (rank > d).long()  # back onto the plane when rounding left it
        rank += d1 * wrap
        rem0 = rem0 + d1 * wrap

        # Barycentric weights of the d + 1 simplex vertices (Adams et al. 2010, p. 10).
        share = (elevated - rem0) / d1
        barycentric = share.new_zeros(n, d + 2)
        barycentric.scatter_add_(1, d - rank, share)
        barycentric.scatter_add_(1, d - rank + 1, -share)
        barycentric[:, 0] += 1.0 + barycentric[:, d1]

        # Vertex keys: remainder-0 point plus the canonical simplex, permuted by rank; the last coordinate is implied.
        remainder = axis1[:, None]
        canonical = torch.where(axis1[None, :] <= d - remainder, remainder, remainder - d1)  # [r, rank]
        keys = rem0[:, None, :d].round().long() + canonical[axis1[None, :, None], rank[:, None, :d]]  # (P, d1, d)

        # Integer codes in a mixed radix with a margin of d + 1 per axis, so every blur neighbour is encodable.
        low = keys.amin(dim=(0, 1)) - d1
        spans = [int(s) for s in (keys.amax(dim=(0, 1)) - low + d1 + 1).tolist()]
        strides = [math.prod(spans[:k]) for k in range(d)]
        volume = math.prod(spans)
        if volume * batch >= 2**62:
            raise ValueError(
                f"the lattice for these features spans {volume * batch} cells, beyond int64; the spatial thetas are "
                "too small for the image size (check `scale`), or use the exact path for small images"
            )
        stride = torch.tensor(strides, device=device)
        image_index = torch.arange(batch, device=device).repeat_interleave(n_points)
        codes = ((keys - low) * stride).sum(2) + (image_index * volume)[:, None]
        vertex_codes, offsets = torch.unique(codes.flatten(), sorted=True, return_inverse=True)
        n_vertices = vertex_codes.numel()

        # Blur neighbours along each lattice axis j: key - 1 with key[j] + d + 1, and its mirror; missing -> M.
        self.neighbours: list[Tensor] = []
        for j in range(d1):
            step = -sum(strides) + (d1 * strides[j] if j < d else 0)
            for target in (vertex_codes + step, vertex_codes - step):
                pos = torch.searchsorted(vertex_codes, target).clamp_max(n_vertices - 1)
                self.neighbours.append(torch.where(vertex_codes[pos] == target, pos, n_vertices))

        # Splatting and slicing as sparse (CSR) matrices: several times faster on CPU than index_add_ and gather.
        vertex = offsets.flatten()
        weight = barycentric[:, :d1].flatten()
        by_vertex = torch.argsort(vertex, stable=True)
        counts = torch.bincount(vertex, minlength=n_vertices)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
            self.splat = torch.sparse_csr_tensor(
                torch.cat([counts.new_zeros(1), counts.cumsum(0)]),
                torch.div(by_vertex, d1, rounding_mode="floor"),
                weight[by_vertex],
                (n_vertices, n),
                check_invariants=False,
            )
            self.slice = torch.sparse_csr_tensor(
                torch.arange(0, n * d1 + 1, d1, device=device),
                vertex,
                weight,
                (n, n_vertices),
                check_invariants=False,
            )
        self.shape = (batch, n_points)

    def filter(self, values: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, C), values filtered by the lattice's Gaussian."""
        channels = values.shape[2]
        grid = self.splat @ values.reshape(-1, channels)
        zero_row = grid.new_zeros(1, channels)  # stands for missing neighbours (index M)
        for before, after in zip(self.neighbours[::2], self.neighbours[1::2], strict=True):
            padded = torch.cat([grid, zero_row])
            grid = grid + 0.5 * (padded[before] + padded[after])
        return (self.slice @ grid).view(*self.shape, channels)
