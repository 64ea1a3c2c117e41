"""Segmenter: camera frames in, labels at the camera's size out, with one flow per frame."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_spec

from wsvs_ros.engine import TorchEngine
from wsvs_ros.flow import make_flow
from wsvs_ros.labels import DRIVE
from wsvs_ros.model.checkpoint import build_model
from wsvs_ros.pipeline import STAGES, Segmenter
from wsvs_ros.preprocess import encode_flow, frame_to_tensor, normalize_rgb


def make_segmenter(device: torch.device | str = "cpu", **spec_kw) -> Segmenter:
    spec = tiny_spec(**spec_kw)
    torch.manual_seed(0)
    return Segmenter(TorchEngine(build_model(spec), device=device), spec, flow=make_flow(spec), max_gap=1.0)


def frames(n: int, h: int = 48, w: int = 96, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8), (w, h))
    return [np.roll(base, shift=i, axis=1) for i in range(n)]


def test_labels_come_back_at_camera_size_with_the_frame_stamp_and_payload() -> None:
    seg = make_segmenter()
    (result,) = seg.push(frames(1)[0], stamp=12.5, payload="header-1")
    assert result.labels.shape == (48, 96) and result.labels.dtype == np.uint8
    assert result.labels.max() < seg.spec.num_classes
    assert result.confidence.shape == (48, 96)
    assert np.all((result.confidence > 0) & (result.confidence <= 1))
    assert result.stamp == 12.5 and result.payload == "header-1" and result.warming
    assert set(result.timings_ms) == {*STAGES, "total"}
    assert all(v >= 0 for v in result.timings_ms.values())


def test_one_flow_per_new_frame() -> None:
    seg = make_segmenter()
    for i, rgb in enumerate(frames(9)):
        seg.push(rgb, stamp=i / 10)
    assert seg.flows_computed == 8


def test_labels_equal_the_network_argmax_resized_like_nearest_neighbour() -> None:
    seg = make_segmenter(flow_length=2)
    clip = frames(3)
    for i, rgb in enumerate(clip):
        (result,) = seg.push(rgb, stamp=i / 10)
    spec, device = seg.spec, torch.device("cpu")
    tensors = [frame_to_tensor(f, spec, device) for f in clip]
    flow_fn = make_flow(spec)
    flows = torch.cat([encode_flow(flow_fn(a, b), spec) for a, b in itertools.pairwise(tensors)], dim=1)
    logits = seg.engine.infer(normalize_rgb(tensors[-1], spec), flows)
    expected = logits.argmax(1)[0].to(torch.uint8).numpy()
    expected = cv2.resize(expected, (96, 48), interpolation=cv2.INTER_NEAREST_EXACT)
    np.testing.assert_array_equal(result.labels, expected)


class RampEngine:
    """Logits whose road / sidewalk boundary is a blurry ramp centred on the middle column, whatever the image."""

    device = torch.device("cpu")

    def infer(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        height, width = rgb.shape[-2:]
        sidewalk = torch.linspace(-1.0, 1.0, width).expand(1, 1, height, width)
        return torch.cat([-sidewalk, sidewalk, torch.full((1, len(DRIVE) - 2, height, width), -9.0)], 1)


@pytest.mark.parametrize("iterations", [0, 5])
def test_the_crf_moves_a_blurry_boundary_onto_the_image_edge(iterations: int) -> None:
    spec = tiny_spec()  # 64 x 32: the camera frame below is at the model's input size
    seg = Segmenter(RampEngine(), spec, flow=make_flow(spec), crf_iterations=iterations)
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, 20:] = (230, 210, 30)  # a sharp colour edge at column 20, not at the network's column 32
    (result,) = seg.push(image, stamp=0.0)
    boundary = 20 if iterations else 32
    assert (result.labels[:, :boundary] == 0).all() and (result.labels[:, boundary:] == 1).all()
    assert result.timings_ms["crf"] > 0 or not iterations


def test_a_negative_crf_iteration_count_is_refused() -> None:
    spec = tiny_spec()
    with pytest.raises(ValueError, match="crf_iterations must be an integer >= 0"):
        Segmenter(RampEngine(), spec, flow=make_flow(spec), crf_iterations=-1)


def test_centered_window_returns_frames_late_and_flush_drains_the_rest() -> None:
    seg = make_segmenter(window="centered", flow_length=4)
    clip = frames(6)
    returned = [len(seg.push(rgb, stamp=i / 10)) for i, rgb in enumerate(clip)]
    assert returned == [0, 0, 1, 1, 1, 1]
    tail = seg.flush()
    assert [r.stamp for r in tail] == pytest.approx([0.4, 0.5])


def test_a_bad_image_is_refused_and_the_segmenter_keeps_working() -> None:
    seg = make_segmenter()
    seg.push(frames(1)[0], stamp=0.0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        seg.push(np.zeros((48, 96), np.uint8), stamp=0.1)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        seg.push(np.zeros((48, 96, 3), np.float32), stamp=0.1)
    (result,) = seg.push(frames(2)[1], stamp=0.2)
    assert seg.flows_computed == 1 and result.labels.shape == (48, 96)


def test_a_new_camera_size_restarts_the_window_and_resizes_the_output() -> None:
    seg = make_segmenter()
    seg.push(frames(1)[0], stamp=0.0)
    seg.push(frames(2)[1], stamp=0.1)
    (result,) = seg.push(frames(1, h=40, w=70)[0], stamp=0.2)
    assert result.labels.shape == (40, 70) and result.warming
    assert seg.resets == 1 and seg.flows_computed == 1, "no flow between frames of two resolutions"


def test_a_new_camera_size_drains_a_centered_window_first() -> None:
    seg = make_segmenter(window="centered", flow_length=4)
    stamps = [r.stamp for i, rgb in enumerate(frames(4)) for r in seg.push(rgb, stamp=i / 10)]
    stamps += [r.stamp for r in seg.push(frames(1, h=40, w=70)[0], stamp=0.4)]
    stamps += [r.stamp for r in seg.flush()]
    assert stamps == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4]) and seg.resets == 1


def test_frames_flows_and_logits_stay_on_the_engine_device(device: torch.device) -> None:
    spec = tiny_spec(flow_method="torch", flow_params={"warps": 2, "iterations": 5})
    seen: list[torch.device] = []
    torch_flow = make_flow(spec)

    def flow(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        out = torch_flow(prev, cur)
        seen.extend([prev.device, cur.device, out.device])
        return out

    seg = Segmenter(TorchEngine(build_model(spec), device=device), spec, flow=flow)
    seg.warm_up()
    for i, rgb in enumerate(frames(4)):
        (result,) = seg.push(rgb, stamp=i / 10)
    assert seen and all(d.type == device.type for d in seen)
    assert result.labels.shape == (48, 96) and seg.flows_computed == 3
