"""Publish/subscribe for results, stats, events and frames, with a bounded queue per subscriber.

A slow subscriber loses its oldest messages (counted in ``dropped``); it never slows the
publisher or the other subscribers. The bus holds no event loop: a subscriber may pass a
``wake`` callback that the publisher calls after queueing, which is how the async runtime
turns it into an awaitable stream. Publishing is thread-safe (pipelines publish from worker
threads).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .mailbox import Mailbox

__all__ = ["Bus", "Message", "Subscription"]


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: Any


@dataclass(eq=False)
class Subscription:
    """A subscriber's bounded mailbox (:class:`~.mailbox.Mailbox`, in arrival order) for
    topics matching ``pattern``.

    ``pattern`` is a topic or a prefix ending in ``*`` (``"session/abc/*"``, ``"*"``).
    A message ``keep`` says yes to is never dropped for room: only the others are bounded by
    ``maxlen``, and the oldest of them goes. For the rare messages a subscriber must see (an
    event starting), among many it may skip.
    """

    pattern: str
    maxlen: int
    wake: Callable[[], object] | None = None
    keep: Callable[[Message], bool] | None = None
    _box: Mailbox[Message] = field(init=False)
    _bus: Bus | None = None

    def __post_init__(self) -> None:
        self._box = Mailbox(self.maxlen)

    @property
    def dropped(self) -> int:
        return self._box.dropped

    def matches(self, topic: str) -> bool:
        if self.pattern.endswith("*"):
            return topic.startswith(self.pattern[:-1])
        return topic == self.pattern

    def put(self, message: Message) -> None:
        self._box.put(message, keep=self.keep is not None and self.keep(message))

    def drain(self) -> list[Message]:
        """Every queued message, oldest first."""
        return self._box.drain()

    def get_nowait(self) -> Message | None:
        return self._box.take()

    def __len__(self) -> int:
        return len(self._box)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.unsubscribe(self)


class Bus:
    def __init__(self, default_maxlen: int = 64) -> None:
        if default_maxlen < 1:
            raise ValueError(f"default_maxlen must be >= 1, got {default_maxlen}")
        self.default_maxlen = default_maxlen
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(
        self,
        pattern: str,
        *,
        maxlen: int | None = None,
        wake: Callable[[], object] | None = None,
        keep: Callable[[Message], bool] | None = None,
    ) -> Subscription:
        sub = Subscription(pattern, maxlen or self.default_maxlen, wake, keep)
        sub._bus = self
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
        sub._bus = None

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def has_subscribers(self, topic: str) -> bool:
        """Lets a publisher skip building a costly payload nobody will read."""
        return any(s.matches(topic) for s in self._subs)

    def publish(self, topic: str, payload: Any) -> int:
        """Queue ``payload`` for every matching subscriber; returns how many got it."""
        message = Message(topic, payload)
        with self._lock:
            targets = [s for s in self._subs if s.matches(topic)]
            for s in targets:
                s.put(message)
            self.published += 1
        for s in targets:
            if s.wake is not None:
                s.wake()
        return len(targets)
