"""A session's queue of frames waiting for the pipeline, with an explicit backpressure policy.

Pure data structure: it decides what is kept and what is dropped; whoever drives it (the
async runtime, or a test) decides when to take.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum
from typing import Generic, TypeVar

from ..errors import CapacityExceeded

__all__ = ["Backpressure", "Inbox"]

T = TypeVar("T")


class Backpressure(StrEnum):
    """What happens when frames arrive faster than the pipeline runs.

    ``WAIT``: every frame is kept and processed in order (request/response transports, where
    the client waits for its answer); past ``capacity`` new frames are refused.
    ``LATEST``: only the newest ``capacity`` frames are kept; older ones are dropped and
    counted (live media, where a stale frame is worth nothing).
    ``NEWEST``: every processor takes the newest frame it can keep up with, side by side
    with the others, so a slow one slows only itself (live media to independent models).
    Its frames are *offered*, never waited on; no inbox holds them.
    """

    WAIT = "wait"
    LATEST = "latest"
    NEWEST = "newest"


class Inbox(Generic[T]):
    def __init__(self, policy: Backpressure, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"inbox capacity must be >= 1, got {capacity}")
        self.policy = policy
        self.capacity = capacity
        self._items: deque[T] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T) -> list[T]:
        """Queue ``item``; returns the items dropped to make room (only under ``LATEST``).

        Raises :class:`CapacityExceeded` under ``WAIT`` when the inbox is full.
        """
        evicted: list[T] = []
        if len(self._items) >= self.capacity:
            if self.policy is Backpressure.WAIT:
                raise CapacityExceeded(
                    f"session has {len(self._items)} frames waiting, the limit is {self.capacity}"
                )
            while len(self._items) >= self.capacity:
                evicted.append(self._items.popleft())
            self.dropped += len(evicted)
        self._items.append(item)
        return evicted

    def take(self) -> T | None:
        """The oldest kept item, or ``None`` when empty."""
        return self._items.popleft() if self._items else None

    def clear(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items
