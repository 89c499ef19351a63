from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from framebroker.core import Backpressure, Frame, ProcessContext, Processor
from framebroker.core.manager import SessionPolicy
from framebroker.errors import (
    CapacityExceeded,
    ClientSessionLimit,
    FrameRateExceeded,
    SessionNotFound,
)
from framebroker.plugins import ProcessorRegistry
from framebroker.runtime import Broker, BrokerConfig
from framebroker.sessions import FrameIn

from ..core.helpers import Counter, live_session


class Sleepy(Processor):
    """Blocks its worker thread like real CPU work, and records where and in what order."""

    name: ClassVar[str] = "sleepy"
    log: ClassVar[list[tuple[str, int, str]]] = []

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        time.sleep(self.seconds)
        Sleepy.log.append((ctx.session_id, frame.index, threading.current_thread().name))
        return {"index": frame.index}


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    Sleepy.log = []
    reg = ProcessorRegistry()
    reg.register("sleepy", Sleepy)
    reg.register("counter", Counter)
    b = Broker(
        reg,
        config=BrokerConfig(
            max_workers=4,
            max_pending_frames=3,
            default_pipeline=("sleepy",),
            policy=SessionPolicy(idle_timeout_s=0.2, max_sessions=10),
            sweep_interval_s=0.05,
        ),
    )
    await b.start()
    yield b
    await b.stop()


async def test_one_session_in_order_off_the_event_loop(broker: Broker) -> None:
    s = await live_session(broker, transport="t")
    results = await asyncio.gather(*(broker.submit(s.id, FrameIn()) for _ in range(3)))
    assert [r.outputs["index"] for r in results] == [0, 1, 2]
    assert all(name.startswith("framebroker-worker") for _, _, name in Sleepy.log)


async def test_sessions_run_in_parallel(broker: Broker) -> None:
    sessions = [await live_session(broker, transport="t") for _ in range(4)]
    t0 = time.perf_counter()
    await asyncio.gather(*(broker.submit(s.id, FrameIn()) for s in sessions))
    # Four 50 ms frames on four workers: well under the 200 ms they would take in a row.
    assert time.perf_counter() - t0 < 0.15


async def test_the_loop_stays_responsive(broker: Broker) -> None:
    s = await live_session(broker, transport="t", pipeline=[{"name": "sleepy", "seconds": 0.3}])
    job = asyncio.create_task(broker.submit(s.id, FrameIn()))
    t0 = time.perf_counter()
    await asyncio.sleep(0.01)
    assert time.perf_counter() - t0 < 0.1
    await job


async def test_wait_policy_refuses_past_the_queue_limit(broker: Broker) -> None:
    s = await live_session(broker, transport="t")
    first = asyncio.create_task(broker.submit(s.id, FrameIn()))
    await asyncio.sleep(0.01)  # the first frame is now in the worker, not the queue
    queued = [asyncio.create_task(broker.submit(s.id, FrameIn())) for _ in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(CapacityExceeded):
        await broker.submit(s.id, FrameIn())
    await asyncio.gather(first, *queued)


async def test_latest_policy_drops_stale_frames_and_counts_them(broker: Broker) -> None:
    s = await live_session(broker, transport="t", backpressure=Backpressure.LATEST)
    first = asyncio.create_task(broker.submit(s.id, FrameIn()))
    await asyncio.sleep(0.01)  # in the worker now; the next four arrive while it runs
    tasks = [asyncio.create_task(broker.submit(s.id, FrameIn())) for _ in range(4)]
    results = await asyncio.gather(first, *tasks)
    dropped = [r.dropped for r in results]
    assert dropped == [False, True, True, True, False]
    assert s.stats.frames_dropped == 3
    assert s.stats.frames_processed == 2


async def test_a_live_frame_offered_while_its_session_ends_finds_it_gone(broker: Broker) -> None:
    """A WebRTC peer learns that its session was ended elsewhere (DELETE, the console) from
    the next frame it offers: while the end waits for a busy model, that frame must be
    refused as for an ended session, not with an error the peer does not expect."""
    s = await live_session(
        broker, transport="webrtc", pipeline=[{"name": "sleepy", "seconds": 0.3}],
        backpressure=Backpressure.NEWEST,
    )  # fmt: skip
    broker.offer(s.id, FrameIn())
    await asyncio.sleep(0.05)  # the model is busy with it
    ending = asyncio.create_task(broker.end(s.id, reason="deleted"))
    await asyncio.sleep(0.05)  # the end waits for the model
    assert not ending.done()
    with pytest.raises(SessionNotFound):
        broker.offer(s.id, FrameIn())
    # The peer, told so, ends the session too: one end, both told its summary.
    again = await broker.end(s.id, reason="ended")
    assert again is await ending
    assert again.reason == "deleted"
    with pytest.raises(SessionNotFound):
        broker.offer(s.id, FrameIn())
    with pytest.raises(SessionNotFound):
        await broker.end(s.id)


async def test_end_waits_for_queued_frames_and_runs_end(broker: Broker) -> None:
    s = await live_session(broker, transport="t", pipeline=["counter"])
    pending = [asyncio.create_task(broker.submit(s.id, FrameIn())) for _ in range(3)]
    await asyncio.sleep(0)
    summary = await broker.end(s.id)
    await asyncio.gather(*pending)
    assert summary.results == {"total": 3}
    with pytest.raises(SessionNotFound):
        await broker.submit(s.id, FrameIn())
    with pytest.raises(SessionNotFound):
        await broker.end(s.id)


async def test_idle_sessions_are_ended_by_the_sweeper(broker: Broker) -> None:
    ended = broker.bus.subscribe("session/*")
    s = await live_session(broker, transport="t", pipeline=["counter"])
    await broker.submit(s.id, FrameIn())
    await asyncio.sleep(0.5)
    assert s.id not in broker.manager
    messages = [m for m in ended.drain() if m.topic.endswith("/ended")]
    assert messages[0].payload["reason"] == "idle"
    assert messages[0].payload["results"] == {"total": 1}


async def test_results_are_published(broker: Broker) -> None:
    s = await live_session(broker, transport="t", pipeline=["counter"])
    sub = broker.bus.subscribe(f"session/{s.id}/result")
    await broker.submit(s.id, FrameIn())
    (msg,) = sub.drain()
    assert msg.payload.outputs == {"seen": 1}


async def test_attach_by_client_id(broker: Broker) -> None:
    a = await broker.attach("cam-1", transport="t")
    b = await broker.attach("cam-1", transport="t")
    assert (a.id, a.created_at) == (b.id, b.created_at)  # the same session, attached twice
    assert [s.id for s in await broker.live()] == ["cam-1"]


class Heavy(Processor):
    """Ends a stage; on frame 1 it tells :class:`Tail` it ran."""

    name: ClassVar[str] = "heavy"
    ends_stage = True
    reached: ClassVar[dict[int, threading.Event]] = {}

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        Heavy.reached.setdefault(frame.index, threading.Event()).set()
        return {"heavy": frame.index}


class Tail(Processor):
    """On frame 0, waits until :class:`Heavy` has started frame 1: only overlap lets it."""

    name: ClassVar[str] = "tail"
    seen: ClassVar[list[tuple[int, int | None, bool]]] = []

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        overlapped = True
        if frame.index == 0:
            overlapped = Heavy.reached.setdefault(1, threading.Event()).wait(5.0)
        Tail.seen.append((frame.index, frame.results.get("heavy"), overlapped))
        return {"tail": frame.index}


async def staged_broker() -> Broker:
    Heavy.reached, Tail.seen = {}, []
    reg = ProcessorRegistry()
    reg.register("heavy", Heavy)
    reg.register("tail", Tail)
    reg.register("counter", Counter)
    b = Broker(reg, config=BrokerConfig(max_workers=4, max_pending_frames=8))
    await b.start()
    return b


async def test_a_later_stage_overlaps_the_next_frame_and_order_is_kept() -> None:
    b = await staged_broker()
    try:
        s = await live_session(b, transport="t", pipeline=["heavy", "tail", "counter"])
        assert s.pipeline.stages == 2
        results = await asyncio.gather(*(b.submit(s.id, FrameIn()) for _ in range(5)))
        assert [r.outputs["tail"] for r in results] == [0, 1, 2, 3, 4]
        assert [r.ran for r in results] == [["heavy", "tail", "counter"]] * 5
        # Frame 0's tail waited for frame 1's detection, which only a second stage allows.
        assert Tail.seen[0] == (0, 0, True)
        assert [i for i, _, _ in Tail.seen] == [0, 1, 2, 3, 4]
        assert [h for _, h, _ in Tail.seen] == [0, 1, 2, 3, 4]  # each frame its own outputs
        assert s.stats.frames_processed == 5
        assert s.stats.runs == {"heavy": 5, "tail": 5, "counter": 5}
    finally:
        await b.stop()


async def test_ending_a_staged_session_finishes_every_frame_in_flight() -> None:
    b = await staged_broker()
    try:
        s = await live_session(b, transport="t", pipeline=["heavy", "tail", "counter"])
        pending = [asyncio.ensure_future(b.submit(s.id, FrameIn())) for _ in range(4)]
        await asyncio.sleep(0)
        summary = await b.end(s.id)
        results = await asyncio.gather(*pending)
        assert [r.outputs["tail"] for r in results] == [0, 1, 2, 3]
        assert summary.stats["frames_processed"] == 4
    finally:
        await b.stop()


async def test_a_staged_lane_starts_again_after_it_went_idle() -> None:
    b = await staged_broker()
    try:
        s = await live_session(b, transport="t", pipeline=["heavy", "tail"])
        first = await asyncio.gather(*(b.submit(s.id, FrameIn()) for _ in range(2)))
        await asyncio.sleep(0.05)
        later = await b.submit(s.id, FrameIn())
        assert [r.outputs["tail"] for r in [*first, later]] == [0, 1, 2]
    finally:
        await b.stop()


class Detector(Processor):
    """Reentrant and stage-ending, like a detector: records how many frames it holds at once.

    Frames listed in ``fail`` raise; frame 0 waits (up to 5 s) until frame 1 has started,
    which only a parallel stage allows, and finishes last.
    """

    name: ClassVar[str] = "detector"
    reentrant = True
    ends_stage = True
    inside: ClassVar[int] = 0
    most: ClassVar[int] = 0
    started: ClassVar[dict[int, threading.Event]] = {}
    fail: ClassVar[set[int]] = set()
    lock = threading.Lock()

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        with Detector.lock:
            Detector.inside += 1
            Detector.most = max(Detector.most, Detector.inside)
        try:
            Detector.started.setdefault(frame.index, threading.Event()).set()
            if frame.index == 0:
                Detector.started.setdefault(1, threading.Event()).wait(5.0)
            time.sleep(0.02)
            if frame.index in Detector.fail:
                raise RuntimeError(f"bad frame {frame.index}")
            return {"detected": frame.index}
        finally:
            with Detector.lock:
                Detector.inside -= 1


class Follower(Processor):
    """Stateful: records the order frames reach it."""

    name: ClassVar[str] = "follower"
    seen: ClassVar[list[int]] = []

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        Follower.seen.append(frame.index)
        return {"followed": frame.results.get("detected")}


@pytest.fixture
async def parallel_broker() -> AsyncIterator[Broker]:
    Detector.inside = Detector.most = 0
    Detector.started, Detector.fail, Follower.seen = {}, set(), []
    reg = ProcessorRegistry()
    reg.register("detector", Detector)
    reg.register("follower", Follower)
    reg.register("heavy", Heavy)
    b = Broker(reg, config=BrokerConfig(max_workers=4, max_pending_frames=16, parallel_frames=2))
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def test_a_parallel_stage_holds_two_frames_and_hands_them_on_in_order(
    parallel_broker: Broker,
) -> None:
    b = parallel_broker
    s = await live_session(b, transport="t", pipeline=["detector", "follower"])
    assert s.pipeline.parallel(0)
    assert not s.pipeline.parallel(1)
    assert b.frames_in_flight(s) == 3
    results = await asyncio.gather(*(b.submit(s.id, FrameIn()) for _ in range(8)))
    assert Detector.most == 2  # frame 0 could only finish once frame 1 had started
    assert Follower.seen == list(range(8))
    assert [r.outputs["followed"] for r in results] == list(range(8))
    assert s.stats.frames_processed == 8


async def test_a_parallel_stage_after_another_stage_also_holds_two_frames(
    parallel_broker: Broker,
) -> None:
    b = parallel_broker
    s = await live_session(b, transport="t", pipeline=["heavy", "detector", "follower"])
    assert [s.pipeline.parallel(k) for k in range(3)] == [False, True, False]
    assert b.frames_in_flight(s) == 4
    results = await asyncio.gather(*(b.submit(s.id, FrameIn()) for _ in range(6)))
    assert Detector.most == 2
    assert Follower.seen == list(range(6))
    assert [r.outputs["followed"] for r in results] == list(range(6))


async def test_a_stage_that_is_not_reentrant_takes_one_frame_at_a_time(
    parallel_broker: Broker,
) -> None:
    b = parallel_broker
    s = await live_session(b, transport="t", pipeline=["heavy", "follower"])
    assert not s.pipeline.parallel(0)
    assert b.frames_in_flight(s) == 2
    await asyncio.gather(*(b.submit(s.id, FrameIn()) for _ in range(4)))
    assert Follower.seen == [0, 1, 2, 3]


async def test_a_frame_failing_in_a_parallel_stage_leaves_the_others_in_order(
    parallel_broker: Broker,
) -> None:
    b = parallel_broker
    Detector.fail = {2}
    s = await live_session(b, transport="t", pipeline=["detector", "follower"])
    results = await asyncio.gather(*(b.submit(s.id, FrameIn()) for _ in range(6)))
    # A processor's error is the frame's, reported in its result; the stream goes on.
    assert [r.outputs.get("detected") for r in results] == [0, 1, None, 3, 4, 5]
    assert results[2].errors[0]["processor"] == "detector"
    assert Follower.seen == list(range(6))


async def test_a_live_frame_starts_while_the_one_before_is_still_detected(
    parallel_broker: Broker,
) -> None:
    """Under ``latest`` frames come one by one; the second must not wait for the first."""
    b = parallel_broker
    s = await live_session(
        b, transport="t", pipeline=["detector", "follower"], backpressure=Backpressure.LATEST
    )
    first = asyncio.ensure_future(b.submit(s.id, FrameIn()))
    await asyncio.get_running_loop().run_in_executor(
        None, Detector.started.setdefault(0, threading.Event()).wait, 5.0
    )
    second = await b.submit(s.id, FrameIn())  # frame 0 waits for this one to start
    assert (await first).outputs["followed"] == 0
    assert second.outputs["followed"] == 1
    assert Detector.most == 2


async def test_metrics_count_received_processed_and_dropped_frames(broker: Broker) -> None:
    s = await live_session(broker, transport="cam", backpressure=Backpressure.LATEST)
    results = await asyncio.gather(*(broker.submit(s.id, FrameIn()) for _ in range(4)))
    dropped = sum(r.dropped for r in results)
    assert dropped >= 1  # latest: frames overtaken while the first one ran
    text = broker.metrics.render().decode()
    assert 'framebroker_frames_total{outcome="received",transport="cam"} 4.0' in text
    assert f'framebroker_frames_total{{outcome="dropped",transport="cam"}} {dropped}.0' in text
    processed = 4 - dropped
    assert f'framebroker_frames_total{{outcome="processed",transport="cam"}} {processed}.0' in text
    assert 'framebroker_sessions{transport="cam"} 1.0' in text


async def test_a_session_over_its_frame_rate_is_refused_and_another_goes_on() -> None:
    reg = ProcessorRegistry()
    reg.register("counter", Counter)
    b = Broker(
        reg,
        config=BrokerConfig(
            default_pipeline=("counter",),
            policy=SessionPolicy(max_fps_per_session=2, max_sessions_per_client=2),
        ),
    )
    await b.start()
    try:
        fast = await live_session(b, transport="cam", client="10.0.0.1")
        other = await live_session(b, transport="cam", client="10.0.0.1")
        t = time.time()
        await b.submit(fast.id, FrameIn(received_at=t))
        await b.submit(fast.id, FrameIn(received_at=t))
        with pytest.raises(FrameRateExceeded) as info:
            await b.submit(fast.id, FrameIn(received_at=t))
        assert info.value.retry_after_s == pytest.approx(0.5)
        assert (await b.submit(other.id, FrameIn(received_at=t))).outputs["seen"] == 1
        later = await b.submit(fast.id, FrameIn(received_at=t + 0.5))  # as the error said
        assert later.outputs["seen"] == 3
        assert later.index == 2  # the refused frame took no number
        assert fast.stats.frames_dropped == 1
        with pytest.raises(ClientSessionLimit):
            await live_session(b, transport="cam", client="10.0.0.1")
        await b.end(other.id)
        await live_session(b, transport="cam", client="10.0.0.1")  # its slot is free again
        text = b.metrics.render().decode()
        assert 'framebroker_frames_dropped_total{reason="rate_limited",transport="cam"} 1.0' in text
        assert 'framebroker_frames_total{outcome="dropped",transport="cam"} 1.0' in text
    finally:
        await b.stop()


async def test_a_start_ends_only_the_sessions_of_this_servers_earlier_life(
    tmp_path: Any,
) -> None:
    """Two servers share a store: a restart of one (a new epoch of its owner) ends the
    sessions its crash left, never the other's; and every session it records is its own."""
    from framebroker.storage import SQLStore

    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"

    async def server(owner: str) -> Broker:
        reg = ProcessorRegistry()
        reg.register("counter", Counter)
        started = Broker(
            reg,
            store=SQLStore(url),
            config=BrokerConfig(default_pipeline=("counter",), owner_id=owner),
        )
        await started.start()
        return started

    a = await server("a")
    b = await server("b")
    from_a = (await a.create(transport="rest")).id
    from_b = (await b.create(transport="rest")).id
    await asyncio.sleep(0.1)  # the starts are recorded in the background
    # a crashes (its store is dropped without ending anything) and starts again.
    assert a.store is not None
    a.store.close()
    a_again = await server("a")
    try:
        crashed = await a_again.info(from_a)
        assert (crashed.state, crashed.summary["reason"]) == ("ended", "server_restarted")
        assert (await a_again.info(from_b)).state == "active"  # b is alive
        record = await a_again.run_blocking(a_again.store.get_session, from_b)  # type: ignore[union-attr]
        assert (record["owner"], record["epoch"]) == ("b", 1)
        mine = (await a_again.create(transport="rest")).id
        await a_again.end(mine)
        record = await a_again.run_blocking(a_again.store.get_session, mine)  # type: ignore[union-attr]
        assert (record["owner"], record["epoch"], record["state"]) == ("a", 2, "ended")
    finally:
        await b.stop()
        await a_again.stop()
        a.executor.shutdown(wait=True)
