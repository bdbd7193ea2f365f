"""A queue bounded by the bytes it holds, not by a count: what waits in a server's memory (captured bodies, decoded
shadow images) must stay below the pod's memory limit whatever the images' sizes, and a count bound cannot promise
that (256 bodies of up to 16 MiB are 4 GiB). A producer never waits: a put that would pass the bound is refused, and
the caller counts the drop.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class ByteBoundedQueue(Generic[T]):
    """FIFO of (item, size in bytes): `put` refuses (False) what would pass `max_bytes`, never blocks; `get` blocks
    until an item comes, the timeout passes or the queue is closed."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.closed = False
        self._items: deque[tuple[T, int]] = deque()
        self._ready = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, size: int) -> bool:
        """Queue `item` when its `size` fits under the bound and the queue is open; False otherwise (drop it)."""
        with self._ready:
            if self.closed or self.bytes + size > self.max_bytes:
                return False
            self._items.append((item, size))
            self.bytes += size
            self._ready.notify()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None when `timeout` seconds passed with none, or the queue is closed and empty."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._items or self.closed, timeout):
                return None
            if not self._items:
                return None
            item, size = self._items.popleft()
            self.bytes -= size
            return item

    def drain(self) -> list[T]:
        """Take every queued item at once (to count them as dropped, or to finish them before a stop)."""
        with self._ready:
            items = [item for item, _ in self._items]
            self._items.clear()
            self.bytes = 0
            return items

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, cut short by `close` (a back-off that must not delay a shutdown)."""
        with self._ready:
            return self._ready.wait_for(lambda: self.closed, timeout)

    def close(self) -> None:
        """Refuse new items and wake every `get`; what is queued can still be taken."""
        with self._ready:
            self.closed = True
            self._ready.notify_all()
