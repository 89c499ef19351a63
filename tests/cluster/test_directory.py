"""The session directory against a real redis-server: claim races, leases, takeover with
fencing, heartbeats, healing after Redis lost everything, and refusals of entries it cannot
read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from framebroker.cluster.connection import connect
from framebroker.cluster.directory import Directory, Entry, Lease
from framebroker.cluster.keys import Keys
from framebroker.core.store import Owner
from framebroker.errors import (
    ClusterUnavailable,
    ConfigError,
    SessionConflict,
    SessionFenced,
    SessionNotFound,
)
from tests.redis_server import RedisServer

from .helpers import eventually

TTL_S = 1.0
HEARTBEAT_S = 0.2

MakeDirectory = Callable[..., Directory]


@pytest.fixture
async def make_directory(
    clients: list[Redis], keys: Keys
) -> AsyncIterator[Callable[..., Directory]]:
    """``make_directory(i)``: node ``n<i>`` on client ``i`` (not started)."""
    made: list[Directory] = []

    def make(i: int, **kwargs: Any) -> Directory:
        kwargs.setdefault("ttl_s", TTL_S)
        kwargs.setdefault("heartbeat_s", HEARTBEAT_S)
        kwargs.setdefault("op_timeout_s", 1.0)
        directory = Directory(clients[i], keys=keys, node=f"n{i}", **kwargs)
        made.append(directory)
        return directory

    yield make
    for directory in made:
        await directory.stop(leave=False)


async def test_concurrent_claims_of_the_same_ids_have_exactly_one_winner_each(
    make_directory: MakeDirectory,
) -> None:
    a, b = make_directory(0), make_directory(1)
    await a.start()
    await b.start()
    ids = [f"cam-{i}" for i in range(150)]

    async def claim(d: Directory, sid: str) -> Lease | None:
        try:
            return await d.claim(sid, data={"transport": "rest"})
        except SessionConflict:
            return None

    results = await asyncio.gather(*(claim(d, sid) for sid in ids for d in (a, b)))
    winners = [r for r in results if r is not None]
    assert sorted(w.session_id for w in winners) == sorted(ids)  # one per id, never two
    for lease in winners:
        entry = await a.lookup(lease.session_id)
        assert entry is not None
        assert (entry.node, entry.epoch, entry.alive) == (lease.node, lease.epoch, True)
        assert entry.data == {"transport": "rest"}
    assert len({w.epoch for w in winners}) == len(ids)  # a fencing token is never reused
    assert {w.node for w in winners} == {"n0", "n1"}  # both won some: it was a race
    listed = {e.session_id: e.node for e in await b.sessions()}
    assert listed == {w.session_id: w.node for w in winners}
    assert set(a.held) | set(b.held) == set(ids)
    assert not set(a.held) & set(b.held)


async def test_claiming_again_returns_the_same_lease_and_release_removes_the_entry(
    make_directory: MakeDirectory,
) -> None:
    a, b = make_directory(0), make_directory(1)
    await a.start()
    await b.start()
    lease = await a.claim("s1")
    assert await a.claim("s1") == lease
    with pytest.raises(SessionConflict, match="held by node 'n0'"):
        await b.claim("s1")
    with pytest.raises(SessionConflict):
        await b.take_over("s1")  # its owner is alive
    with pytest.raises(SessionNotFound):
        await b.take_over("nobody")
    assert await a.release(lease) is True
    assert await a.lookup("s1") is None
    assert await a.sessions() == []
    assert await a.release(lease) is False  # gone already: not an error
    second = await b.claim("s1")  # a new session under the same id, with a newer epoch
    assert second.epoch > lease.epoch


async def test_an_expired_owner_is_taken_over_and_its_writes_are_fenced(
    make_directory: MakeDirectory,
) -> None:
    lost: list[tuple[Lease, SessionFenced]] = []
    a = make_directory(0, on_lost=lambda lease, e: lost.append((lease, e)))
    b = make_directory(1)
    await a.start()
    await b.start()
    old = await a.claim("s1", data={"frames": 1})
    other = await a.claim("s2")
    await a.stop(leave=False)  # a pauses (a GC pause, a partition): it stops renewing
    with pytest.raises(SessionConflict):
        await b.claim("s1")  # not before its lease runs out
    waited = await eventually(
        lambda: _owner_dead(b, "s1"), timeout_s=TTL_S + 1, what="a's lease expires"
    )
    assert waited <= TTL_S + 0.3
    with pytest.raises(SessionConflict, match="take it over"):
        await b.claim("s1")  # a plain claim does not take over
    new = await b.take_over("s1", data={"frames": 2})
    assert new.epoch > old.epoch
    assert new.taken_over_from == Owner("n0", 0)  # what the store recovers
    # a wakes up and, still sure of its lease, writes: refused, and the entry is b's.
    with pytest.raises(SessionFenced) as fenced:
        await a.update(old, {"frames": 99})
    assert (fenced.value.owner, fenced.value.owner_epoch) == ("n1", new.epoch)
    assert fenced.value.http_status == 409
    assert fenced.value.code == "stale_owner"  # as the store says it
    with pytest.raises(SessionFenced):
        await a.release(old)
    with pytest.raises(SessionFenced):
        await a.check(old)
    entry = await b.lookup("s1")
    assert entry is not None
    assert (entry.node, entry.epoch, entry.data) == ("n1", new.epoch, {"frames": 2})
    assert [(lease.session_id, e.owner) for lease, e in lost] == [("s1", "n1")]
    # s2 was never taken: when a's heartbeat comes back it registers again and keeps it.
    await a.start()
    assert a.held == {"s2": other}
    await b.check(new)
    await a.check(other)
    assert a.counters.registrations == 2


async def test_a_heartbeat_finds_a_session_taken_while_it_was_away(
    make_directory: MakeDirectory,
) -> None:
    lost: list[str] = []
    a = make_directory(0, on_lost=lambda lease, e: lost.append(lease.session_id))
    b = make_directory(1)
    await a.start()
    await b.start()
    await a.claim("s1")
    await a.stop(leave=False)
    await eventually(lambda: _owner_dead(b, "s1"), timeout_s=TTL_S + 1)
    await b.claim("s1", take_over=True)
    await a.start()  # registers again, re-asserts what it holds: s1 is b's now
    assert lost == ["s1"]
    assert a.held == {}


async def test_heartbeats_publish_the_node_record_and_a_clean_stop_frees_sessions_at_once(
    make_directory: MakeDirectory,
) -> None:
    beats = 0

    def stats() -> dict[str, int]:
        nonlocal beats
        beats += 1
        return {"sessions": 3, "beats": beats}

    a = make_directory(0, address="10.0.0.7", ports={"http": 8000, "relay": 9000}, stats=stats)
    b = make_directory(1)
    await a.start()
    await b.start()
    lease = await a.claim("s1")
    nodes = {n.id: n for n in await b.nodes()}
    assert set(nodes) == {"n0", "n1"}
    first = nodes["n0"]
    assert first.address == "10.0.0.7"
    assert first.ports == {"http": 8000, "relay": 9000}
    assert first.ttl_s == TTL_S
    assert abs(first.started_at - time.time()) < 5
    await asyncio.sleep(3 * HEARTBEAT_S)
    later = {n.id: n for n in await b.nodes()}["n0"]
    assert later.renewed_at > first.renewed_at
    assert later.stats["beats"] > first.stats["beats"]
    assert a.lease_valid
    await a.stop()  # leave: its lease goes now, not after the TTL
    assert not a.lease_valid
    assert [n.id for n in await b.nodes()] == ["n1"]
    orphans = await b.orphans()
    assert [(o.session_id, o.node, o.alive) for o in orphans] == [("s1", "n0", False)]
    taken = await b.take_over("s1")
    assert taken.epoch > lease.epoch
    assert await b.orphans() == []
    with pytest.raises(ClusterUnavailable, match="no current lease"):
        await a.claim("s2")  # a node that left claims nothing


async def test_two_processes_with_one_node_id_are_refused(
    clients: list[Redis], keys: Keys, make_directory: MakeDirectory
) -> None:
    await make_directory(0).start()
    twin = Directory(clients[1], keys=keys, node="n0", ttl_s=TTL_S, heartbeat_s=HEARTBEAT_S)
    with pytest.raises(ConfigError, match="another live process"):
        await twin.start()


async def test_a_new_life_of_a_node_replaces_the_old_one_whose_sessions_become_orphans(
    clients: list[Redis], keys: Keys, make_directory: MakeDirectory
) -> None:
    """A server restarted with its lasting id (the store's owner) and its next epoch does not
    wait for its crashed life's lease to run out."""
    old = make_directory(0, life=3)
    await old.start()
    resumed = await old.claim("resumed", data={"frames": 9})
    await old.claim("ended")
    new = Directory(clients[1], keys=keys, node="n0", life=4, ttl_s=TTL_S, heartbeat_s=HEARTBEAT_S)
    try:
        await new.start()  # at once, though life 3's lease is current
        assert new.replaced_life == 3
        entry = await new.lookup("resumed")
        assert entry is not None
        assert (entry.owner, entry.alive) == (Owner("n0", 3), False)
        assert sorted(e.session_id for e in await new.earlier()) == ["ended", "resumed"]
        taken = await new.take_over("resumed")
        assert taken.taken_over_from == Owner("n0", 3)
        assert taken.epoch > resumed.epoch
        [ended] = await new.earlier()
        assert await new.forget(ended)  # the store recovered (ended) it: gone from here too
        assert await new.lookup("ended") is None
        assert await new.earlier() == []
        with pytest.raises(ConfigError, match="life 4"):
            await old.beat()  # the old life, if it still runs, is refused
        with pytest.raises(SessionFenced):
            await old.update(resumed, {"frames": 10})
        with pytest.raises(SessionConflict, match="not an orphan"):
            await new.forget(await _must(new.lookup("resumed")))
    finally:
        await new.stop(leave=False)


async def _must(entry: Awaitable[Entry | None]) -> Entry:
    found = await entry
    assert found is not None
    return found


async def test_entries_it_cannot_read_are_refused_counted_and_never_overwritten(
    clients: list[Redis], keys: Keys, make_directory: MakeDirectory
) -> None:
    a = make_directory(0)
    await a.start()
    await a.claim("good")
    raw = clients[3]
    await raw.hset(keys.session("future"), mapping={"v": "2", "node": "n9", "epoch": "7"})
    await raw.sadd(keys.sessions, "future", "broken", "wrongtype")
    await raw.hset(keys.session("broken"), mapping={"v": "1", "node": "n9", "epoch": "x"})
    await raw.set(keys.session("wrongtype"), "a string")
    assert await a.lookup("future") is None
    assert await a.lookup("broken") is None
    assert await a.lookup("wrongtype") is None
    assert [e.session_id for e in await a.sessions()] == ["good"]
    with pytest.raises(SessionConflict, match="cannot read"):
        await a.claim("future")
    assert await raw.hget(keys.session("future"), "v") == b"2"  # left as it was
    assert a.refusals.counts["version"] >= 3
    assert a.refusals.counts["malformed"] >= 3


async def test_the_directory_heals_after_redis_restarts_empty(
    redis_server: RedisServer, make_directory: MakeDirectory
) -> None:
    a, b = make_directory(0), make_directory(1)
    await a.start()
    await b.start()
    leases = [await a.claim(f"s{i}", data={"i": i}) for i in range(5)]
    redis_server.restart()  # kill -9, then the same port, empty
    await eventually(
        lambda: _entry_is(a, "s4", "n0", leases[4].epoch), timeout_s=3, what="entries restored"
    )
    for lease in leases:
        entry = await b.lookup(lease.session_id)
        assert entry is not None
        assert (entry.node, entry.epoch, entry.alive) == ("n0", lease.epoch, True)
    assert a.counters.restored == 5
    assert {n.id for n in await b.nodes()} == {"n0", "n1"}
    # The epoch counter was raised past what was restored: a new claim fences nothing old.
    fresh = await b.claim("new")
    assert fresh.epoch > max(lease.epoch for lease in leases)
    await a.update(leases[0], {"i": "still ours"})


async def test_calls_fail_fast_with_cluster_unavailable_while_redis_is_down(
    redis_server: RedisServer, make_directory: MakeDirectory
) -> None:
    a = make_directory(0)
    await a.start()
    lease = await a.claim("s1")
    redis_server.kill()
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable) as down:
        await a.claim("s2")
    assert time.monotonic() - start < 2
    assert (down.value.http_status, down.value.code) == (503, "cluster_unavailable")
    assert down.value.operation == "claim"
    with pytest.raises(ClusterUnavailable):
        await a.lookup("s1")
    assert a.held == {"s1": lease}  # what it runs, it keeps running
    redis_server.start()
    await eventually(lambda: _entry_is(a, "s1", "n0", lease.epoch), timeout_s=3)
    assert (await a.claim("s2")).session_id == "s2"


async def test_a_frozen_redis_times_out_rather_than_hanging(
    redis_server: RedisServer, keys: Keys
) -> None:
    client = connect(redis_server.url, timeout_s=0.3)
    directory = Directory(client, keys=keys, node="n0", ttl_s=TTL_S, op_timeout_s=0.5)
    try:
        await directory.start()
        redis_server.pause()
        start = time.monotonic()
        with pytest.raises(ClusterUnavailable):
            await directory.lookup("s1")
        assert time.monotonic() - start < 1.0
        redis_server.resume()
        await eventually(lambda: _answers(directory), timeout_s=3)
    finally:
        await directory.stop(leave=False)
        await client.aclose()


async def _owner_dead(d: Directory, sid: str) -> bool:
    entry = await d.lookup(sid)
    return entry is not None and not entry.alive


async def _entry_is(d: Directory, sid: str, node: str, epoch: int) -> bool:
    try:
        entry = await d.lookup(sid)
    except ClusterUnavailable:
        return False
    return entry is not None and (entry.node, entry.epoch) == (node, epoch)


async def _answers(d: Directory) -> bool:
    try:
        await d.lookup("s1")
    except ClusterUnavailable:
        return False
    return True
