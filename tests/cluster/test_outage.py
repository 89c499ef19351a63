"""Redis unreachable for 10 s under two nodes (issue 15, "Faults"): nothing crashes, what
runs keeps running, what needs the directory gets a 503 with a named code, and everything
heals by itself once Redis is back, without restarting a client."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from framebroker.cluster.bus import RedisBus
from framebroker.cluster.directory import Directory
from framebroker.cluster.keys import Keys
from framebroker.cluster.sources import SourceLease
from framebroker.errors import ClusterUnavailable
from tests.redis_server import RedisServer

from .helpers import eventually

OUTAGE_S = 10.0
TTL_S = 1.0


async def test_ten_seconds_without_redis(
    redis_server: RedisServer, clients: list[Redis], keys: Keys
) -> None:
    timing = {"op_timeout_s": 0.5}
    bus_timing = {**timing, "block_s": 0.2, "backoff_s": (0.02, 0.5)}
    dir_a = Directory(clients[0], keys=keys, node="a", ttl_s=TTL_S, **timing)
    dir_b = Directory(clients[1], keys=keys, node="b", ttl_s=TTL_S, **timing)
    bus_a = RedisBus(clients[0], keys=keys, node="a", **bus_timing)
    bus_b = RedisBus(clients[1], keys=keys, node="b", **bus_timing)
    source = SourceLease(clients[0], keys=keys, node="a", source="door", ttl_s=TTL_S, **timing)
    source_states: list[tuple[float, bool]] = []

    async def run_source() -> None:
        async for held in source.watch():
            source_states.append((time.monotonic(), held))

    stop = asyncio.Event()
    events_sent = 0

    async def publish() -> None:  # a live feed on node a: frames at 20 fps, an event a second
        nonlocal events_sent
        i = 0
        while not stop.is_set():
            bus_a.publish("live/door/frame", {"jpeg_b64": "x" * 1000, "i": i})
            if i % 20 == 0:
                bus_a.publish("live/door/event", {"data": {"n": events_sent}})
                events_sent += 1
            i += 1
            await asyncio.sleep(0.05)

    for part in (dir_a, dir_b, bus_a, bus_b):
        await part.start()
    tasks = [asyncio.create_task(run_source()), asyncio.create_task(publish())]
    try:
        lease = await dir_a.claim("s1", data={"transport": "rest"})
        remote = bus_b.subscribe("live/*", maxlen=16)
        local = bus_a.subscribe("live/door/event")
        await bus_b.synced()
        await eventually(lambda: bool(source_states) and source_states[-1][1])

        redis_server.kill()
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_S:
            start = time.monotonic()
            with pytest.raises(ClusterUnavailable) as down:
                await dir_b.claim("s2")
            assert time.monotonic() - start < 1.0  # fails fast, never hangs
            error = down.value
            assert (error.http_status, error.code, error.operation) == (
                503,
                "cluster_unavailable",
                "claim",
            )
            await asyncio.sleep(0.5)
        # Publishing went on all along: local subscribers were served, frames counted as lost.
        assert len(local.drain()) >= OUTAGE_S - 1
        assert bus_a.counters.dropped_unavailable > 0
        assert dir_a.held == {"s1": lease}  # the session kept running on its node
        # The source stopped once its lease could not be renewed (another node may hold it).
        assert source_states[-1][1] is False
        assert source_states[-1][0] - down_at < 2 * TTL_S

        redis_server.start()  # on the same port, empty
        back_at = time.monotonic()
        await eventually(lambda: _owned_by(dir_b, "s1", "a"), timeout_s=5, what="s1 restored")
        await eventually(lambda: source_states[-1][1], timeout_s=5, what="the source resumed")
        await bus_b.synced(timeout_s=5)
        got: list[int] = []

        async def events_arrive() -> bool:
            got.extend(m.payload["data"]["n"] for m in remote.drain() if "event" in m.topic)
            return bool(got) and got[-1] >= events_sent - 1

        await eventually(events_arrive, timeout_s=5, what="events after the outage")
        healed_in = time.monotonic() - back_at
        # Events published while Redis was away waited in the outbox: none lost, in order.
        assert got == sorted(set(got))
        assert set(range(got[0], events_sent)) <= set(got)
        assert bus_b.counters.gaps == 0
        assert (await dir_b.claim("s2")).node == "b"
        assert healed_in < 5
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=2)
        for part in (bus_a, bus_b):
            await part.close()
        for d in (dir_a, dir_b):
            await d.stop(leave=False)


async def _owned_by(d: Directory, sid: str, node: str) -> bool:
    try:
        entry = await d.lookup(sid)
    except ClusterUnavailable:
        return False
    return entry is not None and entry.node == node and entry.alive
