"""Per-stage latency that stays honest on CUDA without adding a synchronisation per stage."""

from __future__ import annotations

import time

import torch


class StageTimer:
    """Marks stage boundaries; `elapsed_ms()` returns each stage's milliseconds.

    On CUDA the marks are CUDA events, read once after the caller's final device-to-host copy has synchronised, so
    each stage is measured as the device ran it; on CPU they are `perf_counter` readings.
    """

    def __init__(self, device: torch.device, *, skip: tuple[str, ...] = ()):
        """`skip`: stages this run does not have, reported as 0 ms so every result has the same stages."""
        self._cuda = device.type == "cuda"
        self._marks: list[tuple[str, object]] = []
        for name in ("start", *skip):
            self.mark(name)

    def mark(self, name: str) -> None:
        """End the stage `name` (the first mark names the start)."""
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append((name, event))
        else:
            self._marks.append((name, time.perf_counter()))

    def elapsed_ms(self) -> dict[str, float]:
        """{stage: ms} for every mark after the start, plus "total"."""
        if self._cuda:
            self._marks[-1][1].synchronize()  # type: ignore[attr-defined]
            start = self._marks[0][1]
            times = [start.elapsed_time(m) for _, m in self._marks]  # type: ignore[attr-defined]
        else:
            times = [(t - self._marks[0][1]) * 1e3 for _, t in self._marks]  # type: ignore[operator]
        out = {name: times[i] - times[i - 1] for i, (name, _) in enumerate(self._marks) if i > 0}
        out["total"] = times[-1]
        return out
