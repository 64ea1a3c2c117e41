"""RunStats: the figures behind /diagnostics and replay's stats.json."""

from __future__ import annotations

import pytest

from wsvs_ros.stats import RunStats, with_decode


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_latency_percentiles_and_fps_over_the_window() -> None:
    clock = FakeClock()
    stats = RunStats(window=4, clock=clock)
    for i, ms in enumerate((10.0, 20.0, 30.0, 40.0, 50.0)):
        clock.now = i * 0.1
        stats.add_result({"flow": ms / 2, "total": ms})
    summary = stats.summary()
    assert summary["published"] == 5
    assert summary["latency_ms"]["mean"] == pytest.approx(35.0)  # the last four: 20, 30, 40, 50
    assert summary["stage_ms"]["flow"]["p50"] == pytest.approx(17.5)
    assert summary["fps"] == pytest.approx(10.0)


def test_empty_stats_are_zeros_not_errors() -> None:
    summary = RunStats().summary()
    assert summary["fps"] == 0.0 and summary["latency_ms"] == {"mean": 0.0, "p50": 0.0, "p95": 0.0}


def test_fps_falls_when_results_stop_coming() -> None:
    clock = FakeClock()
    stats = RunStats(window=10, clock=clock)
    for i in range(10):
        clock.now = i * 0.1
        stats.add_result({"total": 1.0})
    assert stats.fps() == pytest.approx(10.0)
    clock.now = 9.0  # the camera went quiet 8 s ago
    assert stats.fps() == pytest.approx(1.0)


def test_decode_time_is_a_stage_and_part_of_the_total() -> None:
    timings = {"flow": 3.0, "network": 2.0, "total": 5.0}
    assert with_decode(timings, 1.5) == {"flow": 3.0, "network": 2.0, "total": 6.5, "decode": 1.5}
    assert timings["total"] == 5.0  # the result's own timings are not changed
