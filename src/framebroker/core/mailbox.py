"""A bounded mailbox for one reader: what may be dropped is bounded, what must arrive is kept.

Everywhere the server hands messages to someone who may read slowly (a bus subscriber, a
WebSocket listener, a WebRTC signaling client) the rule is the same: a slow reader loses its
oldest *droppable* messages (frames, predictions), never the ones it must see (events,
answers, results), and never slows the writer. :class:`Mailbox` is that rule, once.

Two reading orders: in arrival order (a subscriber that must see results in sequence), or
``kept_first`` (a socket that sends small control messages ahead of queued frames).
No I/O and no event loop: ``wake`` is called after each put (the async layer sets an event).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import count
from typing import Generic, TypeVar

__all__ = ["Mailbox"]

T = TypeVar("T")


class Mailbox(Generic[T]):
    """At most ``maxlen`` messages: past it, the oldest droppable one goes (counted in
    ``dropped``); with none to drop, the box holds more for a while, kept messages being
    never dropped for room, except past ``max_kept`` of them (then the oldest kept goes,
    counted too). Raises ``ValueError`` for a bound below 1.

    Not thread-safe by itself: a writer on another thread holds a lock around :meth:`put`
    (the bus does).
    """

    def __init__(
        self,
        maxlen: int,
        *,
        kept_first: bool = False,
        max_kept: int | None = None,
        wake: Callable[[], object] | None = None,
    ) -> None:
        if maxlen < 1 or (max_kept is not None and max_kept < 1):
            raise ValueError(f"bounds must be >= 1, got maxlen={maxlen}, max_kept={max_kept}")
        self.maxlen = maxlen
        self.max_kept = max_kept
        self.kept_first = kept_first
        self.wake = wake
        self.dropped = 0
        self._kept: deque[tuple[int, T]] = deque()
        self._droppable: deque[tuple[int, T]] = deque()
        self._seq = count()

    def __len__(self) -> int:
        return len(self._kept) + len(self._droppable)

    def put(self, item: T, *, keep: bool = False) -> None:
        """Queue ``item``; ``keep``: it must arrive (see the class docstring)."""
        if len(self) >= self.maxlen and self._droppable:
            self._droppable.popleft()
            self.dropped += 1
        if keep and self.max_kept is not None and len(self._kept) >= self.max_kept:
            self._kept.popleft()
            self.dropped += 1
        (self._kept if keep else self._droppable).append((next(self._seq), item))
        if self.wake is not None:
            self.wake()

    def take(self) -> T | None:
        """The next message, or ``None`` when empty."""
        kept, droppable = self._kept, self._droppable
        if not kept and not droppable:
            return None
        if not droppable or (kept and (self.kept_first or kept[0][0] < droppable[0][0])):
            return kept.popleft()[1]
        return droppable.popleft()[1]

    def drain(self) -> list[T]:
        """Every queued message, in reading order."""
        out = []
        while (item := self.take()) is not None:
            out.append(item)
        return out

    def clear(self) -> None:
        self._kept.clear()
        self._droppable.clear()
