"""Replay a flow computation as one CUDA graph: one launch per frame instead of thousands.

TorchFlow runs a fixed schedule of small element-wise kernels (pyramid levels x warps x iterations). Eagerly, each is
a Python-side launch of tens of microseconds, so a 1024x512 flow is bound by launch overhead, not by the GPU. The
schedule has fixed shapes and never reads values on the host, so it can be captured once per input shape and replayed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CudaGraphFlow:
    """Wraps `fn(prev, cur) -> flow`; on CUDA inputs it captures a graph per (shape, dtype, device) and replays it.

    `fn` must be capturable: fixed shapes, no host synchronisation, no CPU tensors created per call. CPU inputs run
    `fn` eagerly. The returned tensor is a fresh copy, so callers may keep it across calls.
    """

    def __init__(self, fn: FlowFn, *, warmup: int = 2):
        self.fn = fn
        self.warmup = warmup
        self._key: tuple | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._prev: torch.Tensor | None = None
        self._cur: torch.Tensor | None = None
        self._out: torch.Tensor | None = None

    def __call__(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        if prev.device.type != "cuda":
            return self.fn(prev, cur)
        key = (tuple(prev.shape), tuple(cur.shape), prev.dtype, prev.device)
        if key != self._key:
            self._capture(prev, cur)
            self._key = key
        assert self._graph is not None and self._prev is not None and self._cur is not None and self._out is not None
        self._prev.copy_(prev)
        self._cur.copy_(cur)
        self._graph.replay()
        return self._out.clone()

    def _capture(self, prev: torch.Tensor, cur: torch.Tensor) -> None:
        self._graph = None  # free the old graph's memory pool before capturing at a new size
        self._prev, self._cur = prev.clone(), cur.clone()
        side = torch.cuda.Stream(device=prev.device)
        side.wait_stream(torch.cuda.current_stream(prev.device))
        with torch.cuda.stream(side):  # warm-up off the capture: lazy inits and allocator pools happen here
            for _ in range(self.warmup):
                self.fn(self._prev, self._cur)
        torch.cuda.current_stream(prev.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self.fn(self._prev, self._cur)
        self._graph = graph
