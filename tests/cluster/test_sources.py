"""Source leases against a real redis-server: one holder among nodes, takeover within a few
seconds of the holder stopping, a clean handover, a holder told it lost, and Redis
restarting under a holder; and the keeper that runs a source only while its node holds the
lease."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from framebroker.cluster.keys import Keys
from framebroker.cluster.sources import SourceKeeper, SourceLease
from framebroker.errors import SessionConflict
from tests.redis_server import RedisServer

from .helpers import eventually

TTL_S = 1.0


@pytest.fixture
def make_lease(clients: list[Redis], keys: Keys) -> Callable[..., SourceLease]:
    def make(i: int, source: str = "door", **kwargs: Any) -> SourceLease:
        kwargs.setdefault("ttl_s", TTL_S)
        kwargs.setdefault("op_timeout_s", 0.3)
        return SourceLease(clients[i], keys=keys, node=f"n{i}", source=source, **kwargs)

    return make


class Watcher:
    """A node running ``watch()`` as its source would: what it yielded, and when."""

    def __init__(self, lease: SourceLease) -> None:
        self.lease = lease
        self.events: list[tuple[float, bool]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for held in self.lease.watch():
            self.events.append((time.monotonic(), held))

    @property
    def running(self) -> bool:
        return bool(self.events) and self.events[-1][1]

    async def crash(self) -> None:
        """Stop renewing without a word, as a killed node does."""
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=2)


@pytest.fixture
async def watchers() -> AsyncIterator[list[Watcher]]:
    made: list[Watcher] = []
    yield made
    for w in made:
        await w.crash()


async def test_one_node_of_several_holds_a_source(
    make_lease: Callable[..., SourceLease],
) -> None:
    leases = [make_lease(i) for i in range(3)]
    won = await asyncio.gather(*(lease.acquire() for lease in leases))
    assert sorted(won) == [False, False, True]
    winner = leases[won.index(True)]
    holder = await leases[0].holder()
    assert holder is not None
    assert (holder.node, holder.epoch) == (winner.node, winner.epoch)
    assert 0 < holder.ttl_s <= TTL_S
    assert await winner.acquire()  # holding it already: renewed
    other = make_lease(0, source="street")
    assert await other.acquire()  # another source is another lease


async def test_another_node_takes_a_source_over_within_seconds_of_its_holder_dying(
    make_lease: Callable[..., SourceLease], watchers: list[Watcher]
) -> None:
    watchers.extend(Watcher(make_lease(i)) for i in range(3))
    await eventually(lambda: sum(w.running for w in watchers) == 1, what="one holder")
    [first] = [w for w in watchers if w.running]
    await asyncio.sleep(2 * TTL_S)  # renewals keep it where it is
    assert [w for w in watchers if w.running] == [first]
    assert first.events == [first.events[0]]
    died_at = time.monotonic()
    await first.crash()
    others = [w for w in watchers if w is not first]
    took = await eventually(
        lambda: sum(w.running for w in others) == 1, timeout_s=3 * TTL_S, what="a takeover"
    )
    assert took <= TTL_S + first.lease.retry_s + 0.5
    [second] = [w for w in others if w.running]
    # Not before the lease ran out: a full TTL after the holder's last renewal, which came
    # at most renew_s before it died.
    assert second.events[-1][0] - died_at >= TTL_S - first.lease.renew_s - 0.05
    assert second.lease.epoch is not None
    assert first.lease.epoch is not None
    assert second.lease.epoch > first.lease.epoch


async def test_a_clean_release_hands_the_source_over_at_once(
    make_lease: Callable[..., SourceLease], watchers: list[Watcher]
) -> None:
    a = make_lease(0)
    assert await a.acquire()
    watchers.append(Watcher(make_lease(1, retry_s=0.05)))
    await asyncio.sleep(0.2)
    assert not watchers[0].running
    await a.release()
    took = await eventually(lambda: watchers[0].running, timeout_s=TTL_S)
    assert took < 0.5 * TTL_S


async def test_a_holder_that_was_away_past_its_lease_is_told_it_lost(
    make_lease: Callable[..., SourceLease],
) -> None:
    a, b = make_lease(0), make_lease(1)
    assert await a.acquire()
    await asyncio.sleep(TTL_S * 1.2)  # a froze: no renewal
    assert not a.held  # it knows its lease ran out
    assert await b.acquire()
    assert await a.renew() is False
    assert a.losses == 1
    assert not await a.acquire()  # b holds it


async def test_a_holder_keeps_its_source_when_redis_restarts_empty(
    make_lease: Callable[..., SourceLease], watchers: list[Watcher], redis_server: RedisServer
) -> None:
    w = Watcher(make_lease(0))
    watchers.append(w)
    await eventually(lambda: w.running)
    epoch = w.lease.epoch
    redis_server.restart()  # kill -9, the same port, empty: the key is gone
    standby = make_lease(1)

    async def restored() -> bool:
        holder = await standby.holder()
        return holder is not None and holder.node == "n0"

    await eventually(restored, timeout_s=3 * TTL_S, what="the lease put back")
    assert w.events == [w.events[0]]  # never stopped
    assert w.lease.epoch == epoch
    assert not await standby.acquire()


async def test_a_lease_key_it_cannot_read_is_refused_and_waited_out(
    make_lease: Callable[..., SourceLease],
    watchers: list[Watcher],
    clients: list[Redis],
    keys: Keys,
) -> None:
    raw = clients[3]
    await raw.set(keys.source("door"), "2|n9|5")  # another version's lease
    await raw.hset(keys.source("street"), "x", "1")  # not even a string
    door, street = (
        Watcher(make_lease(0, retry_s=0.05)),
        Watcher(make_lease(1, "street", retry_s=0.05)),
    )
    watchers.extend((door, street))
    await eventually(lambda: door.lease.refusals > 0 and street.lease.refusals > 0)
    assert not door.running
    assert not street.running
    await raw.delete(keys.source("door"), keys.source("street"))
    await eventually(lambda: door.running and street.running)


class Source:
    """A source as a keeper drives it: ``log`` records starts and stops across nodes, in
    order; the next ``fail`` starts raise (what a start raises while the dead holder's
    session is still its own, then something unexpected)."""

    def __init__(self, name: str, log: list[str], fail: int = 0) -> None:
        self.name = name
        self.log = log
        self.fail = fail
        self.running = False

    async def start(self) -> None:
        if self.fail:
            self.fail -= 1
            if self.fail % 2:
                raise SessionConflict("session 'door' already exists")
            raise RuntimeError("the camera did not answer")
        self.running = True
        self.log.append(f"{self.name} start")

    async def stop(self) -> None:
        if self.running:
            self.running = False
            self.log.append(f"{self.name} stop")


@pytest.fixture
async def keepers() -> AsyncIterator[list[SourceKeeper]]:
    made: list[SourceKeeper] = []
    yield made
    for keeper in made:
        await keeper.close()


def keep(
    lease: SourceLease, source: Source, keepers: list[SourceKeeper], **kwargs: Any
) -> SourceKeeper:
    keeper = SourceKeeper(lease, source.start, source.stop, **kwargs)
    keeper.start()
    keepers.append(keeper)
    return keeper


async def crash(keeper: SourceKeeper) -> None:
    """The node is gone: nothing renews, nothing is stopped or released."""
    assert keeper._task is not None
    keeper._task.cancel()
    await asyncio.wait({keeper._task}, timeout=2)
    keeper._task = None


async def test_a_kept_source_runs_on_one_node_and_moves_when_its_holder_dies(
    make_lease: Callable[..., SourceLease], keepers: list[SourceKeeper]
) -> None:
    log: list[str] = []
    sources = [Source(f"n{i}", log) for i in range(3)]
    kept = [keep(make_lease(i), sources[i], keepers) for i in range(3)]
    await eventually(lambda: sum(s.running for s in sources) == 1, what="one runs it")
    [holder] = [k for k in kept if k.held]
    await eventually(lambda: all(k.node == holder.lease.node for k in kept), what="all know")
    await asyncio.sleep(2 * TTL_S)  # renewals keep it where it is
    assert sum(s.running for s in sources) == 1
    assert len(log) == 1
    await crash(holder)
    others = [i for i, k in enumerate(kept) if k is not holder]
    took = await eventually(
        lambda: sum(sources[i].running for i in others) == 1,
        timeout_s=3 * TTL_S,
        what="a takeover",
    )
    assert took <= TTL_S + holder.lease.retry_s + 0.5
    [second] = [kept[i] for i in others if sources[i].running]
    assert second.held
    assert second.node == second.lease.node
    assert second.lease.takeovers == 1


async def test_a_clean_close_stops_the_source_first_then_hands_it_over_at_once(
    make_lease: Callable[..., SourceLease], keepers: list[SourceKeeper]
) -> None:
    log: list[str] = []
    a = keep(make_lease(0), Source("a", log), keepers)
    await eventually(lambda: a.held and log == ["a start"])
    b = keep(make_lease(1, retry_s=0.05), Source("b", log), keepers)
    await eventually(lambda: b.node == "n0", what="b knows who runs it")
    assert not b.held
    closed_at = time.monotonic()
    await a.close()
    await eventually(lambda: log == ["a start", "a stop", "b start"], timeout_s=TTL_S)
    assert time.monotonic() - closed_at < 0.5 * TTL_S
    assert not a.held
    assert a.lease.losses == 0  # given back, not lost


async def test_a_start_that_fails_is_tried_again_while_the_lease_is_held(
    make_lease: Callable[..., SourceLease], keepers: list[SourceKeeper]
) -> None:
    log: list[str] = []
    source = Source("a", log, fail=4)
    keeper = keep(make_lease(0), source, keepers, start_retry_s=0.05, max_start_retry_s=0.2)
    await eventually(lambda: keeper.held)
    assert keeper.starting or source.running
    await eventually(lambda: source.running, timeout_s=3.0)
    assert not keeper.starting
    assert keeper.start_failures == 4
    assert keeper.failures == 0
    assert log == ["a start"]


async def test_a_holder_that_cannot_renew_stops_its_source_and_takes_it_again_after(
    make_lease: Callable[..., SourceLease],
    keepers: list[SourceKeeper],
    redis_server: RedisServer,
) -> None:
    log: list[str] = []
    source = Source("a", log)
    keeper = keep(make_lease(0), source, keepers)
    await eventually(lambda: source.running)
    redis_server.pause()  # frozen: no answer, no reset
    try:
        paused_at = time.monotonic()
        await eventually(lambda: not source.running, timeout_s=3 * TTL_S, what="stopped")
        # Stopped when its lease ran out as far as it knows, not later.
        assert time.monotonic() - paused_at <= TTL_S + 0.3
        assert keeper.lease.losses == 1
        assert not keeper.held
    finally:
        redis_server.resume()
    await eventually(lambda: source.running, timeout_s=3 * TTL_S, what="taken again")
    assert log == ["a start", "a stop", "a start"]
    assert keeper.failures == 0
