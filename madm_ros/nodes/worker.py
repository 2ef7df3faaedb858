"""The hand-over between a subscription callback and inference: one slot, newest frame wins.

A callback must never wait for the network (events would pile up in DDS and arrive late), so it
puts its frame in :class:`LatestSlot` and returns; an inference thread takes frames out. When
inference is slower than the input, the frame waiting in the slot is replaced and counted as
dropped, so the latency stays one frame and memory stays bounded under any input rate.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["LatestSlot"]


class LatestSlot:
    """A one-item queue whose ``put`` replaces (and counts) an item nobody took yet."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Offer ``item``; returns True when it replaced a waiting item (one dropped frame)."""
        with self._condition:
            replaced = self._item is not None
            self.dropped += replaced
            self._item = item
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The waiting item (removed), or ``None`` after ``timeout`` seconds or once closed."""
        with self._condition:
            if self._item is None and not self._closed:
                self._condition.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake every waiting ``take`` for good (it returns ``None``); waiting items are discarded."""
        with self._condition:
            self._closed = True
            self._item = None
            self._condition.notify_all()
