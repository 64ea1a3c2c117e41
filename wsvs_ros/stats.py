"""Running figures of a segmentation run: counts and latency, for /diagnostics and replay's stats.json."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np


def with_decode(timings_ms: dict[str, float], decode_ms: float) -> dict[str, float]:
    """A result's stage timings with the message decode that preceded its push: "decode" added, and to "total".

    Node, replay and bench attribute the decode to the first result of the push that decoded it (0 for the others),
    as the Segmenter attributes its own stages.
    """
    return {**timings_ms, "decode": decode_ms, "total": timings_ms["total"] + decode_ms}


class RunStats:
    """Counts frames and keeps per-stage latency over the last `window` results (None: all of them).

    Counters: `received` (messages in), `published` (results out), `skipped_bad` (undecodable), `dropped`
    (replaced by a newer frame before processing).
    """

    def __init__(self, *, window: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.received = 0
        self.published = 0
        self.skipped_bad = 0
        self.dropped = 0
        self._clock = clock
        self._timings: deque[dict[str, float]] = deque(maxlen=window)
        self._times: deque[float] = deque(maxlen=window)

    def add_result(self, timings_ms: dict[str, float]) -> None:
        self.published += 1
        self._timings.append(dict(timings_ms))
        self._times.append(self._clock())

    def fps(self) -> float:
        """Results per second from the window's first result until now (0 with fewer than two results).

        Measured up to now rather than to the last result, so a camera that stopped shows a falling rate instead of
        its last one.
        """
        if len(self._times) < 2:
            return 0.0
        span = max(self._clock(), self._times[-1]) - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def stage_ms(self) -> dict[str, dict[str, float]]:
        """{stage: {mean, p50, p95}} over the window, for every stage the results reported."""
        stages = dict.fromkeys(k for t in self._timings for k in t)
        return {s: summarize([t[s] for t in self._timings if s in t]) for s in stages}

    def summary(self) -> dict[str, object]:
        stage_ms = self.stage_ms()
        return {
            "received": self.received,
            "published": self.published,
            "skipped_bad": self.skipped_bad,
            "dropped": self.dropped,
            "fps": self.fps(),
            "latency_ms": stage_ms.get("total", summarize([])),
            "stage_ms": stage_ms,
        }


def summarize(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0}
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95))}
