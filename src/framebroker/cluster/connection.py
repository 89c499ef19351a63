"""The Redis client as the cluster's parts want it, and what they share to fail well.

Every call the cluster makes to Redis is bounded in time and never retried behind its back:
redis-py's default client retries a failed command three times with backoff, which turns a
Redis that stopped answering into a caller stuck for seconds it did not budget. Here a call
fails fast (:func:`connect`: no retries; :func:`guarded`: a deadline); the directory turns
the failure into :class:`~framebroker.errors.ClusterUnavailable`, and the long-running loops
(the bus's readers and writer, heartbeats, leases) retry on their own :class:`Backoff` and
count it.

Refusals of bad input from inside the cluster (an entry of an unknown version, a malformed
message) are counted by reason and logged at the 1st, 2nd, 4th, 8th ... occurrence of each, so
a node flooded with bad messages logs a handful of lines, not one per message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ClusterUnavailable

__all__ = [
    "REDIS_ERRORS",
    "UNAVAILABLE",
    "Backoff",
    "Refusals",
    "connect",
    "describe",
    "guarded",
    "stop_task",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OSError,
)
"""What a call raises when Redis is down, restarting, frozen or unreachable (as opposed to a
command Redis refused, a ``ResponseError``, which is a bug to surface)."""


def connect(
    url: str,
    *,
    timeout_s: float = 1.0,
    max_connections: int = 32,
    name: str | None = None,
) -> Redis:
    """An asyncio client for ``url`` (``redis://host:port/db``): connecting bounded by
    ``timeout_s``, no hidden retries, at most ``max_connections`` connections (a call waits
    up to ``timeout_s`` for one to be free). ``name`` is shown by ``CLIENT LIST``.

    Reads and writes carry no socket timeout of their own: every caller bounds its calls
    with ``asyncio.timeout`` (:func:`guarded`). redis-py bounds a write with
    ``asyncio.wait_for`` when a socket timeout is set, and on Python 3.11 ``wait_for`` loses
    a cancellation that arrives as the write completes (fixed in 3.12): about one task in
    three, cancelled while it talks to Redis, carried on as if never cancelled, and a
    shutdown that cancels its loops waited forever.

    Raises ``ValueError`` for a bound below its minimum.
    """
    if timeout_s <= 0 or max_connections < 2:
        raise ValueError(
            f"need timeout_s > 0 and max_connections >= 2, got {timeout_s}, {max_connections}"
        )
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=None,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
    )
    return Redis.from_pool(pool)  # closing the client closes its pool


async def guarded(operation: str, call: Callable[[], Awaitable[T]], *, timeout_s: float) -> T:
    """``await call()`` within ``timeout_s``; a Redis that is down or slow becomes
    :class:`ClusterUnavailable` naming ``operation``."""
    try:
        async with asyncio.timeout(timeout_s):
            return await call()
    except UNAVAILABLE as e:
        raise ClusterUnavailable(
            f"the cluster's Redis did not answer ({operation}): {type(e).__name__}: {e}",
            operation=operation,
        ) from e


async def stop_task(task: asyncio.Task[Any], *, timeout_s: float) -> None:
    """Cancel ``task`` and wait for it to end, at most ``timeout_s`` (then it is left to
    end on its own, and the log says so)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("task %s did not stop within %.1f s of its cancellation", task, timeout_s)
    elif not task.cancelled() and task.exception() is not None:
        log.error("task %s had failed", task, exc_info=task.exception())


class Backoff:
    """Waits that double from ``first_s`` to ``max_s``, with jitter (so nodes that lost
    Redis together do not all reconnect in the same millisecond)."""

    def __init__(self, first_s: float = 0.05, max_s: float = 2.0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got {first_s}, {max_s}")
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def reset(self) -> None:
        self._next = self.first_s

    def next_delay(self) -> float:
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self.max_s, self._next * 2)
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())


class Refusals:
    """Counts refused input by reason; logs the 1st, 2nd, 4th, 8th ... of each reason."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.counts: dict[str, int] = {}

    def refuse(self, reason: str, detail: str) -> None:
        n = self.counts.get(reason, 0) + 1
        self.counts[reason] = n
        if n & (n - 1) == 0:
            self.log.warning("refused %s (%s, %d so far): %s", self.what, reason, n, detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, *UNAVAILABLE)
"""Everything a Redis call may raise, refused commands included (for loops that must live)."""
