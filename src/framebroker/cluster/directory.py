"""The session directory: which node owns each session of the cluster, under which lease and
fencing epoch, in Redis.

A session lives in exactly one node (its processors keep state), so a node that receives a
request for it must find the owner. :class:`Directory` keeps, for one node:

- **its node lease**: ``fb:{c}:node:<node>``, a hash with a TTL (``ttl_s``) that a heartbeat
  renews every ``heartbeat_s``, carrying the node's address, ports, start time and stats (what
  another node needs to relay to it, and what the console lists). One renewal covers every
  session the node holds: a session's entry has no TTL of its own; its owner's node key *is*
  its lease. Expiry is judged by Redis's clock alone, so clocks that differ between machines
  do not matter. (LiveKit calls a node dead when its stats are more than 5 s old; a TTL is the
  same rule, enforced by the server that everyone reads.)
  A node is named as the store names a session's owner: a lasting id and a *life* (the
  epoch ``Store.begin`` gave this start). An owner is alive while its node key holds the
  life its entries were claimed in, so a restarted server replaces its crashed life's lease
  at once and that life's sessions are orphans straight away (:meth:`Directory.earlier`).
- **claims**: :meth:`claim` makes ``fb:{c}:session:<id>`` if nobody holds it. It is one Lua
  script, so two nodes that claim the same client-chosen id at once get one winner and one
  :class:`~framebroker.errors.SessionConflict`; a node whose own lease has lapsed claims
  nothing.
- **takeover and fencing**: a session whose owner's lease expired can be taken over
  (:meth:`take_over`, or :meth:`claim` with ``take_over=True``). Every claim and takeover
  draws a new epoch from one cluster-wide counter (``INCR fb:{c}:epoch``), so epochs only grow.
  Every write an owner makes (:meth:`update`, :meth:`release`) names the node and epoch it
  holds and is refused with :class:`~framebroker.errors.SessionFenced` when the entry names
  another: an owner that was paused or cut off past its lease cannot overwrite the node that
  took over, however sure it is of its lease. A lease says who *should* own; the epoch makes
  sure the one who no longer does cannot act as if it did.
- **healing**: when a heartbeat finds its node key gone (the lease lapsed, or Redis restarted
  empty), the node registers again and re-asserts every session it holds, one script each:
  an entry that is gone is written back with the same epoch (the counter is raised to it, so
  epochs stay monotonic), one that still names it is kept, and one that names another node
  was taken over: the session is dropped from this node's holdings and ``on_lost`` is
  called, so the layer above ends its local copy. While Redis cannot be reached, sessions
  already held keep running (the node cannot tell an outage from a partition, and stopping
  every session because Redis blinked is worse than sorting it out once it is back);
  whatever needs the directory meanwhile gets :class:`~framebroker.errors.ClusterUnavailable`.

Entries are versioned (``v``); an entry this version cannot read is a counted, logged refusal
(``refusals``): never a crash, and never overwritten by a claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import orjson
from redis.asyncio import Redis

from ..core.store import Owner
from ..errors import (
    ClusterUnavailable,
    ConfigError,
    SessionConflict,
    SessionFenced,
    SessionNotFound,
)
from .connection import Backoff, Refusals, guarded, stop_task
from .keys import Keys, check_id
from .wire import WireError, dumps_bounded

__all__ = ["Directory", "DirectoryCounters", "Entry", "Lease", "NodeInfo", "new_node_id"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ENTRY_VERSION = "1"
MAX_DATA_BYTES = 4096
MAX_STATS_BYTES = 16384
LIST_BATCH = 500

# -- scripts ---------------------------------------------------------------------------------
# Lua 5.1 prints large numbers in exponent form, so every time is formatted with %.0f.

_NOW = """
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
"""

_HEARTBEAT = (
    _NOW
    + """
-- KEYS: node key, nodes zset. ARGV: node, token, ttl_ms, version, address, ports,
-- started_at, stats, life.
local cur = redis.call('HMGET', KEYS[1], 'token', 'life')
local outcome = {'registered'}
if cur[1] == ARGV[2] then
  outcome = {'renewed'}
elseif cur[1] then
  -- another process under this node id: an earlier life of it is replaced, else refused
  if tonumber(cur[2] or '0') >= tonumber(ARGV[9]) then return {'conflict', tostring(cur[2])} end
  outcome = {'replaced', cur[2]}
end
redis.call('HSET', KEYS[1], 'v', ARGV[4], 'node', ARGV[1], 'token', ARGV[2], 'ttl_ms', ARGV[3],
  'address', ARGV[5], 'ports', ARGV[6], 'started_at', ARGV[7], 'stats', ARGV[8],
  'renewed_at', now, 'life', ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%.0f', tonumber(now) + tonumber(ARGV[3])), ARGV[1])
return outcome
"""
)

_LEAVE = (
    _NOW
    + """
-- KEYS: node key, nodes zset. ARGV: node, token.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
"""
)

_CLAIM = (
    _NOW
    + """
-- KEYS: session key, sessions set, my owned set, epoch counter, my node key.
-- ARGV: node, token, version, data, prefix, session id, mode (claim | claim_or_take | take),
-- life. An owner is alive while its node key holds the life the entry was claimed in.
if redis.call('HGET', KEYS[5], 'token') ~= ARGV[2] then return {'no_lease'} end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' and kind ~= 'hash' then return {'invalid', kind} end
local cur = redis.call('HMGET', KEYS[1], 'v', 'node', 'epoch', 'life')
local from, from_life = '', ''
if kind == 'hash' then
  if cur[1] ~= ARGV[3] or not cur[2] or not cur[3] or not cur[4] then
    return {'invalid', tostring(cur[1])}
  end
  if cur[2] == ARGV[1] and cur[4] == ARGV[8] then
    redis.call('SADD', KEYS[2], ARGV[6])
    redis.call('SADD', KEYS[3], ARGV[6])
    return {'mine', cur[3]}
  end
  if redis.call('HGET', ARGV[5] .. 'node:' .. cur[2], 'life') == cur[4] then
    return {'held', cur[2], cur[3]}
  end
  if ARGV[7] == 'claim' then return {'orphan', cur[2], cur[3]} end
  if cur[2] ~= ARGV[1] then redis.call('SREM', ARGV[5] .. 'owned:' .. cur[2], ARGV[6]) end
  from, from_life = cur[2], cur[4]
elseif ARGV[7] == 'take' then
  return {'missing'}
end
local epoch = redis.call('INCR', KEYS[4])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'node', ARGV[1], 'epoch', epoch, 'claimed_at', now,
  'data', ARGV[4], 'life', ARGV[8])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('SADD', KEYS[3], ARGV[6])
return {'claimed', tostring(epoch), from, from_life}
"""
)

_REASSERT = (
    _NOW
    + """
-- KEYS: session key, sessions set, my owned set, epoch counter.
-- ARGV: node, version, epoch, data, session id, life.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'node', ARGV[1], 'epoch', ARGV[3],
    'claimed_at', now, 'data', ARGV[4], 'life', ARGV[6])
  redis.call('SADD', KEYS[2], ARGV[5])
  redis.call('SADD', KEYS[3], ARGV[5])
  if tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[4], ARGV[3])
  end
  return {'restored'}
end
if kind == 'hash' then
  local cur = redis.call('HMGET', KEYS[1], 'v', 'node', 'epoch')
  if cur[1] == ARGV[2] and cur[2] == ARGV[1] and cur[3] == ARGV[3] then
    redis.call('SADD', KEYS[2], ARGV[5])
    redis.call('SADD', KEYS[3], ARGV[5])
    return {'kept'}
  end
  redis.call('SREM', KEYS[3], ARGV[5])
  return {'lost', tostring(cur[2]), tostring(cur[3])}
end
redis.call('SREM', KEYS[3], ARGV[5])
return {'lost', '', ''}
"""
)

_FORGET = """
-- KEYS: session key, sessions set. ARGV: epoch, prefix, session id. Removes an orphan's
-- entry (its session was ended elsewhere, by recovery), if nobody took it over meanwhile.
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'life')
if not cur[1] or cur[2] ~= ARGV[1] then return 0 end
if redis.call('HGET', ARGV[2] .. 'node:' .. cur[1], 'life') == cur[3] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('SREM', ARGV[2] .. 'owned:' .. cur[1], ARGV[3])
return 1
"""

_FENCE = """
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if not cur[1] then return {'missing'} end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {'fenced', cur[1], tostring(cur[2])} end
"""

_UPDATE = (
    """
-- KEYS: session key. ARGV: node, epoch, data.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return {'missing'} end
"""
    + _FENCE
    + """
redis.call('HSET', KEYS[1], 'data', ARGV[3])
return {'ok'}
"""
)

_RELEASE = (
    """
-- KEYS: session key, sessions set, my owned set. ARGV: node, epoch, session id.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  redis.call('SREM', KEYS[3], ARGV[3])
  return {'missing'}
end
"""
    + _FENCE
    + """
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[3])
return {'ok'}
"""
)

_LOOKUP = """
-- KEYS: session key. ARGV: prefix. Returns the entry's fields and whether its owner is alive.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return {} end
if kind ~= 'hash' then return {'__type', kind} end
local fields = redis.call('HGETALL', KEYS[1])
local entry = redis.call('HMGET', KEYS[1], 'node', 'life')
local alive = 0
if entry[1] and entry[2]
    and redis.call('HGET', ARGV[1] .. 'node:' .. entry[1], 'life') == entry[2] then
  alive = 1
end
table.insert(fields, '__alive')
table.insert(fields, tostring(alive))
return fields
"""


def new_node_id() -> str:
    """A node id unique to this process: ``<host>-<pid>-<random>``, for a node that has no
    lasting identity (a worker, a test). A server with one (the store's owner id) passes it
    with the life the store gave it (:meth:`~framebroker.core.Store.begin`)."""
    host = socket.gethostname().split(".")[0][:64] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Lease:
    """What an owner holds: ``session_id`` under ``epoch``. ``taken_over_from``: the owner
    (node and life) whose lease had expired when this one was drawn: the session resumes
    from its last snapshot, and the store recovers that owner's rows
    (``Store.recover([taken_over_from])``); else ``None``."""

    session_id: str
    node: str
    epoch: int
    taken_over_from: Owner | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """A session as the directory shows it: held by ``node`` in its life ``life`` under
    ``epoch``. ``alive``: that life of the node holds a current lease (else the session is an
    orphan, to be taken over or forgotten). ``data``: what the owner stored with it."""

    session_id: str
    node: str
    life: int
    epoch: int
    claimed_at: float
    data: dict[str, Any]
    alive: bool

    @property
    def owner(self) -> Owner:
        """The owner as the store names it."""
        return Owner(self.node, self.life)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as its lease record shows it: where to reach it and what it reported."""

    id: str
    life: int
    address: str
    ports: dict[str, int]
    started_at: float
    renewed_at: float
    ttl_s: float
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DirectoryCounters:
    heartbeats: int = 0
    heartbeat_failures: int = 0
    registrations: int = 0
    restored: int = 0
    lost: int = 0
    claims: int = 0
    takeovers: int = 0
    fenced: int = 0
    unavailable: int = 0


@dataclass(slots=True)
class _Held:
    lease: Lease
    data: bytes


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, bytes]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


class Directory:
    """The directory as node ``node`` sees it, on ``redis`` (see :func:`.connection.connect`).

    ``node`` and ``life``: who this process is. A server with a lasting identity passes the
    store's owner id and epoch (``Store.begin``); a new life of a node replaces the earlier
    one's lease at once, and the earlier life's sessions are orphans (:meth:`earlier`). A
    process with no lasting identity takes a :func:`new_node_id` and life 0.

    ``ttl_s``: how long the node's lease lasts without a heartbeat, which is how soon its
    sessions may be taken over after it dies; ``heartbeat_s`` (default ``ttl_s / 3``): how
    often it is renewed. ``address`` and ``ports`` say where other nodes reach this one;
    ``stats`` is called at each heartbeat for what the node reports. ``on_lost`` is called
    with the lease and the error when a heartbeat finds a session of this node taken over.
    ``op_timeout_s`` bounds every call; past it (or with Redis down) a call raises
    :class:`~framebroker.errors.ClusterUnavailable`.

    Call :meth:`start` before anything else and :meth:`stop` at the end.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        node: str | None = None,
        life: int = 0,
        ttl_s: float = 5.0,
        heartbeat_s: float | None = None,
        address: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        on_lost: Callable[[Lease, SessionFenced], object] | None = None,
        op_timeout_s: float = 2.0,
    ) -> None:
        heartbeat_s = ttl_s / 3 if heartbeat_s is None else heartbeat_s
        if not 0 < heartbeat_s < ttl_s or op_timeout_s <= 0 or life < 0:
            raise ValueError(
                f"need 0 < heartbeat_s < ttl_s, op_timeout_s > 0 and life >= 0, got "
                f"heartbeat_s={heartbeat_s}, ttl_s={ttl_s}, op_timeout_s={op_timeout_s}, "
                f"life={life}"
            )
        self.redis = redis
        self.keys = keys
        self.node = check_id(node or new_node_id(), "a node id")
        self.life = life
        self.replaced_life: int | None = None  # the earlier life this one's lease replaced
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.address = address
        self.ports = {str(k): int(v) for k, v in (ports or {}).items()}
        self.stats = stats
        self.on_lost = on_lost
        self.op_timeout_s = op_timeout_s
        self.started_at = time.time()
        self.counters = DirectoryCounters()
        self.refusals = Refusals(log, "a directory entry")
        self._token = secrets.token_hex(8)
        self._held: dict[str, _Held] = {}
        self._lease_until = 0.0  # monotonic: when the node lease runs out, as last renewed
        self._task: asyncio.Task[None] | None = None
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._leave = redis.register_script(_LEAVE)
        self._claim = redis.register_script(_CLAIM)
        self._reassert = redis.register_script(_REASSERT)
        self._update = redis.register_script(_UPDATE)
        self._release = redis.register_script(_RELEASE)
        self._lookup = redis.register_script(_LOOKUP)
        self._forget = redis.register_script(_FORGET)

    # -- the node's lease ------------------------------------------------------------------

    async def start(self) -> None:
        """Register the node (its first heartbeat) and keep renewing it. Raises
        ``ClusterUnavailable`` if Redis does not answer, ``ConfigError`` if a live process
        already uses this node id in the same life or a later one."""
        if self._task is not None:
            return
        await self.beat()
        self._task = asyncio.create_task(self._beat_forever(), name=f"directory-{self.node}")

    async def stop(self, *, leave: bool = True) -> None:
        """Stop renewing. ``leave``: delete the node's lease now, so its sessions can be
        taken over at once rather than after ``ttl_s`` (a clean shutdown); without it the
        node goes as a crashed one does."""
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task, timeout_s=self.op_timeout_s)
        if leave:
            with contextlib.suppress(ClusterUnavailable):
                await self._call(
                    "leave", lambda: self._leave(keys=[self._node_key, self.keys.nodes],
                                                 args=[self.node, self._token])
                )  # fmt: skip
            self._lease_until = 0.0

    @property
    def owner(self) -> Owner:
        """This node as the store names its owners."""
        return Owner(self.node, self.life)

    @property
    def _node_key(self) -> str:
        return self.keys.node(self.node)

    @property
    def lease_valid(self) -> bool:
        """Whether the node's lease is current as far as this node knows (its last renewal
        was acknowledged less than ``ttl_s`` ago)."""
        return time.monotonic() < self._lease_until

    @property
    def held(self) -> dict[str, Lease]:
        """The sessions this node holds, by id."""
        return {sid: h.lease for sid, h in self._held.items()}

    async def beat(self) -> None:
        """One heartbeat now: renew the node's lease (register it if it is gone, then
        re-assert every session held). Raises ``ClusterUnavailable``, ``ConfigError``."""
        stats: Mapping[str, Any] = {}
        if self.stats is not None:
            try:
                stats = self.stats()
            except Exception:
                log.exception("node %s: its stats callback failed", self.node)
        try:
            stats_json = dumps_bounded(dict(stats), max_bytes=MAX_STATS_BYTES, what="node stats")
        except WireError as e:
            log.warning("node %s: stats not sent: %s", self.node, e)
            stats_json = b"{}"
        sent = time.monotonic()
        args: list[str | bytes] = [
            self.node,
            self._token,
            str(int(self.ttl_s * 1000)),
            ENTRY_VERSION,
            self.address,
            orjson.dumps(self.ports),
            repr(self.started_at),
            stats_json,
            str(self.life),
        ]
        reply = await self._call(
            "heartbeat",
            lambda: self._heartbeat(keys=[self._node_key, self.keys.nodes], args=args),
        )
        result = _text(reply[0])
        if result == "conflict":
            raise ConfigError(
                f"node id {self.node!r} is held by another live process of cluster "
                f"{self.keys.cluster!r} (life {_text(reply[1])}, this one's is {self.life}): "
                "give every process its own node id, or a later life"
            )
        self.counters.heartbeats += 1
        self._lease_until = sent + self.ttl_s
        if result == "replaced":
            self.replaced_life = _int_or_none(reply[1])
            log.info("node %s: life %d replaces life %s", self.node, self.life, self.replaced_life)
        if result != "renewed":
            self.counters.registrations += 1
            if self._held:
                await self._reassert_all()

    async def _beat_forever(self) -> None:
        backoff = Backoff(first_s=min(0.05, self.heartbeat_s), max_s=self.heartbeat_s)
        while True:
            try:
                await self.beat()
            except (ClusterUnavailable, ConfigError) as e:
                self.counters.heartbeat_failures += 1
                if self.counters.heartbeat_failures & (self.counters.heartbeat_failures - 1) == 0:
                    log.warning("node %s: heartbeat failed: %s", self.node, e)
                await backoff.wait()
                continue
            except Exception:
                self.counters.heartbeat_failures += 1
                log.exception("node %s: heartbeat failed", self.node)
                await backoff.wait()
                continue
            backoff.reset()
            await asyncio.sleep(self.heartbeat_s)

    async def _reassert_all(self) -> None:
        """Put back every session this node holds, after its node key was found gone."""
        held = list(self._held.values())
        for start in range(0, len(held), LIST_BATCH):
            batch = held[start : start + LIST_BATCH]

            async def run(batch: list[_Held] = batch) -> list[Any]:
                pipe = self.redis.pipeline(transaction=False)
                for h in batch:
                    sid = h.lease.session_id
                    await self._reassert(
                        keys=[
                            self.keys.session(sid),
                            self.keys.sessions,
                            self.keys.owned(self.node),
                            self.keys.epoch,
                        ],
                        args=[
                            self.node,
                            ENTRY_VERSION,
                            str(h.lease.epoch),
                            h.data,
                            sid,
                            str(self.life),
                        ],
                        client=pipe,
                    )
                return list(await pipe.execute())

            results = await self._call("reassert", run)
            for h, result in zip(batch, results, strict=True):
                outcome = _text(result[0])
                if outcome == "restored":
                    self.counters.restored += 1
                elif outcome == "lost":
                    owner = _text(result[1]) or None
                    owner_epoch = int(_text(result[2])) if _text(result[2]).isdigit() else None
                    self._lose(h.lease, owner, owner_epoch)

    def _lose(self, lease: Lease, owner: str | None, owner_epoch: int | None) -> SessionFenced:
        error = SessionFenced(
            lease.session_id, epoch=lease.epoch, owner=owner, owner_epoch=owner_epoch
        )
        held = self._held.get(lease.session_id)
        if held is not None and held.lease.epoch == lease.epoch:
            del self._held[lease.session_id]
            self.counters.lost += 1
            log.warning("node %s: %s", self.node, error.message)
            if self.on_lost is not None:
                try:
                    self.on_lost(lease, error)
                except Exception:
                    log.exception("node %s: on_lost failed for %s", self.node, lease.session_id)
        return error

    # -- claims ----------------------------------------------------------------------------

    async def claim(
        self, session_id: str, *, data: Mapping[str, Any] | None = None, take_over: bool = False
    ) -> Lease:
        """Own ``session_id``: make its entry if nobody holds it (one winner among nodes that
        race), or return the lease this node already holds. With ``take_over``, an entry whose
        owner's lease expired is taken too (``Lease.taken_over_from`` names that node).

        ``data`` (JSON-able, at most 4 KiB) is stored with the entry for listings.
        Raises ``SessionConflict`` (a live node holds it, or its entry is of a version this
        node cannot read: never overwritten), ``ClusterUnavailable`` (Redis, or this node's
        own lease is not current), ``ValueError`` (a bad id or data).
        """
        return await self._acquire(session_id, data, mode="claim_or_take" if take_over else "claim")

    async def take_over(self, session_id: str, *, data: Mapping[str, Any] | None = None) -> Lease:
        """Own ``session_id``, whose owner's lease expired, under a new epoch: from here on
        the old owner's writes are refused. Raises ``SessionNotFound`` (no such entry),
        ``SessionConflict`` (its owner is alive), ``ClusterUnavailable``."""
        return await self._acquire(session_id, data, mode="take")

    async def _acquire(
        self,
        session_id: str,
        data: Mapping[str, Any] | None,
        *,
        mode: Literal["claim", "claim_or_take", "take"],
    ) -> Lease:
        key = self.keys.session(session_id)
        data_json = dumps_bounded(dict(data or {}), max_bytes=MAX_DATA_BYTES, what="session data")
        result = await self._call(
            "claim",
            lambda: self._claim(
                keys=[
                    key,
                    self.keys.sessions,
                    self.keys.owned(self.node),
                    self.keys.epoch,
                    self._node_key,
                ],
                args=[
                    self.node,
                    self._token,
                    ENTRY_VERSION,
                    data_json,
                    self.keys.prefix,
                    session_id,
                    mode,
                    str(self.life),
                ],
            ),
        )
        outcome = _text(result[0])
        if outcome == "claimed":
            taken_from = None
            if _text(result[2]):
                taken_from = Owner(_text(result[2]), int(_text(result[3])))
            lease = Lease(session_id, self.node, int(_text(result[1])), taken_from)
            self.counters.takeovers += taken_from is not None
            self.counters.claims += taken_from is None
            self._held[session_id] = _Held(lease, data_json)
            return lease
        if outcome == "mine":
            held = self._held.get(session_id)
            epoch = int(_text(result[1]))
            if held is not None and held.lease.epoch == epoch:
                return held.lease
            lease = Lease(session_id, self.node, epoch)
            self._held[session_id] = _Held(lease, data_json)
            return lease
        if outcome == "held":
            raise SessionConflict(
                f"session {session_id!r} is held by node {_text(result[1])!r} "
                f"(epoch {_text(result[2])})"
            )
        if outcome == "orphan":
            raise SessionConflict(
                f"session {session_id!r} belongs to node {_text(result[1])!r}, whose lease "
                f"expired (epoch {_text(result[2])}): take it over to resume it"
            )
        if outcome == "missing":
            raise SessionNotFound(session_id)
        if outcome == "invalid":
            self.refusals.refuse("version", f"session {session_id!r}: v={_text(result[1])}")
            raise SessionConflict(
                f"session {session_id!r} has a directory entry this node cannot read "
                f"(version {_text(result[1])}); it is left as it is"
            )
        # no_lease: our node key is gone or another process's; the next heartbeat heals it.
        self.counters.unavailable += 1
        raise ClusterUnavailable(
            f"node {self.node!r} has no current lease in the cluster; claims wait for its "
            "next heartbeat",
            operation="claim",
        )

    async def update(self, lease: Lease, data: Mapping[str, Any]) -> None:
        """Replace what the entry of ``lease`` stores. Raises ``SessionFenced`` (the session
        was taken over, or is gone), ``ClusterUnavailable``."""
        data_json = dumps_bounded(dict(data), max_bytes=MAX_DATA_BYTES, what="session data")
        result = await self._call(
            "update",
            lambda: self._update(
                keys=[self.keys.session(lease.session_id)],
                args=[lease.node, str(lease.epoch), data_json],
            ),
        )
        self._fence_check(lease, result)
        held = self._held.get(lease.session_id)
        if held is not None and held.lease.epoch == lease.epoch:
            held.data = data_json

    async def release(self, lease: Lease) -> bool:
        """Remove the entry of ``lease`` (the session ended). ``False``: it was gone already.
        Raises ``SessionFenced`` (another node holds it now: its entry is left alone),
        ``ClusterUnavailable``."""
        result = await self._call(
            "release",
            lambda: self._release(
                keys=[
                    self.keys.session(lease.session_id),
                    self.keys.sessions,
                    self.keys.owned(lease.node),
                ],
                args=[lease.node, str(lease.epoch), lease.session_id],
            ),
        )
        held = self._held.get(lease.session_id)
        if _text(result[0]) == "missing":
            if held is not None and held.lease.epoch == lease.epoch:
                del self._held[lease.session_id]
            return False
        self._fence_check(lease, result)
        if held is not None and held.lease.epoch == lease.epoch:
            del self._held[lease.session_id]
        return True

    async def check(self, lease: Lease) -> None:
        """Raise ``SessionFenced`` unless the directory still gives the session to ``lease``
        (a read: for a write that is not in Redis, pass the epoch along and check it where it
        is written). Raises ``ClusterUnavailable``."""
        node, epoch = await self._call(
            "check",
            lambda: self.redis.hmget(self.keys.session(lease.session_id), ["node", "epoch"]),
        )
        if node is None:
            raise self._fenced(lease, None, None)
        if _text(node) != lease.node or _text(epoch) != str(lease.epoch):
            raise self._fenced(lease, _text(node), _int_or_none(epoch))

    def _fence_check(self, lease: Lease, result: list[Any]) -> None:
        outcome = _text(result[0])
        if outcome == "ok":
            return
        if outcome == "missing":
            raise self._fenced(lease, None, None)
        raise self._fenced(lease, _text(result[1]), _int_or_none(result[2]))

    def _fenced(self, lease: Lease, owner: str | None, owner_epoch: int | None) -> SessionFenced:
        self.counters.fenced += 1
        if lease.node == self.node:
            return self._lose(lease, owner, owner_epoch)
        return SessionFenced(
            lease.session_id, epoch=lease.epoch, owner=owner, owner_epoch=owner_epoch
        )

    # -- reading ---------------------------------------------------------------------------

    async def lookup(self, session_id: str) -> Entry | None:
        """The entry of ``session_id`` with whether its owner is alive, or ``None`` (no entry,
        or one this node cannot read: refused and counted). Raises ``ClusterUnavailable``."""
        fields = await self._call(
            "lookup",
            lambda: self._lookup(keys=[self.keys.session(session_id)], args=[self.keys.prefix]),
        )
        if not fields:
            return None
        values = _pairs(fields)
        if "__type" in values:
            self.refusals.refuse("malformed", f"session {session_id!r} is a {values['__type']!r}")
            return None
        alive = values.pop("__alive", b"0") == b"1"
        return self._entry(session_id, values, alive=alive)

    def _entry(self, session_id: str, values: Mapping[str, bytes], *, alive: bool) -> Entry | None:
        version = values.get("v")
        if version is None or _text(version) != ENTRY_VERSION:
            self.refusals.refuse("version", f"session {session_id!r}: v={version!r:.20}")
            return None
        try:
            data = orjson.loads(values.get("data", b"{}"))
            if not isinstance(data, dict):
                raise ValueError(f"data is a {type(data).__name__}")
            return Entry(
                session_id=session_id,
                node=_text(values["node"]),
                life=int(values["life"]),
                epoch=int(values["epoch"]),
                claimed_at=int(values["claimed_at"]) / 1000,
                data=data,
                alive=alive,
            )
        except (KeyError, ValueError) as e:
            self.refusals.refuse("malformed", f"session {session_id!r}: {e!r:.200}")
            return None

    async def sessions(self, *, limit: int = 10_000) -> list[Entry]:
        """Every session of the cluster (up to ``limit``), each with its node and whether
        that node is alive. Raises ``ClusterUnavailable``."""
        return await self._call("list", lambda: self._list_sessions(limit))

    async def _list_sessions(self, limit: int) -> list[Entry]:
        ids: list[str] = []
        async for sid in self.redis.sscan_iter(self.keys.sessions, count=LIST_BATCH):
            ids.append(_text(sid))
            if len(ids) >= limit:
                break
        entries: list[Entry] = []
        for start in range(0, len(ids), LIST_BATCH):
            batch = ids[start : start + LIST_BATCH]
            pipe = self.redis.pipeline(transaction=False)
            for sid in batch:
                pipe.hgetall(self.keys.session(sid))
            rows: list[dict[bytes, bytes]] = await pipe.execute(raise_on_error=False)
            found = []
            for sid, row in zip(batch, rows, strict=True):
                if isinstance(row, Exception):
                    self.refusals.refuse("malformed", f"session {sid!r}: {row}")
                elif row:  # an id whose entry went between the two reads: ended meanwhile
                    found.append((sid, {_text(k): v for k, v in row.items()}))
            owners = sorted({_text(values.get("node", b"")) for _, values in found} - {""})
            lives = await self._lives(owners)
            for sid, values in found:
                life = lives.get(_text(values.get("node", b"")))
                alive = life is not None and values.get("life") == life
                entry = self._entry(sid, values, alive=alive)
                if entry is not None:
                    entries.append(entry)
        return entries

    async def _lives(self, nodes: list[str]) -> dict[str, bytes | None]:
        """The current life of each of ``nodes`` (``None``: its lease is gone)."""
        if not nodes:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.hget(self.keys.node(node), "life")
        return dict(zip(nodes, await pipe.execute(raise_on_error=False), strict=True))

    async def nodes(self, *, limit: int = 10_000) -> list[NodeInfo]:
        """The live nodes of the cluster (their leases are current). Raises
        ``ClusterUnavailable``."""

        async def read() -> list[NodeInfo]:
            names = [_text(n) for n in await self.redis.zrange(self.keys.nodes, 0, limit - 1)]
            if not names:
                return []
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.keys.node(name))
            out = []
            for name, row in zip(names, await pipe.execute(raise_on_error=False), strict=True):
                if isinstance(row, Exception):
                    self.refusals.refuse("malformed", f"node {name!r}: {row}")
                elif row:
                    info = self._node_info(name, {_text(k): v for k, v in row.items()})
                    if info is not None:
                        out.append(info)
            return out

        return await self._call("nodes", read)

    def _node_info(self, name: str, values: Mapping[str, bytes]) -> NodeInfo | None:
        if _text(values.get("v", b"")) != ENTRY_VERSION:
            self.refusals.refuse("version", f"node {name!r}: v={values.get('v')!r:.20}")
            return None
        try:
            ports = orjson.loads(values.get("ports", b"{}"))
            stats = orjson.loads(values.get("stats", b"{}"))
            if not isinstance(ports, dict) or not isinstance(stats, dict):
                raise ValueError("ports and stats must be objects")
            return NodeInfo(
                id=name,
                life=int(values["life"]),
                address=_text(values["address"]),
                ports={str(k): int(v) for k, v in ports.items()},
                started_at=float(values["started_at"]),
                renewed_at=int(values["renewed_at"]) / 1000,
                ttl_s=int(values["ttl_ms"]) / 1000,
                stats=stats,
            )
        except (KeyError, ValueError, TypeError) as e:
            self.refusals.refuse("malformed", f"node {name!r}: {e!r:.200}")
            return None

    async def orphans(self, *, limit: int = 10_000) -> list[Entry]:
        """The sessions whose owner's lease expired, for a live node to take over. Nodes that
        are dead and hold nothing any more are forgotten on the way. Raises
        ``ClusterUnavailable``."""

        async def read() -> list[Entry]:
            names = [_text(n) for n in await self.redis.zrange(self.keys.nodes, 0, limit - 1)]
            lives = await self._lives(names)
            found: list[Entry] = []
            for name in (n for n in names if not isinstance(lives[n], bytes)):
                ids: list[str] = []
                async for sid in self.redis.sscan_iter(self.keys.owned(name), count=LIST_BATCH):
                    ids.append(_text(sid))
                    if len(ids) >= limit:
                        break
                if not ids:
                    await self.redis.zrem(self.keys.nodes, name)
                    continue
                for sid in ids:
                    entry = await self.lookup(sid)
                    if entry is not None and entry.node == name and not entry.alive:
                        found.append(entry)
                    elif entry is None or entry.node != name:
                        await self.redis.srem(self.keys.owned(name), sid)
                    if len(found) >= limit:
                        return found
            return found

        return await self._call("orphans", read)

    async def earlier(self, *, limit: int = 10_000) -> list[Entry]:
        """The sessions this node's earlier lives held (orphans since this life started):
        take them over to resume them, or :meth:`forget` them once the store has recovered
        (ended) them. Raises ``ClusterUnavailable``."""

        async def read() -> list[Entry]:
            found: list[Entry] = []
            async for sid in self.redis.sscan_iter(self.keys.owned(self.node), count=LIST_BATCH):
                entry = await self.lookup(_text(sid))
                if entry is not None and entry.node == self.node and entry.life < self.life:
                    found.append(entry)
                    if len(found) >= limit:
                        break
            return found

        return await self._call("earlier", read)

    async def forget(self, entry: Entry) -> bool:
        """Remove an orphan's entry (its session was ended by recovery rather than taken
        over); ``False`` if it changed since ``entry`` was read (taken over, or gone). Raises
        ``SessionConflict`` if its owner is alive after all, ``ClusterUnavailable``."""
        result = await self._call(
            "forget",
            lambda: self._forget(
                keys=[self.keys.session(entry.session_id), self.keys.sessions],
                args=[str(entry.epoch), self.keys.prefix, entry.session_id],
            ),
        )
        if int(result) < 0:
            raise SessionConflict(
                f"session {entry.session_id!r} is held by node {entry.node!r}, alive: "
                "not an orphan to forget"
            )
        return bool(result)

    # -- plumbing --------------------------------------------------------------------------

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await guarded(operation, call, timeout_s=self.op_timeout_s)
        except ClusterUnavailable:
            self.counters.unavailable += 1
            raise

    def snapshot(self) -> dict[str, Any]:
        """Counters and state, for metrics and the console."""
        return {
            "node": self.node,
            "held": len(self._held),
            "lease_valid": self.lease_valid,
            "refusals": self.refusals.as_dict(),
            **{k: getattr(self.counters, k) for k in DirectoryCounters.__dataclass_fields__},
        }


def _int_or_none(value: Any) -> int | None:
    try:
        return int(_text(value))
    except (TypeError, ValueError):
        return None
