"""`FrameSlot`: the newest-wins hand-off between a subscription callback and the inference worker. ROS-free.

A camera publishes at its own rate; inference runs at whatever rate the device allows. The callback must never wait
for inference (it would back up the middleware's queue and make every later frame late), so it puts each message
here and returns. When the worker is slower than the camera the oldest unprocessed message is replaced and counted
as dropped: the worker always gets the most recent frames, and latency stays one inference long, not a growing queue.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FrameSlot(Generic[T]):
    """Holds up to `capacity` unprocessed items; `put` never waits, `take` waits for an item or `close`.

    Args:
        capacity: items held at once; 1 (newest wins) keeps latency lowest, more smooths out bursts.

    Raises:
        ValueError: capacity < 1.
    """

    def __init__(self, capacity: int = 1):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._received = 0
        self._dropped = 0

    @property
    def received(self) -> int:
        """Items put before `close()`."""
        return self._received

    @property
    def dropped(self) -> int:
        """Items that were never taken: replaced by newer ones, or still waiting when the slot closed."""
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> bool:
        """Hand `item` to the consumer without waiting for it.

        Returns:
            True when the slot was full and its oldest item was dropped to make room. After `close()` the item is
            ignored (not counted) and False is returned.
        """
        with self._ready:
            if self._closed:
                return False
            self._received += 1
            replaced = len(self._items) >= self.capacity
            if replaced:
                self._items.popleft()
                self._dropped += 1
            self._items.append(item)
            self._ready.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The oldest waiting item, waiting for one to arrive.

        Args:
            timeout: seconds to wait at most (None: until an item arrives or the slot closes).

        Returns:
            The item, or None once the slot is closed or `timeout` has passed.
        """
        with self._ready:
            if not self._ready.wait_for(lambda: self._items or self._closed, timeout) or self._closed:
                return None
            return self._items.popleft()

    def close(self) -> int:
        """Refuse further items and wake every waiting `take` (it returns None).

        Returns:
            How many waiting items were discarded (they count as dropped).
        """
        with self._ready:
            self._closed = True
            discarded = len(self._items)
            self._dropped += discarded
            self._items.clear()
            self._ready.notify_all()
            return discarded
