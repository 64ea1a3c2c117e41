"""`FlowWindow`: the ring of the last L optical flows, kept on the device.

Each pushed frame costs exactly one flow (previous frame -> this frame), never L. Flow i is the flow from frame i-1
to frame i. With L = 10, the window after frame n holds flows n-9 .. n, oldest first, which is:
- `causal`: the window of frame n itself (its mask is ready when it arrives, the in-car default);
- `centered`: the paper's window (t - L/2, t + L/2] of frame t = n - L/2 (paper 3.2), so frame t comes out L/2
  frames later, with its own stamp.
Until L flows exist the missing ones are zeros and samples say `warming`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class WindowSample:
    """A frame with the flows aligned to it.

    Attributes:
        frame: (1, 3, H, W) the frame as pushed.
        flows: (1, 2L, H, W) the L flows' (x, y) channels, oldest first; zeros where a flow does not exist.
        stamp: the frame's time in seconds.
        warming: True while some of the L flows are missing.
        payload: whatever the caller pushed with the frame (e.g. the original image and its header).
    """

    frame: torch.Tensor
    flows: torch.Tensor
    stamp: float
    warming: bool
    payload: Any = None


@dataclass(frozen=True)
class _Pending:
    frame: torch.Tensor
    stamp: float
    payload: Any


class FlowWindow:
    """Rolling window of L flows, one new flow per frame.

    Args:
        flow_fn: `flow_fn(prev, cur) -> (1, 2, H, W)` for frames (1, 3, H, W); its output is stored as is, so a
            caller that wants scaled flows passes a function that scales them (then each flow is scaled once).
        length: L.
        window: "causal" or "centered" (centered needs an even L).
        max_gap: seconds between frames above which the window restarts (None: never).
    """

    def __init__(self, flow_fn: FlowFn, *, length: int = 10, window: str = "causal", max_gap: float | None = None):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if window not in ("causal", "centered"):
            raise ValueError(f"window must be 'causal' or 'centered', got {window!r}")
        if window == "centered" and length % 2:
            raise ValueError(f"a centered window needs an even length, got {length}")
        if max_gap is not None and not max_gap > 0:
            raise ValueError(f"max_gap must be positive seconds or None, got {max_gap}")
        self.flow_fn = flow_fn
        self.length = length
        self.window = window
        self.max_gap = max_gap
        self.delay = length // 2 if window == "centered" else 0
        self.flows_computed = 0
        self.resets = 0
        self._ring: torch.Tensor | None = None  # (L, 2, H, W); slot `_head` is the oldest flow
        self._head = 0
        self._count = 0  # flows in the window, <= L
        self._prev: _Pending | None = None
        self._pending: deque[_Pending] = deque()  # frames not yet emitted (centered: the last L/2)

    @property
    def warming(self) -> bool:
        return self._count < self.length

    def push(self, frame: torch.Tensor, stamp: float, payload: Any = None) -> list[WindowSample]:
        """Add a frame; return the samples that became complete (usually one; none while a centered window fills).

        A reset (new image size, time going backwards, a gap over `max_gap`) first drains the frames still waiting
        for their future flows, so no frame is lost.

        Args:
            frame: (1, 3, H, W) on the device the flows should live on.
            stamp: seconds.
        Raises:
            ValueError: if frame is not (1, 3, H, W) or stamp is not finite.
        """
        if frame.dim() != 4 or frame.shape[0] != 1 or frame.shape[1] != 3:
            raise ValueError(f"frame must be (1, 3, H, W), got {tuple(frame.shape)}")
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be a finite number of seconds, got {stamp}")
        out: list[WindowSample] = []
        if self._prev is not None and self._must_reset(frame, stamp):
            out.extend(self.restart())
        if self._prev is not None:
            self._append(self.flow_fn(self._prev.frame, frame))
        item = _Pending(frame, stamp, payload)
        self._prev = item
        self._pending.append(item)
        if len(self._pending) > self.delay:
            out.append(self._sample(self._pending.popleft(), self._ordered()))
        return out

    def restart(self) -> list[WindowSample]:
        """Start a new window (counted in `resets`), draining the frames still waiting for future flows first.

        For conditions only the caller can see, e.g. the camera's resolution changing when frames are resized to
        the model's input before they get here.
        """
        if self._prev is None:  # nothing to restart
            return []
        self.resets += 1
        return self.flush()

    def flush(self) -> list[WindowSample]:
        """Emit the frames still waiting for future flows (centered windows at the end of a clip) and start afresh.

        Their future flows do not exist, so they are zeros and the samples are `warming`.
        """
        out = []
        if self._pending:
            ordered = self._ordered()  # newest flow n at the end
            first_shift = self.delay - len(self._pending) + 1
            for shift in range(first_shift, first_shift + len(self._pending)):
                # Frame t = n - delay + shift needs flow t + delay = n + shift last: drop `shift` old, pad the future.
                flows = torch.cat([ordered[shift:], torch.zeros_like(ordered[:shift])])
                out.append(self._sample(self._pending.popleft(), flows, warming=True))
        self._ring = None
        self._head = self._count = 0
        self._prev = None
        return out

    def _must_reset(self, frame: torch.Tensor, stamp: float) -> bool:
        assert self._prev is not None
        if frame.shape != self._prev.frame.shape:
            return True
        if stamp < self._prev.stamp:
            return True
        return self.max_gap is not None and stamp - self._prev.stamp > self.max_gap

    def _append(self, flow: torch.Tensor) -> None:
        if flow.dim() != 4 or flow.shape[:2] != (1, 2):
            raise ValueError(f"flow_fn must return (1, 2, H, W), got {tuple(flow.shape)}")
        if self._ring is None:
            self._ring = flow.new_zeros((self.length, *flow.shape[1:]))
        slot = (self._head + self._count) % self.length
        self._ring[slot].copy_(flow[0])
        if self._count < self.length:
            self._count += 1
        else:
            self._head = (self._head + 1) % self.length
        self.flows_computed += 1

    def _ordered(self) -> torch.Tensor:
        """(L, 2, H, W) flows oldest first, zeros in front while warming (no host round trip)."""
        assert self._prev is not None
        if self._ring is None:  # a single frame so far
            _, _, h, w = self._prev.frame.shape
            return self._prev.frame.new_zeros((self.length, 2, h, w))
        if self._count < self.length:
            # Slots [0, count) hold the flows in order; put them last so the newest is always at the end.
            return torch.cat([self._ring[self._count :], self._ring[: self._count]])
        return torch.cat([self._ring[self._head :], self._ring[: self._head]])

    def _sample(self, item: _Pending, flows: torch.Tensor, warming: bool | None = None) -> WindowSample:
        return WindowSample(
            frame=item.frame,
            flows=flows.reshape(1, -1, *flows.shape[-2:]),
            stamp=item.stamp,
            warming=self.warming if warming is None else warming,
            payload=item.payload,
        )
