"""A ``--source`` runs exactly once in the cluster: whoever holds its lease runs it.

Every node configured with a source (a camera, a file) makes a :class:`SourceLease` for it
and follows :meth:`SourceLease.watch`: the one that acquires the lease starts the source's
feed; the others keep trying every ``retry_s``. The holder renews every ``renew_s``; if it
stops (it died, froze, or lost Redis), the key expires after ``ttl_s`` on Redis's clock and
another node takes over within ``ttl_s + retry_s`` (3.5 s by default). A clean stop
(:meth:`SourceLease.release`) hands it over within ``retry_s``.

The key is ``fb:{c}:source:<name>``, a string ``1|<node>|<epoch>`` with a TTL (the
``1`` is its format's version). Each acquisition draws a new epoch from the cluster's
fencing counter (the directory's), which says which acquisition a holder's lease is. The
day's counts are fenced in the store instead (``PeopleRecords.claim_source``): a Redis
restarted empty starts its counter again, the store's fences only grow.

Safety over availability, on purpose: a holder that cannot renew gives the source up when
its lease would have run out, as far as it knows (``watch`` yields ``False``), even if Redis
is only unreachable from it, because another node may be holding the source by then. Two
nodes counting the same door would double the day's counts; a gap of a few seconds in them
is the lesser harm. If Redis itself restarted empty, a holder whose lease is still current
puts the key back and keeps the source: nobody else can have taken it.

:class:`SourceKeeper` is that loop as a node runs it: it starts the source when the lease
comes and stops it when it goes, retries a start that fails while the lease is held (the
source's session may still be the dead holder's until its node lease runs out), and on a
clean stop stops the source before it gives the lease back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import ClusterUnavailable, SessionConflict
from .connection import describe, guarded, stop_task
from .keys import Keys, check_id

__all__ = ["SourceHolder", "SourceKeeper", "SourceLease"]

log = logging.getLogger(__name__)

LEASE_VERSION = "1"

_ACQUIRE = """
-- KEYS: source key, epoch counter. ARGV: node, ttl_ms, version.
local cur = redis.call('GET', KEYS[1])
if cur then return {'held', cur} end
local epoch = redis.call('INCR', KEYS[2])
local value = ARGV[3] .. '|' .. ARGV[1] .. '|' .. epoch
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {'acquired', value}
"""

_RENEW = """
-- KEYS: source key, epoch counter. ARGV: our value, ttl_ms, our epoch.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'renewed'
end
if cur then return 'lost' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[3])
end
return 'restored'
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class SourceHolder:
    """Who holds a source's lease: ``node`` under ``epoch``, for ``ttl_s`` more unless
    renewed."""

    node: str
    epoch: int
    ttl_s: float


def _parse(value: bytes | str) -> tuple[str, int] | None:
    text = value.decode() if isinstance(value, bytes) else value
    version, _, rest = text.partition("|")
    node, _, epoch = rest.rpartition("|")
    if version != LEASE_VERSION or not node or not epoch.isdigit():
        return None
    return node, int(epoch)


class SourceLease:
    """The lease of source ``source`` as node ``node`` sees it.

    ``ttl_s``: how long the lease lasts unrenewed (how soon another node takes over after
    the holder dies); ``renew_s`` (default ``ttl_s / 3``): how often the holder renews;
    ``retry_s`` (default ``ttl_s / 6``): how often a node that does not hold it tries;
    ``op_timeout_s`` bounds every call. Raises ``ValueError`` for timings that cannot work.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        node: str,
        source: str,
        ttl_s: float = 3.0,
        renew_s: float | None = None,
        retry_s: float | None = None,
        op_timeout_s: float = 1.0,
    ) -> None:
        renew_s = ttl_s / 3 if renew_s is None else renew_s
        retry_s = ttl_s / 6 if retry_s is None else retry_s
        if not 0 < renew_s < ttl_s or retry_s <= 0 or op_timeout_s <= 0:
            raise ValueError(
                "need 0 < renew_s < ttl_s, retry_s > 0 and op_timeout_s > 0, got "
                f"renew_s={renew_s}, ttl_s={ttl_s}, retry_s={retry_s}, op_timeout_s={op_timeout_s}"
            )
        self.redis = redis
        self.keys = keys
        self.node = check_id(node, "a node id")
        self.source = check_id(source, "a source name")
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.retry_s = retry_s
        self.op_timeout_s = op_timeout_s
        self.epoch: int | None = None
        self.takeovers = 0  # times this node acquired it
        self.losses = 0  # times it stopped holding it without releasing
        self.refusals = 0  # lease values of a format this node cannot read
        self.held_by: str | None = None
        """The node that holds the lease, as last read (this one's while it does; ``None``
        when nobody did or it is not known)."""
        self._value: bytes | None = None
        self._valid_until = 0.0  # monotonic
        self._key = keys.source(source)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @property
    def held(self) -> bool:
        """Whether this node holds the lease, as far as it knows: acquired, and renewed less
        than ``ttl_s`` ago."""
        return self._value is not None and time.monotonic() < self._valid_until

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or renew it if this node does). Raises
        ``ClusterUnavailable``."""
        if self._value is not None:
            return await self.renew()
        sent = time.monotonic()
        outcome, value = await guarded(
            "acquire source",
            lambda: self._acquire(
                keys=[self._key, self.keys.epoch],
                args=[self.node, int(self.ttl_s * 1000), LEASE_VERSION],
            ),
            timeout_s=self.op_timeout_s,
        )
        parsed = _parse(value)
        if parsed is None:
            self.refusals += 1
            log.warning("source %s: a lease value this node cannot read: %r", self.source, value)
            return False
        if outcome != b"acquired":
            self.held_by = parsed[0]
            if parsed[0] != self.node:
                return False
            # Ours from before this node gave it up (Redis did not answer in time): nobody
            # else can hold it, so it is taken back rather than waited out.
            self._value, self.epoch, self._valid_until = bytes(value), parsed[1], sent + self.ttl_s
            if not await self.renew():
                return False
        else:
            self._value, self.epoch = bytes(value), parsed[1]
            self._valid_until = sent + self.ttl_s
        self.takeovers += 1
        self.held_by = self.node
        log.info("source %s: held by node %s (epoch %d)", self.source, self.node, self.epoch)
        return True

    async def renew(self) -> bool:
        """Extend the lease this node holds; ``False`` if another node holds it now (this
        one must stop the source). Raises ``ClusterUnavailable``; the call is cut short
        when the lease would run out first."""
        if self._value is None or self.epoch is None:
            return False
        value, epoch = self._value, self.epoch
        sent = time.monotonic()
        left = self._valid_until - sent
        if left <= 0:
            self._lose("its lease ran out before it could be renewed")
            return False
        outcome = await guarded(
            "renew source",
            lambda: self._renew(
                keys=[self._key, self.keys.epoch],
                args=[value, int(self.ttl_s * 1000), epoch],
            ),
            timeout_s=min(self.op_timeout_s, left),
        )
        if outcome == b"lost":
            self._lose("another node holds it now")
            return False
        if outcome == b"restored":
            log.warning("source %s: the lease was gone from Redis; put back", self.source)
        self._valid_until = sent + self.ttl_s
        return True

    def _lose(self, why: str) -> None:
        self._value = None
        self.held_by = None
        self.losses += 1
        log.warning("source %s: node %s no longer holds it: %s", self.source, self.node, why)

    async def release(self) -> None:
        """Give the lease up now (a clean stop), so another node takes over within
        ``retry_s``. Raises ``ClusterUnavailable`` (the lease then expires by itself)."""
        value, self._value = self._value, None
        if value is None:
            return
        self.held_by = None
        await guarded(
            "release source",
            lambda: self._release(keys=[self._key], args=[value]),
            timeout_s=self.op_timeout_s,
        )

    async def holder(self) -> SourceHolder | None:
        """Who holds the lease now, or ``None``. Raises ``ClusterUnavailable``."""

        async def read() -> Any:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self._key)
            pipe.pttl(self._key)
            return await pipe.execute()

        value, pttl = await guarded("source holder", read, timeout_s=self.op_timeout_s)
        parsed = None if value is None else _parse(value)
        if parsed is None:
            return None
        return SourceHolder(node=parsed[0], epoch=parsed[1], ttl_s=max(0, int(pttl)) / 1000)

    async def watch(self) -> AsyncIterator[bool]:
        """``True`` each time this node comes to hold the lease (start the source), ``False``
        each time it stops holding it (stop the source now: another node may have it). Runs
        until the caller stops iterating; then call :meth:`release` for a clean handover.
        Redis being unreachable is waited out, never raised."""
        while True:
            while not await self._try(self.acquire):
                await asyncio.sleep(self.retry_s)
            yield True
            delay = self.renew_s
            while True:
                left = self._valid_until - time.monotonic()
                await asyncio.sleep(max(0.0, min(delay, left)))
                renewed = await self._try(self.renew)
                if renewed:
                    delay = self.renew_s
                    continue
                if renewed is False:  # lost, and counted, in renew()
                    break
                if not self.held:
                    # Redis did not answer until the lease ran out: lost all the same.
                    self._lose("its lease ran out while Redis did not answer")
                    break
                delay = self.retry_s  # Redis did not answer: try again soon
            yield False

    async def _try(self, call: Callable[[], Awaitable[bool]]) -> bool | None:
        """``call()``, or ``None`` when Redis did not answer or refused (a key of the wrong
        type where the lease should be: refused, counted, logged, tried again later)."""
        try:
            return await call()
        except ClusterUnavailable as e:
            log.debug("source %s: %s", self.source, e)
        except RedisError as e:
            self.refusals += 1
            if self.refusals & (self.refusals - 1) == 0:
                log.warning("source %s: Redis refused the lease (%d so far): %s", self.source,
                            self.refusals, e)  # fmt: skip
        return None


Action = Callable[[], Awaitable[None]]


class SourceKeeper:
    """Runs one source on this node only while this node holds its lease (see the module).

    ``start`` starts the source here and ``stop`` stops it (it must do nothing when the
    source is not running). :meth:`start` follows the lease in a task of its own, so a
    source that is slow to start never delays a renewal; :meth:`close` is the clean stop.
    A start that fails while the lease is held is tried again after ``start_retry_s``,
    doubling up to ``max_start_retry_s``: after its holder died, a source's session stays
    the dead node's until that node's own lease runs out. Nothing the lease or the source
    raises ends the keeper: it is logged and counted (``start_failures``, ``failures``).
    """

    def __init__(
        self,
        lease: SourceLease,
        start: Action,
        stop: Action,
        *,
        start_retry_s: float | None = None,
        max_start_retry_s: float = 2.0,
    ) -> None:
        self.lease = lease
        self.start_retry_s = lease.retry_s if start_retry_s is None else start_retry_s
        self.max_start_retry_s = max(max_start_retry_s, self.start_retry_s)
        if self.start_retry_s <= 0:
            raise ValueError(f"need start_retry_s > 0, got {self.start_retry_s}")
        self._start = start
        self._stop = stop
        self.starting = False
        """True while this node holds the lease and the source has not started yet."""
        self.start_failures = 0  # starts that raised while the lease was held
        self.failures = 0  # the keeper's own loop or a stop that raised: logged, counted
        self._task: asyncio.Task[None] | None = None
        self._starter: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._ending = asyncio.Lock()

    @property
    def source(self) -> str:
        return self.lease.source

    @property
    def held(self) -> bool:
        """Whether this node holds the source's lease (and so may run it), as far as it
        knows."""
        return self.lease.held

    @property
    def node(self) -> str | None:
        """The node that runs the source: this one while it holds the lease, else the
        holder as last read (``None`` while nobody holds it, or when it is not known)."""
        return self.lease.node if self.lease.held else self.lease.held_by

    def start(self) -> None:
        """Follow the lease from now on (on the running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"source-lease-{self.source}")

    async def close(self) -> None:
        """A clean stop: stop following the lease, stop the source, then give the lease
        back so another node takes over within its ``retry_s``. Never raises for Redis (the
        lease then runs out by itself)."""
        if self._task is not None:
            await stop_task(self._task, timeout_s=2.0)
            self._task = None
        await self._end()
        try:
            await self.lease.release()
        except (ClusterUnavailable, RedisError) as e:
            log.warning(
                "source %s: could not give its lease back (it runs out within %.1f s): %s",
                self.source,
                self.lease.ttl_s,
                describe(e),
            )

    async def _run(self) -> None:
        while True:
            try:
                async for held in self.lease.watch():
                    if held:
                        self._begin()
                    else:
                        # Shielded: a close meanwhile waits for this stop, never cuts it.
                        await asyncio.shield(self._end())
            except Exception:
                self.failures += 1
                log.exception("source %s: following its lease failed; again", self.source)
                if not self.lease.held:
                    await asyncio.shield(self._end())
                await asyncio.sleep(self.lease.retry_s)

    def _begin(self) -> None:
        if self._starter is not None and not self._starter.done():
            return
        self._lost = asyncio.Event()
        self._starter = asyncio.create_task(
            self._start_while_held(self._lost), name=f"source-start-{self.source}"
        )

    async def _start_while_held(self, lost: asyncio.Event) -> None:
        self.starting = True
        failed = 0
        delay = self.start_retry_s
        try:
            while self.lease.held and not lost.is_set():
                try:
                    await self._start()
                    return
                except Exception as e:
                    failed += 1
                    self.start_failures += 1
                    if failed & (failed - 1) == 0:
                        # Expected for a few seconds after a takeover: the dead holder's
                        # session is still its own until its node lease runs out.
                        level = logging.INFO if isinstance(e, SessionConflict) else logging.WARNING
                        log.log(
                            level,
                            "source %s: could not start it (%d time(s)); trying again while "
                            "this node holds it: %s",
                            self.source,
                            failed,
                            describe(e),
                        )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), delay)
                delay = min(delay * 2, self.max_start_retry_s)
        finally:
            self.starting = False

    async def _end(self) -> None:
        """Stop the source here: the lease is gone, or the node stops. Waits for a start
        under way to finish its attempt first, so what it opened is closed."""
        async with self._ending:
            self._lost.set()
            starter, self._starter = self._starter, None
            if starter is not None:
                await asyncio.wait({starter})
            try:
                await self._stop()
            except Exception:
                self.failures += 1
                log.exception("source %s: stopping it failed", self.source)
