"""`TorchFlow`: dense TV-L1 optical flow in pure PyTorch, batched, the same code on CPU and CUDA.

The method is the duality-based TV-L1 of Zach, Pock & Bischof (DAGM 2007) as laid out in Algorithm 1 of Sánchez,
Meinhardt-Llopis & Facciolo, "TV-L1 optical flow estimation" (IPOL 2013), with two improvements of Wedel et al.
("An improved algorithm for TV-L1 optical flow", 2009): a structure-texture decomposition of the images and a median
filter on the flow after each warp. It minimises

    E(u) = sum_x |∇u_1(x)| + |∇u_2(x)| + λ |I1(x + u(x)) - I0(x)|

coarse to fine on an image pyramid, linearising I1 around the current flow at each warp and relaxing the problem with
an auxiliary flow v coupled to u by |u - v|^2 / (2θ). Each iteration alternates three closed-form steps:
    data step   v = u - ∇I1 * clamp(ρ(u) / |∇I1|^2, -λθ, λθ)        (pointwise thresholding)
    primal step u = v + θ div p
    dual step   p = (p + τ/θ ∇u) / (1 + τ/θ |∇u|)                    (Chambolle's projection, per flow component)
where ρ(u) = I1(x + u0) + ∇I1 · (u - u0) - I0 is the linearised residual around the warp's flow u0.

Everything runs a fixed number of iterations and never reads a tensor value on the host (no `.item()`, no
data-dependent Python branches), so one call can be captured in a CUDA graph and replayed. The cost is in the number
of small kernels rather than in arithmetic: with the defaults a 512x256 flow launches about 9,000 of them, which took
18 ms replayed as a CUDA graph on an H100 (26 ms at 1024x512) and about 170 ms launched eagerly; one CPU core takes
about 0.25 s at 512x256.

`TorchFlow(compile=True)` runs each warp (linearisation, iterations, median filter) as one graph compiled by
`torch.compile`, which fuses each iteration's 16 element-wise ops into about four loops (CPU) or kernels (CUDA);
the pyramid between the warps stays eager. On a CPU it is no faster than eager (docs/benchmarks.md); it is meant
for CUDA, where each eager op is a kernel launch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from wsvs_ros.flow.warp import backward_warp, inside_mask

WarpStep = Callable[..., tuple[torch.Tensor, torch.Tensor]]

log = logging.getLogger(__name__)

# ITU-R BT.601 luma weights, the ones OpenCV's RGB2GRAY uses, so both backends see the same grey image.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Squared image gradients below this (in (grey levels / pixel)^2) carry no usable motion information; the floor
# keeps the data step finite where the image is flat or the sample fell outside.
_GRADIENT_FLOOR = 1e-6

# Share of the smooth "structure" removed from each pyramid level before matching (Wedel et al. use 0.95 with an ROF
# structure image; here the structure is a Gaussian blur). Removing it makes the data term insensitive to exposure
# and shading changes between frames, which plain brightness constancy is not.
_STRUCTURE_WEIGHT = 0.95


class TorchFlow:
    """Dense optical flow prev -> cur, TV-L1 on a coarse-to-fine pyramid of structure-texture decomposed images.

    The defaults were chosen on 512x256 Cityscapes frames warped by known motions (translation, zoom, rotation,
    driving-like ground-plane flow up to ~20 px, with noise and a 2 % exposure change): mean endpoint error about
    0.2 px where OpenCV's Farnebäck gives 1-4 px and DIS "medium" about 0.2 px. Each halving of `iterations` or
    `warps` roughly halves the time; coarser pyramids (a smaller `scale_factor` or a larger `min_size`) lose large
    motions first.

    Args:
        scale_factor: size ratio between pyramid levels, in (0, 1). 0.7 needs more levels than the classic 0.5 but
            hands each level a better start, which matters with a fixed iteration budget.
        min_size: pixels; the pyramid stops before the shorter image side drops below this. A level resolves
            motions of a few of its own pixels, so the coarsest level bounds the largest motion found.
        warps: linearisations of the data term per pyramid level.
        iterations: primal-dual iterations per warp.
        lam: λ, weight of the data term against total variation (grey levels 0..255). Higher follows the image
            more closely, lower gives smoother flow.
        tau: τ, the dual step size; the scheme converges for tau <= 1/4.
        theta: θ, the coupling between the flow u and its auxiliary v; it also bounds the data step per iteration
            to λθ |∇I1|, so very small values converge slowly.
        median_filter: apply a 3x3 median to the flow after each warp, removing outliers (Wedel et al.).
        texture_sigma: level pixels; the standard deviation of the Gaussian whose output (the structure) is mostly
            subtracted from each level before matching. 0 matches raw brightness.
        compile: run each warp (linearisation, iterations, median) as code fused by `torch.compile` (inductor: C++
            loops on a CPU, Triton kernels on CUDA) instead of op by op. How the flow runs, not what it computes, so
            it is not among `params`. The graph is built on the first call (minutes on a small CPU), with dynamic
            shapes so every pyramid level and camera size shares it; `compilations` counts the graphs built and
            `compile_seconds` their time. Where compilation fails (no C++ compiler, a PyTorch without Triton such
            as some Jetson builds) the flow logs why once, sets `compile_error` and runs eagerly.
    Raises:
        ValueError: if a parameter is out of range (the message names it).
    """

    def __init__(
        self,
        *,
        scale_factor: float = 0.7,
        min_size: int = 16,
        warps: int = 5,
        iterations: int = 10,
        lam: float = 0.4,
        tau: float = 0.25,
        theta: float = 0.6,
        median_filter: bool = True,
        texture_sigma: float = 3.0,
        compile: bool = False,
    ) -> None:
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor!r}")
        value: float  # the int arguments, then the float ones
        for name, value in (("min_size", min_size), ("warps", warps), ("iterations", iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("lam", lam), ("theta", theta)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if not 0.0 < tau <= 0.25:
            raise ValueError(f"tau must be in (0, 0.25] for the dual iteration to converge, got {tau!r}")
        if not texture_sigma >= 0:
            raise ValueError(
                f"texture_sigma must be >= 0 pixels (0 turns the decomposition off), got {texture_sigma!r}"
            )
        self.scale_factor = float(scale_factor)
        self.min_size = min_size
        self.warps = warps
        self.iterations = iterations
        self.lam = float(lam)
        self.tau = float(tau)
        self.theta = float(theta)
        self.median_filter = bool(median_filter)
        self.texture_sigma = float(texture_sigma)
        self.compile = bool(compile)
        self.compilations = 0
        self.compile_seconds = 0.0
        self.compile_error: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-serialisable: `TorchFlow(**flow.params)` rebuilds it."""
        return {
            "scale_factor": self.scale_factor,
            "min_size": self.min_size,
            "warps": self.warps,
            "iterations": self.iterations,
            "lam": self.lam,
            "tau": self.tau,
            "theta": self.theta,
            "median_filter": self.median_filter,
            "texture_sigma": self.texture_sigma,
        }

    def __repr__(self) -> str:
        return f"TorchFlow({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    def pyramid_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(height, width) of each pyramid level, finest first."""
        sizes = [(height, width)]
        while True:
            h, w = sizes[-1]
            h, w = round(h * self.scale_factor), round(w * self.scale_factor)
            if min(h, w) < self.min_size:
                return sizes
            sizes.append((h, w))

    @torch.no_grad()
    def __call__(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Flow from `prev` to `cur`: prev(y, x) ≈ cur(y + flow_y, x + flow_x).

        Args:
            prev, cur: (B, 3, H, W) RGB, values 0..255, floating point, on the same device. float16 inputs are
                computed in float32 (squared gradients of 0..255 images overflow float16), float64 in float64.
        Returns:
            (B, 2, H, W) float32 flow in pixels (channel 0 = x, 1 = y), on the inputs' device.
        Raises:
            ValueError: if the inputs are not matching (B, 3, H, W) floating-point tensors on one device.
        """
        check_frame_pair(prev, cur)
        if prev.device.type == "cpu":
            with _one_cpu_thread():
                return self._flow(prev, cur)
        return self._flow(prev, cur)

    def _flow(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        if not self.compile or self.compile_error is not None:
            return self._pyramid(prev, cur, tvl1_warp)
        if prev.device.type == "cuda" and not _has_triton():
            self._fall_back("this PyTorch has no Triton to compile CUDA kernels with (e.g. a Jetson build)")
            return self._pyramid(prev, cur, tvl1_warp)
        built, start = _built, time.perf_counter()
        try:
            step = _compiled_warp()
        except RuntimeError as e:  # torch.compile refuses outright, e.g. on a Python version dynamo does not support
            self._fall_back(f"{type(e).__name__}: {e}")
            return self._pyramid(prev, cur, tvl1_warp)
        try:
            flow = self._pyramid(prev, cur, step)
        except torch._dynamo.exc.TorchDynamoException as e:  # the compiler's failures, not the flow's
            cause = getattr(e, "inner_exception", None) or e  # a backend failure wraps the compiler's error
            self._fall_back(f"{type(cause).__name__}: {next(iter(str(cause).strip().splitlines()), '')}")
            return self._pyramid(prev, cur, tvl1_warp)
        if new := _built - built:
            seconds = time.perf_counter() - start  # the first call's time is all but the compilation's
            first = self.compilations == 0
            self.compilations += new
            self.compile_seconds += seconds
            (log.info if first else log.warning)(
                "TorchFlow: %s the TV-L1 warp step for %s %s on %s in %.1f s (%d graph(s) so far)",
                "compiled" if first else "recompiled", "x".join(map(str, prev.shape)), prev.dtype, prev.device,
                seconds, self.compilations,
            )  # fmt: skip
        return flow

    def _fall_back(self, reason: str) -> None:
        self.compile_error = reason
        log.warning("TorchFlow: torch.compile unavailable, running eagerly: %s", reason)

    def _pyramid(self, prev: torch.Tensor, cur: torch.Tensor, warp_step: WarpStep) -> torch.Tensor:
        dtype = torch.float64 if prev.dtype == torch.float64 else torch.float32
        # Both frames go through the pyramid together as the two channels of one (B, 2, H, W) tensor.
        grey = torch.cat((luminance(prev.to(dtype)), luminance(cur.to(dtype))), dim=1)
        sizes = self.pyramid_sizes(*prev.shape[-2:])
        flow = grey.new_zeros((grey.shape[0], 2, *sizes[-1]))
        for size in reversed(sizes):
            level = grey if size == sizes[0] else _resize(grey, size)
            if self.texture_sigma > 0:
                level = level - _STRUCTURE_WEIGHT * _gaussian_blur(level, self.texture_sigma)
            if flow.shape[-2:] != size:
                flow = _upsample_flow(flow, size)
            flow = tvl1_level(
                level[:, :1],
                level[:, 1:],
                flow,
                warps=self.warps,
                iterations=self.iterations,
                lam=self.lam,
                tau=self.tau,
                theta=self.theta,
                median_filter=self.median_filter,
                warp_step=warp_step,
            )
        return flow.float()


def tvl1_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    flow: torch.Tensor,
    *,
    warps: int,
    iterations: int,
    lam: float,
    tau: float,
    theta: float,
    median_filter: bool,
    warp_step: WarpStep | None = None,
) -> torch.Tensor:
    """Refine a flow on one pyramid level: `warps` linearisations, `iterations` primal-dual steps each.

    See `TorchFlow` for the meaning of the keyword arguments.

    Args:
        i0, i1: (B, 1, h, w) grey (or texture) images of this level.
        flow: (B, 2, h, w) initial flow i0 -> i1 in this level's pixels.
        warp_step: runs one warp; `tvl1_warp` (the default) or a compiled version of it.
    Returns:
        (B, 2, h, w) refined flow.
    """
    step = tvl1_warp if warp_step is None else warp_step
    b, _, h, w = flow.shape
    # Dual variables p_1, p_2 of the two flow components, zero at the start of each level as in the IPOL
    # implementation; see `tvl1_warp` for the layout.
    dual = flow.new_zeros((b, 2, 2, h + 1, w + 1))
    i1_and_gradient = torch.cat((i1, _centered_gradient(i1)), dim=1)
    u = flow
    for _ in range(warps):
        u, dual = step(
            i0, i1_and_gradient, u, dual, iterations=iterations, lam=lam, tau=tau, theta=theta,
            median_filter=median_filter,
        )  # fmt: skip
    return u


def tvl1_warp(
    i0: torch.Tensor,
    i1_and_gradient: torch.Tensor,
    u: torch.Tensor,
    dual: torch.Tensor,
    *,
    iterations: int,
    lam: float,
    tau: float,
    theta: float,
    median_filter: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One warp of `tvl1_level`: linearise the data term around `u`, run `iterations` primal-dual steps, filter.

    Written for eager execution and CUDA-graph capture: the iterations update preallocated buffers in place, which
    launches the fewest kernels. `tvl1_warp_functional` is the same computation for `torch.compile`.

    Args:
        i0: (B, 1, h, w) first image of the level.
        i1_and_gradient: (B, 3, h, w) second image and its central-difference gradient (x, y).
        u: (B, 2, h, w) flow to linearise around.
        dual: (B, 2, 2, h + 1, w + 1) dual variables of the two flow components (x parts in [:, 0], y parts in
            [:, 1]) inside a buffer with one extra leading zero row and column, so that the backward differences of
            the divergence are plain differences of two views. Updated in place and returned.
    Returns:
        (u, dual) after the warp.
    """
    lt = lam * theta
    step = tau / theta
    p = dual[..., 1:, 1:]
    px, px_left = dual[:, 0, :, 1:, 1:], dual[:, 0, :, 1:, :-1]
    py, py_up = dual[:, 1, :, 1:, 1:], dual[:, 1, :, :-1, 1:]
    grad_u = u.new_zeros(p.shape)
    div_p = torch.empty_like(u)
    ones = torch.ones_like(u)
    grad, a, g = _linearise(i0, i1_and_gradient, u)
    for _ in range(iterations):
        # Data step (the three cases of the thresholding in one clamp).
        t = torch.addcmul(a, g[:, :1], u[:, :1]).addcmul_(g[:, 1:], u[:, 1:]).clamp_(-lt, lt)
        u = torch.addcmul(u, grad, t, value=-1.0)
        # Primal step, with the backward-difference divergence.
        torch.sub(px, px_left, out=div_p).add_(py).sub_(py_up)
        u.add_(div_p, alpha=theta)
        # Dual step.
        _forward_gradient(u, out=grad_u)
        norm = torch.mul(grad_u[:, 0], grad_u[:, 0]).addcmul_(grad_u[:, 1], grad_u[:, 1]).sqrt_()
        p.add_(grad_u, alpha=step).div_(torch.add(ones, norm, alpha=step).unsqueeze(1))
    if median_filter:
        u = _median3x3(u)
    return u, dual


def tvl1_warp_functional(
    i0: torch.Tensor,
    i1_and_gradient: torch.Tensor,
    u: torch.Tensor,
    dual: torch.Tensor,
    *,
    iterations: int,
    lam: float,
    tau: float,
    theta: float,
    median_filter: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`tvl1_warp` without in-place writes, the form `torch.compile` traces into one graph; same arguments.

    TorchDynamo cannot trace `out=` into a strided view, and inductor turns writes into views of the dual buffer
    into masked scatters that ran 3x slower than eager on a CPU; built from pads and new tensors, each iteration's
    16 ops fuse into about four loops (kernels on CUDA). Run eagerly this form is up to 2x slower than
    `tvl1_warp`, which is why both exist; test/test_flow_compile.py checks that they agree.
    """
    lt = lam * theta
    step = tau / theta
    p = dual[..., 1:, 1:]  # (B, 2, 2, h, w)
    grad, a, g = _linearise(i0, i1_and_gradient, u)
    for _ in range(iterations):
        t = (a + g[:, :1] * u[:, :1] + g[:, 1:] * u[:, 1:]).clamp(-lt, lt)
        u = u - grad * t
        # Zero-padding p in front gives the backward differences p(x) - p(x - 1) the zero boundary of the buffer.
        padded = F.pad(p, (1, 0, 1, 0))
        div_p = padded[:, 0, :, 1:, 1:] - padded[:, 0, :, 1:, :-1] + padded[:, 1, :, 1:, 1:] - padded[:, 1, :, :-1, 1:]
        u = u + theta * div_p
        # Forward differences, zero on the last column (x) and row (y) as in `_forward_gradient`. Zero padding
        # (a masked load) keeps inductor's loop vectorised; replicate padding made it a scalar gather.
        grad_u = torch.stack(
            (F.pad(u[..., 1:] - u[..., :-1], (0, 1)), F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))), dim=1
        )
        norm = (grad_u[:, 0] * grad_u[:, 0] + grad_u[:, 1] * grad_u[:, 1]).sqrt()
        p = (p + step * grad_u) / (1 + step * norm).unsqueeze(1)
    if median_filter:
        u = _median3x3(u)
    return u, F.pad(p, (1, 0, 1, 0))


def _linearise(
    i0: torch.Tensor, i1_and_gradient: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data term linearised around `u`: ∇I1(x + u), and a, g with ρ(u') / |∇I1|^2 = a + g·u'.

    Args: see `tvl1_warp`. Returns: grad (B, 2, h, w), a (B, 1, h, w), g (B, 2, h, w).
    """
    warped = backward_warp(i1_and_gradient, u)
    # Samples that left the image have no data term: the TV term fills the flow in from the neighbours.
    inside = inside_mask(u).to(u.dtype)
    grad = warped[:, 1:] * inside
    inv_grad_sq = (grad * grad).sum(dim=1, keepdim=True).clamp_min(_GRADIENT_FLOOR).reciprocal()
    a = (warped[:, :1] - i0 - (grad * u).sum(dim=1, keepdim=True)) * inside * inv_grad_sq
    return grad, a, grad * inv_grad_sq


_compiled: WarpStep | None = None
_built = 0


def _compiled_warp() -> WarpStep:
    """`tvl1_warp_functional` compiled once per process (every `TorchFlow` shares its graphs), sizes dynamic."""
    global _compiled
    if _compiled is None:

        def counting_inductor(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable[..., Any]:
            global _built
            _built += 1  # one call per graph built: the first compilation and every recompilation
            return torch._dynamo.lookup_backend("inductor")(gm, example_inputs)

        # mode="reduce-overhead" is not used: on CUDA `CudaGraphed` already replays the whole frame (flow and
        # encoding) as one graph; a compiled region's own graphs would nest inside that capture.
        _compiled = torch.compile(tvl1_warp_functional, fullgraph=True, backend=counting_inductor)
    compiled = _compiled

    def step(
        i0: torch.Tensor, i1_and_gradient: torch.Tensor, u: torch.Tensor, dual: torch.Tensor, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Height and width are symbols of the graph, so one graph serves the whole pyramid and any camera size: a
        # static graph per level would cost one compilation per level and pass dynamo's limit of 8 recompilations
        # at the second camera size. Only the sizes: dynamic=True would also make lam, tau and theta symbols, which
        # inductor specialises again, restarting the compilation.
        for x in (i0, i1_and_gradient, u, dual):
            torch._dynamo.maybe_mark_dynamic(x, [x.dim() - 2, x.dim() - 1])
        return compiled(i0, i1_and_gradient, u, dual, **kwargs)

    return step


def _has_triton() -> bool:
    from torch.utils._triton import has_triton

    return has_triton()


@contextlib.contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Run PyTorch CPU ops on one thread inside the block.

    The flow is thousands of small element-wise ops; splitting each across threads costs more than it saves, and
    when the cores are busy every op waits for a descheduled thread: at 512x256 on 2 loaded cores one flow took
    0.28 s with one thread and 16-28 s with two.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_frame_pair(prev: torch.Tensor, cur: torch.Tensor) -> None:
    """Raise one ValueError describing what is wrong with a (prev, cur) pair of (B, 3, H, W) float RGB frames."""
    problems = []
    for name, x in (("prev", prev), ("cur", cur)):
        if x.dim() != 4 or x.shape[1] != 3:
            problems.append(f"{name} must be (B, 3, H, W) RGB, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            problems.append(f"{name} must be floating point with values 0..255, got {x.dtype} (use .float())")
    if not problems and prev.shape != cur.shape:
        problems.append(f"prev and cur must have the same shape, got {tuple(prev.shape)} and {tuple(cur.shape)}")
    if not problems and prev.device != cur.device:
        problems.append(f"prev and cur must be on the same device, got {prev.device} and {cur.device}")
    if problems:
        raise ValueError("; ".join(problems))


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma with `LUMA_WEIGHTS`, same units and dtype."""
    # Python-scalar weights rather than a weight tensor: building one from a list is a host-to-device copy,
    # which CUDA graph capture refuses.
    r, g, b = LUMA_WEIGHTS
    return rgb[:, :1] * r + rgb[:, 1:2] * g + rgb[:, 2:] * b


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # Antialiased bilinear (a triangle filter as wide as the scale step) stands in for the Gaussian pre-smoothing
    # of the IPOL pyramid and keeps fine texture from aliasing into false motion at coarse levels.
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def _upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 2, h, w) flow to (B, 2, H, W), its values rescaled from the coarse level's pixels to the fine level's."""
    h, w = flow.shape[-2:]
    up = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    return torch.cat((up[:, :1] * (size[1] / w), up[:, 1:] * (size[0] / h)), dim=1)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel, truncated at 3 sigma, replicated border. (B, C, H, W) -> same."""
    radius = max(1, math.ceil(3 * sigma))
    # The kernel is made on the device (not from a Python list) so that the call stays capturable in a CUDA graph.
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).expand(image.shape[1], 1, -1)  # (C, 1, K)
    rows = F.conv2d(
        F.pad(image, (radius, radius, 0, 0), mode="replicate"), kernel[:, :, None, :], groups=image.shape[1]
    )
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode="replicate"), kernel[:, :, :, None], groups=image.shape[1])


def _centered_gradient(image: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 2, H, W) central differences (x, y), replicated border (one-sided at the edges)."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    gy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return torch.cat((gx, gy), dim=1)


def _forward_gradient(u: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """Forward differences of (B, C, H, W) `u` into `out` (B, 2, C, H, W) as (x, y), in place.

    The last column of the x part and the last row of the y part are left as they are: zero in a zero-initialised
    buffer, the Neumann boundary. The dual update then keeps p's x part zero on the last column and its y part on the
    last row, which makes the backward-difference divergence the negative adjoint of this gradient.
    """
    torch.sub(u[..., 1:], u[..., :-1], out=out[:, 0, ..., :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=out[:, 1, ..., :-1, :])
    return out


# Paeth's 19-exchange sorting network for the median of 9 (Devillard's opt_med9) as (a, b, keep_min, keep_max):
# after the exchange v[a] = min, v[b] = max, each computed only if read later. Elementwise min/max only (30 ops),
# several times faster than torch.median over unfolded patches on the CPU and free of sorting kernels on the GPU.
_MEDIAN9_NETWORK = (
    (1, 2, True, True), (4, 5, True, True), (7, 8, True, True), (0, 1, True, True), (3, 4, True, True),
    (6, 7, True, True), (1, 2, True, True), (4, 5, True, True), (7, 8, True, True), (0, 3, False, True),
    (5, 8, True, False), (4, 7, True, True), (3, 6, False, True), (1, 4, False, True), (2, 5, True, False),
    (4, 7, True, False), (4, 2, True, True), (6, 4, False, True), (4, 2, True, False),
)  # fmt: skip


def _median3x3(u: torch.Tensor) -> torch.Tensor:
    """Per-channel 3x3 median, replicated border. (B, C, H, W) -> (B, C, H, W)."""
    h, w = u.shape[-2:]
    padded = F.pad(u, (1, 1, 1, 1), mode="replicate")
    v = [padded[..., i : i + h, j : j + w] for i in range(3) for j in range(3)]
    for a, b, keep_min, keep_max in _MEDIAN9_NETWORK:
        low = torch.minimum(v[a], v[b]) if keep_min else v[a]
        high = torch.maximum(v[a], v[b]) if keep_max else v[b]
        v[a], v[b] = low, high
    return v[4]
