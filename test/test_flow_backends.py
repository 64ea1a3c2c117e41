"""Dense optical flow backends (`TorchFlow`, `OpenCVFlow`) and the warping helpers they share.

Flow convention under test: prev(y, x) ≈ cur(y + flow_y, x + flow_x), i.e. `backward_warp(cur, flow) ≈ prev`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F

from wsvs_ros.flow.opencv_flow import OpenCVFlow
from wsvs_ros.flow.torch_flow import TorchFlow, _median3x3
from wsvs_ros.flow.warp import backward_warp, inside_mask, photometric_error

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FOOTAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cityscapes_aachen"

BACKENDS: dict[str, Callable[[], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "torch": TorchFlow,
    "dis": lambda: OpenCVFlow(method="dis"),
    "farneback": lambda: OpenCVFlow(method="farneback"),
}


# Endpoint errors are averaged away from the border, where the synthetic `prev` repeats border pixels of `cur`.
MARGIN = 12


def textured_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) deterministic RGB texture, 0..255: smooth noise at four scales plus a few sharp-edged boxes."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 3, height, width)
    for cell in (4, 8, 16, 32):
        noise = torch.rand(1, 3, height // cell + 2, width // cell + 2, generator=gen)
        image += F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False) * math.sqrt(cell)
    image = 20 + 200 * (image - image.amin()) / (image.amax() - image.amin())
    for _ in range(8):
        y = int(torch.randint(0, height - 24, (1,), generator=gen))
        x = int(torch.randint(0, width - 32, (1,), generator=gen))
        image[..., y : y + 24, x : x + 32] += 80 * (torch.rand(3, 1, 1, generator=gen) - 0.5)
    return image.clamp(0, 255)


def known_motion(kind: str, height: int, width: int) -> torch.Tensor:
    """(1, 2, H, W) smooth flow, at most about 10 px: 'translation', 'zoom' (driving forward) or 'rotation'."""
    ys, xs = torch.meshgrid(torch.arange(height * 1.0), torch.arange(width * 1.0), indexing="ij")
    if kind == "translation":
        fx, fy = torch.full_like(xs, 6.5), torch.full_like(ys, -3.5)
    elif kind == "zoom":  # points move away from a focus of expansion above the image centre, like a road ahead
        scale, fx0, fy0 = 1.07, 0.5 * width, 0.45 * height
        fx, fy = (scale - 1) * (xs - fx0), (scale - 1) * (ys - fy0)
    elif kind == "rotation":  # 4 degrees about the centre
        angle, cx, cy = math.radians(4.0), (width - 1) / 2, (height - 1) / 2
        dx, dy = xs - cx, ys - cy
        fx = math.cos(angle) * dx - math.sin(angle) * dy - dx
        fy = math.sin(angle) * dx + math.cos(angle) * dy - dy
    else:
        raise ValueError(kind)
    return torch.stack((fx, fy))[None]


def frame_pair(kind: str, height: int = 128, width: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prev, cur, true flow): `prev` is `cur` warped back by the flow, so prev(p) = cur(p + flow(p)) exactly."""
    cur = textured_image(height, width)
    flow = known_motion(kind, height, width)
    return backward_warp(cur, flow), cur, flow


def endpoint_error(flow: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean Euclidean distance in pixels between two (1, 2, H, W) flows, `MARGIN` pixels from the border."""
    diff = (flow.float().cpu() - truth)[..., MARGIN:-MARGIN, MARGIN:-MARGIN]
    return float(diff.norm(dim=1).mean())


# --- warp.py -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_backward_warp_samples_the_image_at_x_plus_flow(device: str) -> None:
    image = textured_image(32, 48).to(device)
    shift = torch.zeros(1, 2, 32, 48, device=device)
    shift[:, 0], shift[:, 1] = 3.0, -2.0
    warped = backward_warp(image, shift)
    # Whole-pixel shifts are exact up to float rounding of the normalised grid: warped(y, x) = image(y - 2, x + 3).
    torch.testing.assert_close(warped[..., 2:, :-3], image[..., :-2, 3:], atol=1e-3, rtol=0)
    # Bilinear sampling reproduces a linear ramp exactly, so a fractional flow moves it by exactly that much.
    ramp = torch.arange(48.0, device=device).expand(1, 1, 32, 48)
    torch.testing.assert_close(
        backward_warp(ramp, torch.full((1, 2, 32, 48), 0.25, device=device))[..., :-1], ramp[..., :-1] + 0.25
    )


def test_backward_warp_rejects_a_flow_of_another_size() -> None:
    with pytest.raises(ValueError, match="flow must be"):
        backward_warp(torch.zeros(1, 3, 16, 16), torch.zeros(1, 2, 8, 8))


def test_photometric_error_can_ignore_samples_that_left_the_image() -> None:
    prev, cur, flow = frame_pair("translation")
    outside = ~inside_mask(flow)
    assert outside[0, 0, :, -1].all()  # the last column samples 6.5 px beyond the right edge
    # What entered the view has no counterpart in `cur`: make it black, as new scenery would differ.
    prev = prev.masked_fill(outside, 0.0)
    assert float(photometric_error(prev, cur, flow)) > 1.0
    assert float(photometric_error(prev, cur, flow, ignore_outside=True)) < 1e-3


def test_median_filter_equals_the_sorted_median_of_each_3x3_window() -> None:
    # The sorting network must pick exactly the 5th of 9 values, ties and borders (replicated) included.
    u = torch.randint(0, 6, (2, 2, 9, 11), generator=torch.Generator().manual_seed(0)).float()
    windows = F.pad(u, (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1).unfold(3, 3, 1).reshape(2, 2, 9, 11, 9)
    torch.testing.assert_close(_median3x3(u), windows.median(dim=-1).values, atol=0, rtol=0)


# --- flow quality ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "bound"), [("translation", 0.02), ("zoom", 0.15), ("rotation", 0.03)])
def test_torch_flow_recovers_known_motion_at_least_as_well_as_farneback(kind: str, bound: float) -> None:
    # Measured endpoint errors (px): translation 0.002, zoom 0.055, rotation 0.005; Farnebäck 0.14, 0.17, 0.16.
    prev, cur, truth = frame_pair(kind)
    torch_epe = endpoint_error(TorchFlow()(prev, cur), truth)
    farneback_epe = endpoint_error(OpenCVFlow(method="farneback")(prev, cur), truth)
    assert torch_epe <= farneback_epe, f"TorchFlow {torch_epe:.3f} px vs Farnebäck {farneback_epe:.3f} px"
    assert torch_epe < bound


def test_dis_recovers_a_translation() -> None:
    prev, cur, truth = frame_pair("translation")
    assert endpoint_error(OpenCVFlow(method="dis")(prev, cur), truth) < 0.2


def test_torch_flow_tolerates_an_exposure_change() -> None:
    # Auto-exposure brightens the next frame by 3 %: measured 0.05 px, where plain brightness constancy
    # (texture_sigma=0) is off by 0.8 px.
    prev, cur, truth = frame_pair("zoom")
    assert endpoint_error(TorchFlow()(prev, (cur * 1.03).clamp(0, 255)), truth) < 0.15


# --- the backend interface ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_flow_is_float32_b2hw_on_the_input_device(backend: str, device: str) -> None:
    prev = textured_image(64, 96).to(device)
    flow = BACKENDS[backend]()(prev, prev.roll(2, dims=-1))
    assert flow.shape == (1, 2, 64, 96)
    assert flow.dtype == torch.float32
    assert flow.device == prev.device


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_of_two_equals_two_batches_of_one(backend: str) -> None:
    prev, cur, _ = frame_pair("rotation", 64, 96)
    prev2, cur2 = textured_image(64, 96, seed=1), textured_image(64, 96, seed=1).roll(3, dims=-2)
    flow_fn = BACKENDS[backend]()
    batched = flow_fn(torch.cat((prev, prev2)), torch.cat((cur, cur2)))
    one_by_one = torch.cat((flow_fn(prev, cur), flow_fn(prev2, cur2)))
    torch.testing.assert_close(batched, one_by_one, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("backend", "tolerance"), [("torch", 1e-4), ("dis", 0.01), ("farneback", 0.1)])
def test_identical_frames_give_zero_flow(backend: str, tolerance: float) -> None:
    # TorchFlow is off only by the float rounding of the sampling grid; Farnebäck's polynomial fits leave a few
    # hundredths of a pixel.
    frame = textured_image(64, 96)
    assert BACKENDS[backend]()(frame, frame.clone()).abs().max() <= tolerance


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("prev", "cur", "message"),
    [
        (torch.zeros(3, 32, 32), torch.zeros(3, 32, 32), r"prev must be \(B, 3, H, W\)"),
        (torch.zeros(1, 1, 32, 32), torch.zeros(1, 3, 32, 32), r"prev must be \(B, 3, H, W\) RGB"),
        (torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 48), "same shape"),
        (torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 32, 32), "same shape"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32), r"floating point.*\.float\(\)"),
    ],
)
def test_bad_frames_raise_one_clear_value_error(
    backend: str, prev: torch.Tensor, cur: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BACKENDS[backend]()(prev, cur)


@pytest.mark.parametrize("backend", ["torch", "dis"])
def test_params_rebuild_the_same_backend_from_json(backend: str) -> None:
    flow_fn = BACKENDS[backend]()
    params = json.loads(json.dumps(flow_fn.params))
    rebuilt = type(flow_fn)(**params)
    assert rebuilt.params == flow_fn.params
    prev, cur, _ = frame_pair("translation", 64, 96)
    torch.testing.assert_close(rebuilt(prev, cur), flow_fn(prev, cur))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"scale_factor": 1.0}, "scale_factor"), ({"warps": 0}, "warps"), ({"tau": 0.5}, "tau"), ({"lam": -1}, "lam")],
)
def test_torch_flow_names_the_bad_parameter(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TorchFlow(**kwargs)


@pytest.mark.parametrize(("kwargs", "field"), [({"method": "tvl1"}, "method"), ({"preset": "slow"}, "preset")])
def test_opencv_flow_names_the_bad_parameter(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        OpenCVFlow(**kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_torch_flow_accepts_float64_and_float16_frames(dtype: torch.dtype) -> None:
    prev, cur, truth = frame_pair("translation", 64, 96)
    reference = TorchFlow()(prev, cur)
    flow = TorchFlow()(prev.to(dtype), cur.to(dtype))
    assert flow.dtype == torch.float32
    # float16 rounds the frames to about 0.1 grey levels, so the flow moves a little; float64 agrees closely.
    tolerance = 0.05 if dtype == torch.float16 else 1e-3
    assert (flow - reference)[..., MARGIN:-MARGIN, MARGIN:-MARGIN].abs().mean() < tolerance
    assert endpoint_error(flow, truth) < 0.1


def test_torch_flow_builds_no_autograd_graph_even_from_frames_that_require_grad() -> None:
    prev, cur, _ = frame_pair("translation", 64, 96)
    flow = TorchFlow()(prev.requires_grad_(), cur)
    assert not flow.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(TorchFlow()(prev, cur), flow)


# --- real footage ---------------------------------------------------------------------------------------------------


def _footage_frames(count: int) -> list[torch.Tensor]:
    paths = sorted((FOOTAGE / "seq0000" / "frames").glob("*.jpg"))[10 : 10 + count]
    if len(paths) < count:
        pytest.skip(f"real footage not found under {FOOTAGE}")
    frames = []
    for path in paths:
        bgr = cv2.resize(cv2.imread(str(path)), (512, 256), interpolation=cv2.INTER_AREA)
        frames.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float())
    return frames


@pytest.mark.slow
def test_torch_flow_explains_consecutive_driving_frames() -> None:
    frames = _footage_frames(3)
    torch_flow, farneback = TorchFlow(), OpenCVFlow(method="farneback")
    for prev, cur in itertools.pairwise(frames):
        unwarped = float(photometric_error(prev, cur, torch.zeros(1, 2, 256, 512)))
        ours = float(photometric_error(prev, cur, torch_flow(prev, cur), ignore_outside=True))
        reference = float(photometric_error(prev, cur, farneback(prev, cur), ignore_outside=True))
        # Measured on frames 10-12 of seq0000: 2.9 and 3.7 grey levels left of 13.3 and 14.5; Farnebäck leaves 4.6, 4.8.
        assert ours < 0.4 * unwarped, f"{ours:.2f} grey levels with TorchFlow vs {unwarped:.2f} without warping"
        assert ours <= reference, f"{ours:.2f} grey levels with TorchFlow vs {reference:.2f} with Farnebäck"


def test_torch_flow_on_cpu_runs_single_threaded_and_restores_the_thread_count() -> None:
    threads = torch.get_num_threads()
    seen: list[int] = []
    flow = TorchFlow(warps=1, iterations=1)
    original = flow._flow
    flow._flow = lambda a, b: seen.append(torch.get_num_threads()) or original(a, b)  # type: ignore[method-assign]
    image = torch.rand(1, 3, 32, 48) * 255
    flow(image, image)
    assert seen == [1] and torch.get_num_threads() == threads
