"""The bus across nodes against a real redis-server: pub/sub for what may be dropped, the
stream for what must arrive, refusals of what a node cannot read, and healing after Redis
was killed or froze."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import orjson
import pytest
from redis.asyncio import Redis

from framebroker.cluster.bus import RedisBus, is_reliable
from framebroker.cluster.connection import connect
from framebroker.cluster.keys import Keys
from framebroker.cluster.wire import encode
from framebroker.core.bus import Message
from framebroker.core.detections import Detections
from framebroker.sessions import Feed, FrameOut
from tests.redis_server import RedisServer

from .helpers import eventually

JPEG_B64 = base64.b64encode(bytes(range(256)) * 168).decode()  # 56 KB of text, as a frame

MakeBus = Callable[..., RedisBus]


@pytest.fixture
async def make_bus(clients: list[Redis], keys: Keys) -> AsyncIterator[Callable[..., RedisBus]]:
    """``await make_bus(i)``: node ``n<i>``'s bus on client ``i``, started."""
    made: list[RedisBus] = []

    async def make(i: int, **kwargs: Any) -> RedisBus:
        kwargs.setdefault("op_timeout_s", 0.5)
        kwargs.setdefault("block_s", 0.2)
        kwargs.setdefault("backoff_s", (0.02, 0.3))
        bus = RedisBus(clients[i], keys=keys, node=f"n{i}", **kwargs)
        await bus.start()
        made.append(bus)
        return bus

    yield make  # type: ignore[misc]
    for bus in made:
        await bus.close()


async def received(feed: Feed, n: int, *, timeout_s: float = 5.0) -> list[Message]:
    """The next ``n`` messages of ``feed`` (fails after ``timeout_s``)."""
    got: list[Message] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < n:
            await feed.wait()
            got.extend(feed.drain())
    return got


def test_what_must_arrive_is_told_apart_by_its_topic() -> None:
    assert is_reliable("live/door/event")
    assert is_reliable("live/door/stats")
    assert is_reliable("session/s1/ended")
    assert not is_reliable("live/door/frame")
    assert not is_reliable("session/s1/result")
    assert not is_reliable("session/s1/prediction")


async def test_frames_and_results_reach_another_node_over_pub_sub(
    make_bus: MakeBus, clients: list[Redis], keys: Keys
) -> None:
    a, b = await make_bus(0), await make_bus(1)
    assert await clients[3].pubsub_channels() == []  # nobody listens: nothing subscribed
    frames = b.subscribe("live/door/frame")
    results = b.subscribe("session/*")
    local = a.subscribe("live/door/frame")
    await b.synced()
    assert set(await clients[3].pubsub_channels()) == {keys.channel("live/door/frame").encode()}
    assert await clients[3].pubsub_numpat() == 1
    boxes = Detections(
        xyxy=np.array([[1.0, 2.0, 30.0, 40.0]]),
        score=np.array([0.9]),
        class_id=np.array([0]),
        track_id=np.array([7]),
        index=np.array([0]),
    )
    out = FrameOut("s1", 3, outputs={"count": 2}, detections=boxes, timestamp=12.5)
    assert a.publish("live/door/frame", {"jpeg_b64": JPEG_B64, "time": 1.0}) == 1  # local
    a.publish("session/s1/result", out)
    a.publish("session/s1/raw", {"blob": b"\x00\xffpixels", "n": [1, 2]})
    [frame] = await received(frames, 1)
    assert frame == Message("live/door/frame", {"jpeg_b64": JPEG_B64, "time": 1.0})
    result, raw = await received(results, 2)
    assert isinstance(result.payload, FrameOut)
    assert result.payload.outputs == {"count": 2}
    assert result.payload.detections is not None
    assert result.payload.detections.track_id.tolist() == [7]
    assert raw.payload == {"blob": b"\x00\xffpixels", "n": [1, 2]}
    # a's own subscriber got the frame once, by reference, not a second time from Redis.
    await asyncio.sleep(0.2)
    [mine] = local.drain()
    assert mine.payload["jpeg_b64"] is JPEG_B64
    assert b.counters.received == 3
    assert a.counters.received == 0


async def test_a_node_listens_in_redis_only_while_it_has_local_subscribers(
    make_bus: MakeBus, clients: list[Redis], keys: Keys
) -> None:
    b = await make_bus(1)
    one = b.subscribe("live/door/frame")
    two = b.subscribe("live/door/frame")
    await b.synced()
    channel = keys.channel("live/door/frame")
    assert await clients[3].pubsub_numsub(channel) == [(channel.encode(), 1)]
    one.close()
    await b.synced()
    assert await clients[3].pubsub_numsub(channel) == [(channel.encode(), 1)]
    two.close()
    await b.synced()
    await eventually(lambda: _no_subscribers(clients[3]), timeout_s=2)


async def _no_subscribers(redis: Redis) -> bool:
    return await redis.pubsub_channels() == [] and await redis.pubsub_numpat() == 0


async def test_a_pattern_matches_only_its_prefix_even_with_glob_characters(
    make_bus: MakeBus,
) -> None:
    a, b = await make_bus(0), await make_bus(1)
    odd = b.subscribe("live/[cam]?/*")
    await b.synced()
    a.publish("live/c?/frame", 1)  # a glob would match these two; the prefix does not
    a.publish("live/m/frame", 2)
    a.publish("live/[cam]?/frame", 3)
    [message] = await received(odd, 1)
    assert message.payload == 3
    await asyncio.sleep(0.2)
    assert odd.drain() == []


async def test_events_arrive_in_order_past_a_slow_subscriber_that_loses_frames(
    make_bus: MakeBus,
) -> None:
    a, b = await make_bus(0), await make_bus(1)
    slow = b.subscribe("live/*", maxlen=4)
    await b.synced()
    for i in range(200):
        a.publish("live/door/frame", {"jpeg_b64": JPEG_B64, "i": i})
        if i % 4 == 0:
            a.publish("live/door/event", {"data": {"n": i // 4}})
    await eventually(lambda: b.counters.received >= 200 + 50 - 4, timeout_s=10)
    await asyncio.sleep(0.3)
    got = slow.drain()  # read only now, long after the last was published
    events = [m.payload["data"]["n"] for m in got if m.topic.endswith("/event")]
    frames = [m for m in got if m.topic.endswith("/frame")]
    assert events == list(range(50))  # every one, in order
    assert len(frames) <= 4  # the newest frames only: the rest made room
    assert slow.dropped >= 150
    assert b.counters.gaps == 0
    assert b.counters.duplicates == 0


async def test_messages_of_an_unknown_version_or_malformed_are_refused_and_counted(
    make_bus: MakeBus, clients: list[Redis], keys: Keys
) -> None:
    b = await make_bus(1)
    feed = b.subscribe("live/*")
    await b.synced()
    raw = clients[3]
    newer = orjson.dumps({"v": 2, "n": "n9", "s": 1, "t": "live/x/event", "at": 0, "k": "j"})
    await raw.xadd(keys.events, {"m": newer})
    await raw.xadd(keys.events, {"other": b"field"})
    await raw.publish(keys.channel("live/x/frame"), b"\xff not json")
    await raw.publish(keys.channel("live/x/frame"), b'{"v": 1, "n": "n9", "t": 5}')
    await raw.publish(keys.channel("live/x/frame"), b"x" * 9_000_000)
    good = encode("live/x/event", {"ok": True}, node="n9", seq=2, sent_at=0, max_bytes=1 << 20)
    await raw.xadd(keys.events, {"m": good})
    [message] = await received(feed, 1)
    assert message.payload == {"ok": True}  # the bus reads on past what it refused
    await eventually(lambda: b.refusals.total == 5, timeout_s=2)
    assert b.refusals.counts == {"version": 1, "malformed": 3, "too_large": 1}


async def test_a_stream_message_sent_twice_is_delivered_once_and_a_gap_is_counted(
    make_bus: MakeBus, clients: list[Redis], keys: Keys
) -> None:
    b = await make_bus(1)
    feed = b.subscribe("session/*")
    await b.synced()

    def ended(seq: int) -> bytes:
        return encode(
            "session/s/ended", {"seq": seq}, node="n9", seq=seq, sent_at=0, max_bytes=1 << 20
        )

    for seq in (1, 2, 2, 1, 5):
        await clients[3].xadd(keys.events, {"m": ended(seq)})
    got = await received(feed, 3)
    assert [m.payload["seq"] for m in got] == [1, 2, 5]
    await eventually(lambda: b.counters.duplicates == 2)
    assert b.counters.gaps == 2  # 3 and 4 never came


async def test_publishing_refuses_what_it_cannot_send_without_raising(make_bus: MakeBus) -> None:
    a = await make_bus(0, max_message_bytes=1000)
    mine = a.subscribe("t/*")
    assert a.publish("t/x", {"not json": object()}) == 1  # local subscribers still get it
    assert a.publish("t/y", "x" * 2000) == 1
    assert a.counters.refused_publish == 2
    assert a.refusals.counts == {"publish_malformed": 1, "publish_too_large": 1}
    assert len(mine.drain()) == 2


async def test_bus_heals_after_redis_is_killed_and_restarted_mid_stream(
    keys: Keys,
) -> None:
    """With Redis's append-only file (fsync always), not one event is lost or repeated
    across a kill -9: what was in the stream is read on from where the reader was, what was
    published meanwhile waited in the outbox, and what a dying pipeline wrote and then sent
    again is delivered once."""
    server = RedisServer(persist=True)
    server.start()
    ca = connect(server.url, timeout_s=0.5)
    cb = connect(server.url, timeout_s=0.5)
    options: dict[str, Any] = {"op_timeout_s": 0.5, "block_s": 0.2, "backoff_s": (0.02, 0.3)}
    a = RedisBus(ca, keys=keys, node="n0", **options)
    b = RedisBus(cb, keys=keys, node="n1", **options)
    stop = asyncio.Event()
    published = 0

    async def publish_forever() -> None:
        nonlocal published
        while not stop.is_set():
            a.publish("live/door/frame", {"jpeg_b64": JPEG_B64})
            a.publish("live/door/event", {"data": {"n": published}})
            published += 1
            await asyncio.sleep(0.01)

    try:
        await a.start()
        await b.start()
        events = b.subscribe("live/*", maxlen=8)
        await b.synced()
        publisher = asyncio.create_task(publish_forever())
        got: list[int] = []

        async def seen(n: int) -> bool:
            got.extend(m.payload["data"]["n"] for m in events.drain() if m.topic.endswith("/event"))
            return len(got) > n

        await eventually(lambda: seen(20))
        server.restart()  # kill -9, then the same port, from its append-only file
        await eventually(lambda: b.counters.reconnects > 0, what="b's readers saw it")
        mark = published
        await eventually(lambda: seen(mark + 30), timeout_s=10, what="events flow again")
        stop.set()
        await publisher
        final = published
        await eventually(lambda: seen(final - 1), timeout_s=5, what="the last events")
        assert got == list(range(final))  # every event once, in order
        assert b.counters.gaps == 0
        assert a.counters.dropped_outbox == 0
    finally:
        stop.set()
        await a.close()
        await b.close()
        await ca.aclose()
        await cb.aclose()
        server.close()


async def test_a_frozen_redis_is_noticed_and_the_bus_resumes(
    make_bus: MakeBus, redis_server: RedisServer
) -> None:
    a, b = await make_bus(0), await make_bus(1)
    frames = b.subscribe("live/door/frame")
    await b.synced()
    redis_server.pause()  # SIGSTOP: no reset, no answer
    await asyncio.sleep(0.5)
    for _ in range(10):
        a.publish("live/door/frame", {"i": 0})  # never raises
    await eventually(lambda: b.counters.reconnects > 0, timeout_s=4, what="b notices")
    redis_server.resume()
    await b.synced(timeout_s=5)

    async def flows() -> bool:
        a.publish("live/door/frame", {"i": 1})
        await asyncio.sleep(0.05)
        return any(m.payload["i"] == 1 for m in frames.drain())

    await eventually(flows, timeout_s=5)


async def test_worker_threads_publish_as_the_event_loop_does(make_bus: MakeBus) -> None:
    """Pipelines publish from the broker's worker threads."""
    a, b = await make_bus(0), await make_bus(1)
    mine = a.subscribe("session/*")
    theirs = b.subscribe("session/*")
    await b.synced()

    def work(n: int) -> None:
        for i in range(50):
            a.publish(f"session/t{n}/ended", {"i": i})

    await asyncio.gather(*(asyncio.to_thread(work, n) for n in range(4)))
    assert len(await received(mine, 200)) == 200
    got = await received(theirs, 200)
    for n in range(4):  # each thread's messages in the order it published them
        assert [m.payload["i"] for m in got if m.topic == f"session/t{n}/ended"] == list(range(50))
    assert b.counters.gaps == 0
