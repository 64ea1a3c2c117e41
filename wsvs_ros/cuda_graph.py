"""Replay a per-frame computation as one CUDA graph: one launch per frame instead of hundreds or thousands.

TorchFlow runs a fixed schedule of small element-wise kernels (pyramid levels x warps x iterations), and the network
about a hundred layers. Eagerly each kernel is a Python-side launch of tens of microseconds, so at batch 1 both are
bound by launch overhead, not by the GPU (measured on an H100: 1024x512 flow 198 ms eager, 26 ms replayed). Both have
fixed shapes and never read values on the host, so each is captured once per input shape and replayed.

A `TorchFlow(compile=True)` composes with it: the warm-up calls before the capture build its graph (and any
recompilation), and the capture records its fused kernels instead of the eager ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

PairFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CudaGraphed:
    """Wraps `fn(a, b) -> tensor`; on CUDA inputs it captures a graph per (shapes, dtype, device) and replays it.

    `fn` must be capturable: fixed shapes, no host synchronisation, no CPU tensors created per call. CPU inputs run
    `fn` eagerly. The returned tensor is a fresh copy, so callers may keep it across calls.
    """

    def __init__(self, fn: PairFn, *, warmup: int = 2):
        self.fn = fn
        self.warmup = warmup
        self._key: tuple | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._a: torch.Tensor | None = None
        self._b: torch.Tensor | None = None
        self._out: torch.Tensor | None = None

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.device.type != "cuda":
            return self.fn(a, b)
        key = (tuple(a.shape), tuple(b.shape), a.dtype, a.device)
        if key != self._key:
            self._capture(a, b)
            self._key = key
        assert self._graph is not None and self._a is not None and self._b is not None and self._out is not None
        self._a.copy_(a)
        self._b.copy_(b)
        self._graph.replay()
        return self._out.clone()

    def _capture(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self._graph = None  # free the old graph's memory pool before capturing at a new size
        self._a, self._b = a.clone(), b.clone()
        side = torch.cuda.Stream(device=a.device)
        side.wait_stream(torch.cuda.current_stream(a.device))
        with torch.cuda.stream(side):  # warm-up off the capture: lazy inits and allocator pools happen here
            for _ in range(self.warmup):
                self.fn(self._a, self._b)
        torch.cuda.current_stream(a.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self.fn(self._a, self._b)
        self._graph = graph
