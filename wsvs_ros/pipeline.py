"""`Segmenter`: camera frames in, label maps out. ROS-free; the node and offline replay share it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wsvs_ros.crf import dense_crf
from wsvs_ros.cuda_graph import CudaGraphed
from wsvs_ros.engine import Engine, open_engine
from wsvs_ros.flow import make_flow
from wsvs_ros.flow.window import FlowWindow, WindowSample
from wsvs_ros.preprocess import encode_flow, frame_to_tensor, normalize_rgb
from wsvs_ros.spec import ModelSpec
from wsvs_ros.timing import StageTimer

STAGES = ("preprocess", "flow", "network", "crf", "postprocess")  # "crf" is 0 ms when it is off


@dataclass(frozen=True)
class SegmentResult:
    """The segmentation of one camera frame.

    Attributes:
        labels: (H, W) uint8 class ids at the camera's size.
        confidence: (H, W) float32 probability of the chosen class (softmax, or the CRF's marginal with the CRF).
        stamp: the frame's stamp in seconds (a centered window returns frame t L/2 frames later, with t's stamp).
        warming: fewer than L real flows were available (the missing ones were zeros).
        timings_ms: milliseconds per stage of the push that produced it (`STAGES` and "total").
        payload: what the caller pushed with the frame (e.g. its ROS header).
    """

    labels: np.ndarray
    confidence: np.ndarray
    stamp: float
    warming: bool
    timings_ms: dict[str, float]
    payload: Any = None


@dataclass(frozen=True)
class _Frame:
    camera_hw: tuple[int, int]
    payload: Any


class Segmenter:
    """Frames in, labels out, with one flow per frame on the engine's device.

    Args:
        engine: the network runtime (its `device` is where frames, flows and logits live).
        spec: the model's preprocessing metadata.
        flow: `flow(prev, cur) -> (1, 2, H, W)` pixels; built from `spec` by the caller (see `wsvs_ros.flow`).
        max_gap: seconds between frames above which the flow window restarts (None: never).
        cuda_graph: on CUDA, replay the flow (and its encoding) as one captured CUDA graph per frame; needs a
            capturable flow (`TorchFlow` is; `OpenCVFlow` is not).
        crf_iterations: mean-field steps of the dense CRF that refines the network's probabilities on the frame at
            the model's input size, the paper's test-time post-processing (`wsvs_ros.crf`); 0 switches it off.
            Costs more than the network on a CPU (wsvs_ros/data/default_model.md has the figures).
    Raises:
        ValueError: crf_iterations is negative.
    """

    def __init__(
        self,
        engine: Engine,
        spec: ModelSpec,
        *,
        flow: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        max_gap: float | None = None,
        cuda_graph: bool = False,
        crf_iterations: int = 0,
    ):
        if not isinstance(crf_iterations, int) or crf_iterations < 0:
            raise ValueError(f"crf_iterations must be an integer >= 0 (0: no CRF), got {crf_iterations!r}")
        self.engine = engine
        self.crf_iterations = crf_iterations
        self.spec = spec
        self.device = engine.device

        def encoded_flow(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
            return encode_flow(flow(prev, cur), spec)  # encoded once per flow, not once per frame

        self.window = FlowWindow(
            CudaGraphed(encoded_flow) if cuda_graph else encoded_flow,
            length=spec.flow_length,
            window=spec.window,
            max_gap=max_gap,
        )
        self._resize_index: dict[tuple[int, int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._camera_hw: tuple[int, int] | None = None

    @property
    def flows_computed(self) -> int:
        return self.window.flows_computed

    @property
    def resets(self) -> int:
        return self.window.resets

    def warm_up(self) -> None:
        """Run the flow, the network and the CRF once on blank input, so the first real frame is not slow (cuDNN,
        allocations)."""
        h, w = self.spec.input_height, self.spec.input_width
        with self._on_device():
            frame = torch.zeros(1, 3, h, w, device=self.device)
            flows = torch.zeros(1, 2 * self.spec.flow_length, h, w, device=self.device)
            self.window.flow_fn(frame, frame)  # also captures the CUDA graphs, if any, before the first real frame
            logits = self.engine.infer(normalize_rgb(frame, self.spec), flows)
            if self.crf_iterations:  # cuSPARSE and the lattice's kernels initialise on their first call
                dense_crf(logits.float().softmax(dim=1), frame, iterations=1)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

    def push(self, rgb: np.ndarray, stamp: float, payload: Any = None) -> list[SegmentResult]:
        """Segment a frame.

        Args:
            rgb: (H, W, 3) uint8 RGB camera image, any size (resized to the model's input).
            stamp: seconds; time going backwards, a gap over `max_gap` or a new camera resolution restarts the flow
                window.
            payload: returned with this frame's result.
        Returns:
            The results that became ready: usually this frame's; none while a centered window waits for this
            frame's future; more than one when a reset drains a centered window.
        Raises:
            ValueError: rgb is not an (H, W, 3) uint8 image.
        """
        with self._on_device():
            drained = []
            if rgb.ndim == 3 and self._camera_hw not in (None, rgb.shape[:2]):
                # Frames reach the window already resized, so it cannot see a new camera resolution itself.
                drained = self._finish(self.window.restart(), StageTimer(self.device, skip=("preprocess", "flow")))
            timer = StageTimer(self.device)
            frame = frame_to_tensor(rgb, self.spec, self.device)
            self._camera_hw = rgb.shape[:2]
            timer.mark("preprocess")
            samples = self.window.push(frame, stamp, _Frame(rgb.shape[:2], payload))
            timer.mark("flow")
            return drained + self._finish(samples, timer)

    def flush(self) -> list[SegmentResult]:
        """Results for the frames a centered window still holds (end of a clip); the window starts afresh."""
        with self._on_device():
            return self._finish(self.window.flush(), StageTimer(self.device, skip=("preprocess", "flow")))

    def _finish(self, samples: list[WindowSample], timer: StageTimer) -> list[SegmentResult]:
        results = []
        for sample in samples:
            logits = self.engine.infer(normalize_rgb(sample.frame, self.spec), sample.flows)
            timer.mark("network")
            refined = None
            if self.crf_iterations:
                refined = dense_crf(logits.float().softmax(dim=1), sample.frame, iterations=self.crf_iterations)
            timer.mark("crf")
            labels, confidence = self._postprocess(logits, refined, sample.payload.camera_hw)
            timer.mark("postprocess")
            results.append(
                SegmentResult(
                    labels=labels,
                    confidence=confidence,
                    stamp=sample.stamp,
                    warming=sample.warming,
                    timings_ms=timer.elapsed_ms(),
                    payload=sample.payload.payload,
                )
            )
            timer = StageTimer(self.device, skip=("preprocess", "flow"))  # a drained window's later results
        return results

    def _on_device(self) -> contextlib.AbstractContextManager:
        """Make `device` current on CUDA, so graphs are captured and events recorded on its streams (cuda:N)."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _postprocess(
        self, logits: torch.Tensor, refined: torch.Tensor | None, camera_hw: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence at the camera's size from the CRF's marginals if it ran, else the logits."""
        probs = logits.float().softmax(dim=1) if refined is None else refined
        confidence, labels = probs.max(dim=1)
        labels, confidence = labels[0].to(torch.uint8), confidence[0]
        height, width = labels.shape
        if (height, width) != camera_hw:
            rows, cols = self._nearest_index(camera_hw, (height, width))
            labels, confidence = labels[rows[:, None], cols], confidence[rows[:, None], cols]  # one gather each
        return labels.cpu().numpy(), confidence.cpu().numpy()

    def _nearest_index(self, out_hw: tuple[int, int], in_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached gathers that resize like cv2.INTER_NEAREST_EXACT (pixel centres), built once per camera size."""
        key = (*out_hw, *in_hw)
        if key not in self._resize_index:
            idx = []
            for n_out, n_in in zip(out_hw, in_hw, strict=True):
                i = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out).floor().long()
                idx.append(i.clamp_(max=n_in - 1).to(self.device))
            self._resize_index[key] = (idx[0], idx[1])
        return self._resize_index[key]


def open_segmenter(
    model: str | os.PathLike[str],
    *,
    backend: str = "torch",
    device: str | torch.device = "cpu",
    precision: str = "auto",
    max_gap: float | None = None,
    cuda_graph: bool = True,
    build_engine_if_missing: bool = False,
    crf_iterations: int = 0,
) -> Segmenter:
    """A `Segmenter` for a model file, set up the same way for the node, replay and the demo.

    `cuda_graph` applies where it can: the torch network and the torch flow on CUDA. Raises what
    `wsvs_ros.engine.open_engine` and `wsvs_ros.flow.make_flow` raise for a bad file or setting.
    """
    engine, spec = open_engine(
        model, backend=backend, device=device, precision=precision,
        build_engine_if_missing=build_engine_if_missing, cuda_graph=cuda_graph,
    )  # fmt: skip
    graphed = cuda_graph and engine.device.type == "cuda" and spec.flow_method == "torch"
    return Segmenter(
        engine, spec, flow=make_flow(spec), max_gap=max_gap, cuda_graph=graphed, crf_iterations=crf_iterations
    )
