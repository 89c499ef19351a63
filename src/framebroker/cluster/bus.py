"""The bus across processes and machines: the surface of ``Sessions.subscribe``/``publish``
(:class:`~framebroker.sessions.Feed`, ``*``-suffix patterns, bounded mailboxes), carried by
Redis.

**Which message goes where, and why.** Two kinds of traffic share the bus, with opposite
needs, so each goes the Redis way that fits it:

- *Droppable*: ``live/<source>/frame`` (a 56 KB annotated picture, up to 30 a second per
  source), ``session/<id>/result`` (a :class:`~framebroker.sessions.FrameOut` per frame; the
  client that submitted a frame gets its answer from the relay, not the bus) and
  ``session/<id>/prediction``. A listener that falls behind wants the newest, never a backlog.
  These go over **pub/sub**: a channel per topic (``fb:{c}:bus:<topic>``), delivered only to
  the nodes subscribed to it at that moment, kept nowhere. Redis's cost is one write per
  subscribed node; a node subscribes to a channel (or a pattern) only while it has a local
  subscriber for it, so frames of a source nobody watches elsewhere cost Redis a lookup.
- *Must arrive*: ``live/<source>/event`` (a counted crossing), ``live/<source>/stats`` (a
  source's totals, once a second) and ``session/<id>/ended`` (the summary). A subscriber
  that is slow, or a node whose connection to Redis blinked, must still see them, in order.
  These go to one **stream** per cluster (``fb:{c}:events``, ``XADD ... MAXLEN ~ 10000``):
  kept, read by every node that has a local subscriber for any of them from where it was
  (``XREAD`` from the last id it saw), so a reconnect resumes without a gap, and a slow
  reader is behind, not lossy. One stream rather than one per topic keeps pattern
  subscriptions (``live/*``) to one read: these messages are rare (a few a second per
  source) so every interested node reading all of them costs little; that is what
  python-socketio's Redis manager does for every emit, which is fine for events and what
  this bus avoids for frames. Each node numbers its stream messages (``s`` in
  :mod:`.wire`), so a message sent twice (a retried pipeline) is delivered once, and a gap
  (trimmed by ``MAXLEN`` before a reader far behind got to it) is counted.

Locally, every subscriber has its own bounded :class:`~framebroker.core.mailbox.Mailbox`:
droppable messages beyond ``maxlen`` push out the oldest droppable ones (counted in
``dropped``); messages that must arrive are kept (up to ``max_kept``). A message published on
this node reaches its local subscribers at once, by reference, as on the in-process bus; what
comes back from Redis with this node's id is skipped. ``publish`` never blocks and never
raises: a message goes to a bounded outbox that one task writes to Redis in pipelined
batches. When Redis is down, droppable messages are counted and dropped; those that must
arrive wait in the outbox (bounded, oldest dropped and counted past ``outbox_kept``) and go
once it is back. Subscriptions reconnect with backoff and resume by themselves: the pub/sub
connection is checked with a ``PING`` every second, so a Redis that froze (no reset, no
answer) is noticed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ..core.bus import Message
from ..core.mailbox import Mailbox
from ..errors import ClusterUnavailable
from .connection import REDIS_ERRORS, Backoff, Refusals, describe, stop_task
from .keys import Keys, check_id
from .wire import WireError, decode, encode

__all__ = ["RELIABLE_SUFFIXES", "BusCounters", "RedisBus", "is_reliable"]

log = logging.getLogger(__name__)
T = TypeVar("T")

RELIABLE_SUFFIXES = ("/event", "/stats", "/ended")
"""Topics ending so must arrive (the stream); every other topic may be dropped (pub/sub)."""

_MAX_BATCH = 256
_MAX_BATCH_BYTES = 4 * 1024 * 1024
_MAX_READ = 512
_PING_EVERY_S = 1.0
_MAX_ORIGINS = 4096


def is_reliable(topic: str) -> bool:
    """Whether ``topic`` must arrive: it goes by the stream, not pub/sub."""
    return topic.endswith(RELIABLE_SUFFIXES)


@dataclass(slots=True)
class BusCounters:
    """What the bus did, for ``/metrics``: ``sent`` messages written to Redis (of them
    ``sent_stream`` to the stream); ``received`` from other nodes and handed to local
    subscribers; ``dropped_unavailable`` droppable messages not sent because Redis was
    down; ``dropped_outbox`` messages pushed out of a full outbox; ``refused_publish``
    payloads that could not be sent (not JSON-able, too large); ``duplicates`` stream
    messages seen twice and delivered once; ``gaps`` stream messages that never came;
    ``reconnects`` of the pub/sub and stream readers and the writer after a failure."""

    sent: int = 0
    sent_stream: int = 0
    received: int = 0
    dropped_unavailable: int = 0
    dropped_outbox: int = 0
    refused_publish: int = 0
    duplicates: int = 0
    gaps: int = 0
    reconnects: int = 0


@dataclass(frozen=True, slots=True)
class _Out:
    topic: str
    data: bytes
    reliable: bool


class _Feed:
    """One local subscriber (a :class:`~framebroker.sessions.Feed`)."""

    def __init__(
        self,
        bus: RedisBus,
        pattern: str,
        *,
        maxlen: int,
        max_kept: int,
        keep: Callable[[Message], bool] | None,
    ) -> None:
        self.pattern = pattern
        self.prefix = pattern[:-1] if pattern.endswith("*") else None
        self.keep = keep
        self._bus = bus
        self._box: Mailbox[Message] = Mailbox(maxlen, max_kept=max_kept)
        self._event = asyncio.Event()

    def matches(self, topic: str) -> bool:
        if self.prefix is not None:
            return topic.startswith(self.prefix)
        return topic == self.pattern

    @property
    def dropped(self) -> int:
        return self._box.dropped

    async def wait(self) -> None:
        while not len(self._box):
            await self._event.wait()
            self._event.clear()

    def drain(self) -> list[Message]:
        with self._bus._lock:
            return self._box.drain()

    def close(self) -> None:
        self._bus._unsubscribe(self)


class RedisBus:
    """The bus of node ``node`` of a cluster, on ``redis`` (see :func:`.connection.connect`;
    the bus takes a few connections of its pool: one for pub/sub, one blocked reading the
    stream, one writing).

    ``maxlen`` and ``max_kept``: a subscriber's bound on droppable messages and on kept
    ones (a subscriber may ask for its own ``maxlen``). ``outbox`` and ``outbox_kept``: the
    same bounds on what waits to be written to Redis. ``stream_maxlen``: about how many
    messages the stream keeps (``MAXLEN ~``). ``max_message_bytes``: the largest message,
    sent or accepted. ``op_timeout_s`` bounds every call to Redis; ``block_s`` how long a
    read of the stream waits for news. Call :meth:`start` on the event loop before use and
    :meth:`close` at the end.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        node: str,
        maxlen: int = 64,
        max_kept: int = 1024,
        outbox: int = 256,
        outbox_kept: int = 4096,
        stream_maxlen: int = 10_000,
        max_message_bytes: int = 8 * 1024 * 1024,
        op_timeout_s: float = 2.0,
        block_s: float = 0.5,
        backoff_s: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        if min(maxlen, max_kept, outbox, outbox_kept, stream_maxlen, max_message_bytes) < 1:
            raise ValueError("every bound of the bus must be >= 1")
        if op_timeout_s <= 0 or block_s <= 0:
            raise ValueError(
                f"need op_timeout_s > 0 and block_s > 0, got {op_timeout_s}, {block_s}"
            )
        self.redis = redis
        self.keys = keys
        self.node = check_id(node, "a node id")
        self.maxlen = maxlen
        self.max_kept = max_kept
        self.stream_maxlen = stream_maxlen
        self.max_message_bytes = max_message_bytes
        self.op_timeout_s = op_timeout_s
        self.block_s = block_s
        self.backoff_s = backoff_s
        self.counters = BusCounters()
        self.refusals = Refusals(log, "a bus message")
        self._lock = threading.Lock()
        self._feeds: list[_Feed] = []
        self._outbox: Mailbox[_Out] = Mailbox(outbox, max_kept=outbox_kept)
        self._seq = 0
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._version = 0  # of the local subscriptions
        self._pubsub_synced = -1  # the version the pub/sub subscriptions match
        self._wanted_cache: tuple[int, set[str], set[str]] | None = None
        self._stream_ready = False  # the stream reader is positioned and reading
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._outbox_event = asyncio.Event()
        self._pubsub_wake = asyncio.Event()
        self._stream_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading and writing (on the running loop). Redis need not be up: the loops
        wait for it."""
        if self._tasks:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tasks = [
            asyncio.create_task(self._pubsub_loop(), name=f"bus-pubsub-{self.node}"),
            asyncio.create_task(self._stream_loop(), name=f"bus-stream-{self.node}"),
            asyncio.create_task(self._writer_loop(), name=f"bus-writer-{self.node}"),
        ]

    async def close(self) -> None:
        """Write what waits in the outbox (for at most ``op_timeout_s``), then stop."""
        if self._closing:
            return
        self._closing = True
        for event in (self._outbox_event, self._pubsub_wake, self._stream_wake):
            event.set()
        writer = self._tasks[-1] if self._tasks else None
        if writer is not None:
            await asyncio.wait({writer}, timeout=self.op_timeout_s)
        for task in self._tasks:
            await stop_task(task, timeout_s=self.op_timeout_s)
        self._tasks = []

    # -- the Sessions surface --------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        maxlen: int | None = None,
        keep: Callable[[Message], bool] | None = None,
    ) -> _Feed:
        """A mailbox for the topics ``pattern`` matches (a topic, or a prefix and ``*``),
        from this node and every other; messages ``keep`` says yes to, and those that must
        arrive (:func:`is_reliable`), are never the ones dropped for room. Make it on the
        event loop. Redis learns of it in the background (:meth:`synced`)."""
        if not pattern:
            raise ValueError("a subscription needs a topic or a prefix and *")
        feed = _Feed(self, pattern, maxlen=maxlen or self.maxlen, max_kept=self.max_kept, keep=keep)
        with self._lock:
            self._feeds.append(feed)
            self._version += 1
        self._wake_readers()
        return feed

    def _unsubscribe(self, feed: _Feed) -> None:
        with self._lock:
            if feed not in self._feeds:
                return
            self._feeds.remove(feed)
            self._version += 1
        self._wake_readers()

    def publish(self, topic: str, payload: Any) -> int:
        """Hand ``payload`` to every local subscriber of ``topic`` now, and to Redis for the
        other nodes; returns how many local subscribers got it. Never blocks, never raises
        for Redis (see the module docstring); thread-safe."""
        reliable = is_reliable(topic)
        delivered = self._deliver(topic, payload, must_arrive=reliable)
        if self._closing or self._loop is None:
            self.counters.dropped_unavailable += 1
            return delivered
        now = time.time()
        try:
            if reliable:
                # The sequence number and the outbox's order must agree (a receiver drops
                # what is not newer than the last it saw), so both happen under the lock.
                with self._lock:
                    data = encode(
                        topic, payload, node=self.node, seq=self._seq + 1, sent_at=now,
                        max_bytes=self.max_message_bytes,
                    )  # fmt: skip
                    self._seq += 1
                    self._queue(_Out(topic, data, True))
            else:
                data = encode(
                    topic, payload, node=self.node, seq=0, sent_at=now,
                    max_bytes=self.max_message_bytes,
                )  # fmt: skip
                with self._lock:
                    self._queue(_Out(topic, data, False))
        except WireError as e:
            self.counters.refused_publish += 1
            self.refusals.refuse(f"publish_{e.reason}", str(e))
            return delivered
        self._wake(self._outbox_event)
        return delivered

    def _queue(self, out: _Out) -> None:
        before = self._outbox.dropped
        self._outbox.put(out, keep=out.reliable)
        self.counters.dropped_outbox += self._outbox.dropped - before

    def has_subscribers(self, topic: str) -> bool:
        """Whether a local subscriber would get ``topic`` (other nodes are not asked)."""
        with self._lock:
            return any(f.matches(topic) for f in self._feeds)

    async def synced(self, timeout_s: float = 5.0) -> None:
        """Wait until Redis carries every local subscription made so far to this node (what
        is published after that reaches it). Raises ``ClusterUnavailable`` after
        ``timeout_s``."""
        with self._lock:
            target = self._version
        deadline = time.monotonic() + timeout_s
        while not self._synced_to(target):
            if time.monotonic() > deadline:
                raise ClusterUnavailable(
                    f"the bus of node {self.node!r} could not subscribe in Redis within "
                    f"{timeout_s} s",
                    operation="subscribe",
                )
            await asyncio.sleep(0.01)

    def _synced_to(self, version: int) -> bool:
        if self._pubsub_synced < version:
            return False
        return self._stream_ready or not self._wants_stream()

    def snapshot(self) -> dict[str, Any]:
        """Counters and state, for metrics and the console."""
        with self._lock:
            waiting, subscribers = len(self._outbox), len(self._feeds)
        return {
            "node": self.node,
            "subscribers": subscribers,
            "outbox": waiting,
            "refusals": self.refusals.as_dict(),
            **{f.name: getattr(self.counters, f.name) for f in fields(BusCounters)},
        }

    # -- local delivery --------------------------------------------------------------------

    def _deliver(self, topic: str, payload: Any, *, must_arrive: bool) -> int:
        message = Message(topic, payload)
        with self._lock:
            targets = [f for f in self._feeds if f.matches(topic)]
            for feed in targets:
                feed._box.put(message, keep=must_arrive or _keeps(feed, message))
        for feed in targets:
            self._wake(feed._event)
        return len(targets)

    def _wake(self, event: asyncio.Event) -> None:
        if self._loop is None or threading.get_ident() == self._loop_thread:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                self._loop.call_soon_threadsafe(event.set)

    def _wake_readers(self) -> None:
        self._wake(self._pubsub_wake)
        self._wake(self._stream_wake)

    def _receive(self, data: bytes, *, stream: bool) -> None:
        try:
            envelope = decode(data, max_bytes=self.max_message_bytes)
        except WireError as e:
            self.refusals.refuse(e.reason, str(e))
            return
        if envelope.node == self.node:
            return  # delivered locally when it was published
        if stream and not self._in_order(envelope.node, envelope.seq):
            return
        self.counters.received += 1
        self._deliver(envelope.topic, envelope.payload, must_arrive=stream)

    def _in_order(self, node: str, seq: int) -> bool:
        """Whether a stream message from ``node`` is new (counting a gap before it)."""
        last = self._last_seq.get(node)
        if last is not None:
            if seq <= last:
                self.counters.duplicates += 1
                return False
            self.counters.gaps += seq - last - 1
        self._last_seq[node] = seq
        self._last_seq.move_to_end(node)
        while len(self._last_seq) > _MAX_ORIGINS:
            self._last_seq.popitem(last=False)
        return True

    # -- what Redis must carry to this node ------------------------------------------------

    def _wanted_pubsub(self) -> tuple[int, set[str], set[str]]:
        """The channels and patterns the local subscriptions need (worked out again only
        when they changed: the reader asks many times a second)."""
        with self._lock:
            feeds, version = list(self._feeds), self._version
        cached = self._wanted_cache
        if cached is not None and cached[0] == version:
            return cached
        channels = {
            self.keys.channel(f.pattern)
            for f in feeds
            if f.prefix is None and not is_reliable(f.pattern)
        }
        patterns = {self.keys.channel_pattern(f.prefix) for f in feeds if f.prefix is not None}
        self._wanted_cache = (version, channels, patterns)
        return self._wanted_cache

    def _wants_stream(self) -> bool:
        with self._lock:
            return any(f.prefix is not None or is_reliable(f.pattern) for f in self._feeds)

    async def _bounded(self, call: Awaitable[T], extra_s: float = 0.0) -> T:
        async with asyncio.timeout(self.op_timeout_s + extra_s):
            return await call

    def _failed(self, what: str, error: BaseException) -> None:
        self.counters.reconnects += 1
        n = self.counters.reconnects
        if n & (n - 1) == 0:
            log.warning("bus of %s: %s failed (%d so far): %s", self.node, what, n, describe(error))

    # -- pub/sub ---------------------------------------------------------------------------

    async def _pubsub_loop(self) -> None:
        backoff = Backoff(*self.backoff_s)
        while not self._closing:
            version, channels, patterns = self._wanted_pubsub()
            if not channels and not patterns:
                self._pubsub_synced = version
                await _wait_event(self._pubsub_wake, 1.0)
                self._pubsub_wake.clear()
                continue
            try:
                await self._listen(backoff)
            except REDIS_ERRORS as e:
                self._pubsub_synced = -1
                self._failed("pub/sub", e)
                await backoff.wait()
            except Exception:  # a bug: logged, and the bus goes on
                self._pubsub_synced = -1
                log.exception("bus of %s: the pub/sub reader failed", self.node)
                await backoff.wait()

    async def _listen(self, backoff: Backoff) -> None:
        """Hold one pub/sub connection, following the local subscriptions, until nothing is
        wanted any more (then it is closed) or it fails (raised)."""
        pubsub: PubSub = self.redis.pubsub()
        sent_channels: set[str] = set()
        sent_patterns: set[str] = set()
        confirmed: set[str] = set()
        last_pong = time.monotonic()
        next_ping = last_pong + _PING_EVERY_S
        try:
            while not self._closing:
                version, channels, patterns = self._wanted_pubsub()
                if not channels and not patterns:
                    return
                if channels - sent_channels:
                    await self._bounded(pubsub.subscribe(*(channels - sent_channels)))
                if sent_channels - channels:
                    await self._bounded(pubsub.unsubscribe(*(sent_channels - channels)))
                if patterns - sent_patterns:
                    await self._bounded(pubsub.psubscribe(*(patterns - sent_patterns)))
                if sent_patterns - patterns:
                    await self._bounded(pubsub.punsubscribe(*(sent_patterns - patterns)))
                sent_channels, sent_patterns = channels, patterns
                self._pubsub_wake.clear()
                for read in range(_MAX_READ):
                    timeout = 0.0 if read else min(0.05, self.block_s)  # wait for the first
                    message = await self._bounded(
                        pubsub.get_message(timeout=timeout), extra_s=timeout
                    )
                    if message is None:
                        break
                    kind = message["type"]
                    if kind in ("message", "pmessage"):
                        self._receive(message["data"], stream=False)
                        backoff.reset()
                    elif kind in ("subscribe", "psubscribe"):
                        confirmed.add(_text(message["channel"]))
                    elif kind in ("unsubscribe", "punsubscribe"):
                        confirmed.discard(_text(message["channel"]))
                    elif kind == "pong":
                        last_pong = time.monotonic()
                        backoff.reset()
                    if self._pubsub_wake.is_set():
                        break  # the subscriptions changed: follow them first
                if confirmed == channels | patterns:
                    self._pubsub_synced = version
                now = time.monotonic()
                if now >= next_ping:
                    await self._bounded(pubsub.ping())
                    next_ping = now + _PING_EVERY_S
                if now - last_pong > _PING_EVERY_S + self.op_timeout_s:
                    raise TimeoutError(f"no answer to PING for {now - last_pong:.1f} s")
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._bounded(pubsub.aclose())

    # -- the stream ------------------------------------------------------------------------

    async def _stream_loop(self) -> None:
        backoff = Backoff(*self.backoff_s)
        position: bytes | None = None
        key = self.keys.events
        while not self._closing:
            if not self._wants_stream():
                position, self._stream_ready = None, False
                await _wait_event(self._stream_wake, 1.0)
                self._stream_wake.clear()
                continue
            try:
                if position is None:
                    last: Any = await self._bounded(self.redis.xrevrange(key, count=1))
                    position = bytes(last[0][0]) if last else b"0-0"
                    self._last_seq.clear()  # what came before was not read: no gap to count
                self._stream_ready = True
                read: Any = await self._bounded(
                    self.redis.xread(
                        {key: position}, count=_MAX_READ, block=int(self.block_s * 1000)
                    ),
                    extra_s=self.block_s,
                )
                backoff.reset()
                for _, entries in read or []:
                    for entry_id, values in entries:
                        position = entry_id
                        data = values.get(b"m")
                        if not isinstance(data, bytes):
                            self.refusals.refuse("malformed", f"stream entry {entry_id!r}")
                            continue
                        self._receive(data, stream=True)
            except REDIS_ERRORS as e:
                self._stream_ready = False
                self._failed("stream read", e)
                await backoff.wait()
            except Exception:  # a bug: logged, and the bus goes on
                self._stream_ready = False
                log.exception("bus of %s: the stream reader failed", self.node)
                await backoff.wait()

    # -- writing ---------------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        backoff = Backoff(*self.backoff_s)
        retry: list[_Out] = []  # messages that must arrive, not written yet, oldest first
        while True:
            if not retry and not self._closing:
                await _wait_event(self._outbox_event, 1.0)
            self._outbox_event.clear()
            batch = retry + self._take_batch()
            retry = []
            if not batch:
                if self._closing:
                    return
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for out in batch:
                    if out.reliable:
                        pipe.xadd(
                            self.keys.events,
                            {b"m": out.data},
                            maxlen=self.stream_maxlen,
                            approximate=True,
                        )
                    else:
                        pipe.publish(self.keys.channel(out.topic), out.data)
                await self._bounded(pipe.execute())
                stream = sum(out.reliable for out in batch)
                self.counters.sent += len(batch)
                self.counters.sent_stream += stream
                backoff.reset()
            except REDIS_ERRORS as e:
                self._failed("publish", e)
                retry = [out for out in batch if out.reliable]
                self.counters.dropped_unavailable += len(batch) - len(retry)
                overflow = len(retry) - self._outbox.max_kept if self._outbox.max_kept else 0
                if overflow > 0:
                    self.counters.dropped_outbox += overflow
                    retry = retry[overflow:]
                if self._closing:
                    self.counters.dropped_unavailable += len(retry)
                    return
                await backoff.wait()

    def _take_batch(self) -> list[_Out]:
        batch: list[_Out] = []
        size = 0
        with self._lock:
            while len(batch) < _MAX_BATCH and size < _MAX_BATCH_BYTES:
                out = self._outbox.take()
                if out is None:
                    break
                batch.append(out)
                size += len(out.data)
        return batch


def _keeps(feed: _Feed, message: Message) -> bool:
    if feed.keep is None:
        return False
    try:
        return feed.keep(message)
    except Exception:
        log.exception("the keep callback of a subscriber to %r failed", feed.pattern)
        return False


async def _wait_event(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
