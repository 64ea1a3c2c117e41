"""FrameSlot: the subscription callback never waits for inference; the worker always gets the newest frames."""

from __future__ import annotations

import threading
import time

import pytest

from wsvs_ros.node.frame_slot import FrameSlot


def test_a_newer_frame_replaces_an_unprocessed_one_and_counts_a_drop() -> None:
    slot: FrameSlot[str] = FrameSlot()
    assert slot.put("a") is False
    assert slot.put("b") is True
    assert slot.take(timeout=0) == "b"
    assert (slot.received, slot.dropped) == (2, 1)


def test_a_larger_capacity_keeps_the_newest_frames_in_order() -> None:
    slot: FrameSlot[int] = FrameSlot(capacity=3)
    replaced = [slot.put(i) for i in range(5)]
    assert replaced == [False, False, False, True, True]
    assert [slot.take(timeout=0) for _ in range(3)] == [2, 3, 4]
    assert slot.take(timeout=0) is None
    assert (slot.received, slot.dropped) == (5, 2)


def test_take_waits_for_the_next_frame() -> None:
    slot: FrameSlot[str] = FrameSlot()
    threading.Timer(0.05, slot.put, args=("late",)).start()
    assert slot.take(timeout=5.0) == "late"


def test_take_gives_up_after_its_timeout() -> None:
    slot: FrameSlot[str] = FrameSlot()
    start = time.monotonic()
    assert slot.take(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04


def test_close_wakes_a_waiting_consumer() -> None:
    slot: FrameSlot[str] = FrameSlot()
    got: list[str | None] = []
    consumer = threading.Thread(target=lambda: got.append(slot.take()))  # no timeout: only close() can end it
    consumer.start()
    time.sleep(0.05)
    assert consumer.is_alive()
    slot.close()
    consumer.join(timeout=5.0)
    assert not consumer.is_alive() and got == [None]


def test_close_discards_waiting_frames_as_dropped_and_refuses_new_ones() -> None:
    slot: FrameSlot[str] = FrameSlot(capacity=2)
    slot.put("a")
    slot.put("b")
    assert slot.close() == 2
    assert slot.put("c") is False
    assert slot.take(timeout=0) is None
    assert slot.closed and (slot.received, slot.dropped) == (2, 2)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        FrameSlot(capacity=0)


def test_a_fast_producer_never_waits_for_a_slow_consumer_and_every_frame_is_accounted_for() -> None:
    """A camera at full speed against a consumer that needs 2 ms a frame (4 s for all of them, one by one)."""
    slot: FrameSlot[int] = FrameSlot()
    n = 2000
    taken: list[int] = []

    def consume() -> None:
        while (item := slot.take()) is not None:
            taken.append(item)
            if item == n - 1:
                return
            time.sleep(0.002)  # inference, holding no lock

    consumer = threading.Thread(target=consume)
    consumer.start()
    start = time.monotonic()
    for i in range(n):
        slot.put(i)
    producing = time.monotonic() - start
    consumer.join(timeout=10.0)
    assert not consumer.is_alive()

    assert producing < 1.0  # far below the 4 s that waiting for the consumer would take
    assert taken[-1] == n - 1  # the newest frame always gets through
    assert taken == sorted(set(taken))  # in order, none twice
    assert slot.dropped > 0
    assert slot.received == n == len(taken) + slot.dropped
