"""FlowWindow: one flow per frame, the L most recent flows in temporal order, alignment and resets."""

from __future__ import annotations

import pytest
import torch

from wsvs_ros.flow.window import FlowWindow


class CountingFlow:
    """Flow i (frame i-1 -> i) is the constant (x = i, y = -i): every flow is distinct and identifies its frame."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        i = cur[0, 0, 0, 0]
        return torch.stack([torch.full_like(cur[:, 0], 1.0) * i, torch.full_like(cur[:, 0], -1.0) * i], dim=1)


def frame(i: int, h: int = 4, w: int = 6) -> torch.Tensor:
    return torch.full((1, 3, h, w), float(i))


def flow_ids(flows: torch.Tensor) -> list[int]:
    """Which frame each of the L flows in (1, 2L, H, W) belongs to (0 = missing)."""
    x = flows[0, 0::2, 0, 0]
    assert torch.equal(flows[0, 1::2, 0, 0], -x), "x and y channels must stay paired"
    return [int(v) for v in x]


def test_n_pushed_frames_compute_n_minus_1_flows() -> None:
    fn = CountingFlow()
    win = FlowWindow(fn, length=10)
    for i in range(1, 26):
        win.push(frame(i), stamp=i * 0.1)
    assert fn.calls == win.flows_computed == 24


def test_window_holds_the_L_most_recent_flows_oldest_first() -> None:
    win = FlowWindow(CountingFlow(), length=4)
    for i in range(1, 16):
        (sample,) = win.push(frame(i), stamp=i * 0.1)
    assert flow_ids(sample.flows) == [12, 13, 14, 15]
    assert sample.flows.shape == (1, 8, 4, 6)
    assert not sample.warming
    assert torch.equal(sample.frame, frame(15))


def test_missing_flows_are_zeros_while_warming_up() -> None:
    win = FlowWindow(CountingFlow(), length=4)
    (first,) = win.push(frame(1), stamp=0.1)
    assert flow_ids(first.flows) == [0, 0, 0, 0] and first.warming
    (second,) = win.push(frame(2), stamp=0.2)
    assert flow_ids(second.flows) == [0, 0, 0, 2] and second.warming
    win.push(frame(3), stamp=0.3)
    (fourth,) = win.push(frame(4), stamp=0.4)
    assert flow_ids(fourth.flows) == [0, 2, 3, 4] and fourth.warming
    (fifth,) = win.push(frame(5), stamp=0.5)
    assert flow_ids(fifth.flows) == [2, 3, 4, 5] and not fifth.warming


def test_centered_window_returns_frame_t_with_flows_of_t_minus_half_to_t_plus_half() -> None:
    # Paper 3.2: flows of frames (t - L/2, t + L/2]; with L = 4 frame t gets flows t-1 .. t+2, two frames late.
    win = FlowWindow(CountingFlow(), length=4, window="centered")
    assert win.push(frame(1), stamp=0.1) == []
    assert win.push(frame(2), stamp=0.2) == []
    out = []
    for i in range(3, 9):
        (sample,) = win.push(frame(i), stamp=i * 0.1)
        out.append(sample)
    t6 = out[5]  # pushed frames 3..8 returned frames 1..6
    assert t6.stamp == pytest.approx(0.6) and torch.equal(t6.frame, frame(6))
    assert flow_ids(t6.flows) == [5, 6, 7, 8]


def test_flush_drains_a_centered_window_with_future_flows_zeroed() -> None:
    win = FlowWindow(CountingFlow(), length=4, window="centered")
    for i in range(1, 9):
        win.push(frame(i), stamp=i * 0.1)
    tail = win.flush()
    assert [s.stamp for s in tail] == pytest.approx([0.7, 0.8])
    assert flow_ids(tail[0].flows) == [6, 7, 8, 0]
    assert flow_ids(tail[1].flows) == [7, 8, 0, 0]
    assert all(s.warming for s in tail)
    assert win.flush() == []


def test_flush_of_a_clip_shorter_than_half_the_window_keeps_alignment() -> None:
    win = FlowWindow(CountingFlow(), length=6, window="centered")  # frame t gets flows t-2 .. t+3
    win.push(frame(1), stamp=0.1)
    win.push(frame(2), stamp=0.2)
    first, second = win.flush()
    assert flow_ids(first.flows) == [0, 0, 0, 2, 0, 0]  # frame 1: flows -1, 0, 1 missing, 2, then 3, 4 missing
    assert flow_ids(second.flows) == [0, 0, 2, 0, 0, 0]  # frame 2: flows 0, 1 missing, 2, then 3, 4, 5 missing


@pytest.mark.parametrize(
    ("second_frame", "second_stamp", "reason"),
    [
        (frame(2, h=8, w=6), 0.2, "image size changed"),
        (frame(2), 0.05, "time went backwards"),
        (frame(2), 5.0, "gap longer than max_gap"),
    ],
)
def test_window_restarts_on_reset_conditions(second_frame: torch.Tensor, second_stamp: float, reason: str) -> None:
    fn = CountingFlow()
    win = FlowWindow(fn, length=4, max_gap=1.0)
    win.push(frame(1), stamp=0.1)
    (sample,) = win.push(second_frame, stamp=second_stamp)
    assert win.resets == 1, reason
    assert fn.calls == 0, "no flow may be computed across a reset"
    assert flow_ids(sample.flows) == [0, 0, 0, 0] and sample.warming
    (after,) = win.push(frame(3, *second_frame.shape[-2:]), stamp=second_stamp + 0.1)
    assert flow_ids(after.flows) == [0, 0, 0, 3]


def test_small_gaps_and_equal_sizes_do_not_reset() -> None:
    win = FlowWindow(CountingFlow(), length=4, max_gap=1.0)
    for i, t in enumerate([0.0, 0.9, 1.8, 2.7], start=1):
        win.push(frame(i), stamp=t)
    assert win.resets == 0 and win.flows_computed == 3


def test_reset_drains_a_centered_window_so_no_frame_is_lost() -> None:
    win = FlowWindow(CountingFlow(), length=4, window="centered", max_gap=1.0)
    stamps = []
    for i in range(1, 6):
        stamps += [s.stamp for s in win.push(frame(i), stamp=i * 0.1)]
    stamps += [s.stamp for s in win.push(frame(6), stamp=10.0)]  # gap: frames 4 and 5 come out now
    stamps += [s.stamp for s in win.flush()]
    assert stamps == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 10.0])
    assert win.resets == 1


def test_bad_frames_and_stamps_are_refused() -> None:
    win = FlowWindow(CountingFlow(), length=4)
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        win.push(torch.zeros(3, 4, 6), stamp=0.0)
    with pytest.raises(ValueError, match="finite"):
        win.push(frame(1), stamp=float("nan"))
    with pytest.raises(ValueError, match="even"):
        FlowWindow(CountingFlow(), length=5, window="centered")
