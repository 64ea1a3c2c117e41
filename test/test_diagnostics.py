"""/diagnostics content: stable keys, counts, latency per stage; WARN only while warming or when frames were lost."""

from __future__ import annotations

from wsvs_ros.node.diagnostics import DiagnosticsReporter, Level
from wsvs_ros.stats import RunStats

TIMINGS = {"preprocess": 1.0, "flow": 2.0, "network": 3.0, "postprocess": 1.0, "total": 7.0}


def stats_with_results(n: int, *, period: float = 0.1) -> RunStats:
    """`n` results `period` seconds apart, read just as the last one arrived."""
    now = [0.0]
    stats = RunStats(clock=lambda: now[0])
    for i in range(n):
        now[0] = i * period
        stats.received += 1
        stats.add_result(TIMINGS)
    return stats


def test_before_the_first_frame_the_node_is_warming_up() -> None:
    report = DiagnosticsReporter().report(RunStats(), flows_computed=0, resets=0, warming=True)
    assert report.level == Level.WARN
    assert report.message == "warming up: no frame segmented yet"
    values = dict(report.values)
    assert values["published"] == "0" and values["warming"] == "true" and values["fps"] == "0.00"
    assert not any(key.startswith("latency_") for key in values)


def test_a_steady_run_is_ok_and_reports_counts_fps_and_latency_per_stage() -> None:
    stats = stats_with_results(11, period=0.1)
    report = DiagnosticsReporter().report(stats, flows_computed=10, resets=1, warming=False)
    assert report.level == Level.OK
    assert report.message == "segmenting at 10.0 fps"
    values = dict(report.values)
    assert values["fps"] == "10.00"
    assert values["received"] == values["published"] == "11"
    assert (values["flows_computed"], values["resets"], values["warming"]) == ("10", "1", "false")
    assert (values["dropped"], values["skipped_bad"]) == ("0", "0")
    for stage, ms in TIMINGS.items():
        assert values[f"latency_{stage}_mean_ms"] == values[f"latency_{stage}_p95_ms"] == f"{ms:.2f}"


def test_a_window_that_is_not_full_yet_is_reported_as_warming() -> None:
    report = DiagnosticsReporter().report(stats_with_results(3), flows_computed=2, resets=0, warming=True)
    assert report.level == Level.WARN
    assert report.message == "warming up: flow window not full"


def test_drops_and_skips_warn_in_the_period_they_happen_and_counts_stay_cumulative() -> None:
    reporter = DiagnosticsReporter()
    stats = stats_with_results(5)
    assert reporter.report(stats, flows_computed=4, resets=0, warming=False).level == Level.OK

    stats.dropped += 3
    stats.skipped_bad += 1
    report = reporter.report(stats, flows_computed=4, resets=0, warming=False)
    assert report.level == Level.WARN
    assert "dropped 3 frame(s)" in report.message and "skipped 1 frame(s)" in report.message

    report = reporter.report(stats, flows_computed=4, resets=0, warming=False)
    assert report.level == Level.OK
    assert (dict(report.values)["dropped"], dict(report.values)["skipped_bad"]) == ("3", "1")


def test_warming_and_a_skipped_frame_are_both_named() -> None:
    stats = stats_with_results(1)
    stats.skipped_bad = 2
    report = DiagnosticsReporter().report(stats, flows_computed=0, resets=0, warming=True)
    assert report.level == Level.WARN
    assert report.message == "warming up: flow window not full; skipped 2 frame(s) that could not be decoded"


def test_frames_that_all_arrive_and_are_all_rejected_are_an_error_with_the_count_and_reason() -> None:
    reporter = DiagnosticsReporter()
    stats = RunStats()
    stats.received = stats.skipped_bad = 30
    reason = "unsupported image encoding 'nv12'"
    report = reporter.report(stats, flows_computed=0, resets=0, warming=True, last_skip_reason=reason)
    assert report.level == Level.ERROR
    assert report.message == f"rejecting every frame: 30 skipped as bad, none segmented; last: {reason}"
    assert "warming" not in report.message
    assert dict(report.values)["last_skip_reason"] == reason


def test_a_run_that_segments_again_after_rejected_frames_is_back_to_warn_then_ok() -> None:
    reporter = DiagnosticsReporter()
    stats = RunStats()
    stats.received = stats.skipped_bad = 3
    assert reporter.report(stats, flows_computed=0, resets=0, warming=True, last_skip_reason="bad").level == Level.ERROR
    stats.received += 2
    stats.skipped_bad += 1
    stats.add_result(TIMINGS)
    report = reporter.report(stats, flows_computed=0, resets=0, warming=False, last_skip_reason="bad")
    assert report.level == Level.WARN and report.message == "skipped 1 frame(s) that could not be decoded; last: bad"
    assert reporter.report(stats, flows_computed=0, resets=0, warming=False).level == Level.OK


def test_levels_match_diagnostic_msgs() -> None:
    # diagnostic_msgs/DiagnosticStatus: OK=0, WARN=1, ERROR=2
    assert (int(Level.OK), int(Level.WARN), int(Level.ERROR)) == (0, 1, 2)
