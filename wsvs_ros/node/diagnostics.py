"""What the node reports on /diagnostics: one status (level, message, key/values) per period. ROS-free.

The node turns a `DiagnosticReport` into a `diagnostic_msgs/DiagnosticStatus`; the keys are stable so dashboards
and `ros2 topic echo /diagnostics` scripts can rely on them:

    fps, received, published, dropped, skipped_bad, resets, flows_computed, warming,
    last_skip_reason                                  once a frame was skipped: why the latest one was
    latency_<stage>_mean_ms, latency_<stage>_p95_ms   for each stage the results reported (decode, preprocess,
                                                      flow, network, crf, postprocess) and "total"
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from wsvs_ros.stats import RunStats


class Level(IntEnum):
    """The levels of diagnostic_msgs/DiagnosticStatus this node reports (same values as the message's)."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class DiagnosticReport:
    """One period's status.

    Attributes:
        level: ERROR when every frame since the previous report was rejected (skipped as bad) and none segmented;
            WARN while warming up or when frames were dropped or skipped since the previous report; OK otherwise.
        message: one line saying why the level is what it is.
        values: (key, value) pairs, values formatted as text as DiagnosticStatus wants them.
    """

    level: Level
    message: str
    values: tuple[tuple[str, str], ...]


class DiagnosticsReporter:
    """Builds one report per period; drops and skips raise the level only in the period they happened in.

    Counts are cumulative in the values (a dashboard can difference them), but a single dropped frame an hour ago
    should not keep the node WARN forever, so the level compares with the counts of the previous report.
    """

    def __init__(self) -> None:
        self._last_dropped = 0
        self._last_skipped = 0
        self._last_received = 0
        self._last_published = 0

    def report(
        self,
        stats: RunStats,
        *,
        flows_computed: int,
        resets: int,
        warming: bool,
        last_skip_reason: str | None = None,
    ) -> DiagnosticReport:
        """The status for the period since the previous call.

        Args:
            stats: the run's counters and latency window (read, not changed).
            flows_computed: optical flows the segmenter has computed (one per frame after the first).
            resets: times the flow window restarted (time going backwards, a gap over max_gap, a new image size).
            warming: the newest result had fewer than L real flows, or there is no result yet.
            last_skip_reason: why the latest skipped frame was refused (the ImageDecodeError's message).
        """
        new_dropped = stats.dropped - self._last_dropped
        new_skipped = stats.skipped_bad - self._last_skipped
        new_received = stats.received - self._last_received
        new_published = stats.published - self._last_published
        self._last_dropped, self._last_skipped = stats.dropped, stats.skipped_bad
        self._last_received, self._last_published = stats.received, stats.published
        fps = stats.fps()
        last = f"; last: {last_skip_reason}" if last_skip_reason else ""

        problems = []
        # Frames arrive but none gets through: the camera sends something this node cannot read (or too large a
        # frame); "warming up" would hide that.
        rejecting = new_skipped > 0 and new_published == 0 and 0 < new_received - new_dropped <= new_skipped
        if new_dropped > 0:
            problems.append(f"dropped {new_dropped} frame(s) arriving faster than inference")
        if rejecting:
            problems.insert(0, f"rejecting every frame: {new_skipped} skipped as bad, none segmented{last}")
        elif new_skipped > 0:
            problems.append(f"skipped {new_skipped} frame(s) that could not be decoded{last}")
        if warming and not rejecting:
            problems.insert(
                0, "warming up: no frame segmented yet" if stats.published == 0 else "warming up: flow window not full"
            )
        level = Level.ERROR if rejecting else Level.WARN if problems else Level.OK
        message = "; ".join(problems) if problems else f"segmenting at {fps:.1f} fps"

        values = [
            ("fps", f"{fps:.2f}"),
            ("received", str(stats.received)),
            ("published", str(stats.published)),
            ("dropped", str(stats.dropped)),
            ("skipped_bad", str(stats.skipped_bad)),
            ("resets", str(resets)),
            ("flows_computed", str(flows_computed)),
            ("warming", "true" if warming else "false"),
        ]
        if last_skip_reason:
            values.append(("last_skip_reason", last_skip_reason))
        for stage, summary in stats.stage_ms().items():
            values.append((f"latency_{stage}_mean_ms", f"{summary['mean']:.2f}"))
            values.append((f"latency_{stage}_p95_ms", f"{summary['p95']:.2f}"))
        return DiagnosticReport(level=level, message=message, values=tuple(values))
