"""The bus as the event loop sees it: a subscription that can be awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..core.bus import Bus, Message

__all__ = ["BusFeed"]


class BusFeed:
    """A :class:`~framebroker.core.Bus` subscription whose arrivals wake an awaiting task.

    Publishers may run in worker threads, so the wake goes through the loop's thread-safe
    call; the subscription itself stays the bus's bounded mailbox (see
    :class:`~framebroker.sessions.Feed`). Make it on the event loop.
    """

    def __init__(
        self,
        bus: Bus,
        pattern: str,
        *,
        maxlen: int | None = None,
        keep: Callable[[Message], bool] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._sub = bus.subscribe(
            pattern,
            maxlen=maxlen,
            wake=lambda: loop.call_soon_threadsafe(self._event.set),
            keep=keep,
        )

    @property
    def dropped(self) -> int:
        return self._sub.dropped

    async def wait(self) -> None:
        while not len(self._sub):
            await self._event.wait()
            self._event.clear()

    def drain(self) -> list[Message]:
        return self._sub.drain()

    def close(self) -> None:
        self._sub.close()
