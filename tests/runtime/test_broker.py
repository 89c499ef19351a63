from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from framebroker.core import Backpressure, Frame, ProcessContext, Processor
from framebroker.core.manager import SessionPolicy
from framebroker.errors import CapacityExceeded, SessionNotFound
from framebroker.plugins import ProcessorRegistry
from framebroker.runtime import Broker, BrokerConfig

from ..core.helpers import Counter


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
    s = await broker.create_session(transport="t")
    results = await asyncio.gather(*(broker.submit(s, Frame()) for _ in range(3)))
    assert [r.outputs["index"] for r in results] == [0, 1, 2]
    assert all(name.startswith("framebroker-worker") for _, _, name in Sleepy.log)


async def test_sessions_run_in_parallel(broker: Broker) -> None:
    sessions = [await broker.create_session(transport="t") for _ in range(4)]
    t0 = time.perf_counter()
    await asyncio.gather(*(broker.submit(s, Frame()) for s in sessions))
    # Four 50 ms frames on four workers: well under the 200 ms they would take in a row.
    assert time.perf_counter() - t0 < 0.15


async def test_the_loop_stays_responsive(broker: Broker) -> None:
    s = await broker.create_session(transport="t", pipeline=[{"name": "sleepy", "seconds": 0.3}])
    job = asyncio.create_task(broker.submit(s, Frame()))
    t0 = time.perf_counter()
    await asyncio.sleep(0.01)
    assert time.perf_counter() - t0 < 0.1
    await job


async def test_wait_policy_refuses_past_the_queue_limit(broker: Broker) -> None:
    s = await broker.create_session(transport="t")
    first = asyncio.create_task(broker.submit(s, Frame()))
    await asyncio.sleep(0.01)  # the first frame is now in the worker, not the queue
    queued = [asyncio.create_task(broker.submit(s, Frame())) for _ in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(CapacityExceeded):
        await broker.submit(s, Frame())
    await asyncio.gather(first, *queued)


async def test_latest_policy_drops_stale_frames_and_counts_them(broker: Broker) -> None:
    s = await broker.create_session(transport="t", backpressure=Backpressure.LATEST)
    first = asyncio.create_task(broker.submit(s, Frame()))
    await asyncio.sleep(0.01)  # in the worker now; the next four arrive while it runs
    tasks = [asyncio.create_task(broker.submit(s, Frame())) for _ in range(4)]
    results = await asyncio.gather(first, *tasks)
    dropped = [r.dropped for r in results]
    assert dropped == [False, True, True, True, False]
    assert s.stats.frames_dropped == 3
    assert s.stats.frames_processed == 2


async def test_end_waits_for_queued_frames_and_runs_end(broker: Broker) -> None:
    s = await broker.create_session(transport="t", pipeline=["counter"])
    pending = [asyncio.create_task(broker.submit(s, Frame())) for _ in range(3)]
    await asyncio.sleep(0)
    summary = await broker.end_session(s.id)
    await asyncio.gather(*pending)
    assert summary.results == {"total": 3}
    with pytest.raises(SessionNotFound):
        await broker.submit(s, Frame())
    with pytest.raises(SessionNotFound):
        await broker.end_session(s.id)


async def test_idle_sessions_are_ended_by_the_sweeper(broker: Broker) -> None:
    ended = broker.bus.subscribe("session/*")
    s = await broker.create_session(transport="t", pipeline=["counter"])
    await broker.submit(s, Frame())
    await asyncio.sleep(0.5)
    assert s.id not in broker.manager
    messages = [m for m in ended.drain() if m.topic.endswith("/ended")]
    assert messages[0].payload["reason"] == "idle"
    assert messages[0].payload["results"] == {"total": 1}


async def test_results_are_published(broker: Broker) -> None:
    s = await broker.create_session(transport="t", pipeline=["counter"])
    sub = broker.bus.subscribe(f"session/{s.id}/result")
    await broker.submit(s, Frame())
    (msg,) = sub.drain()
    assert msg.payload.outputs == {"seen": 1}


async def test_attach_by_client_id(broker: Broker) -> None:
    a = await broker.attach("cam-1", transport="t")
    b = await broker.attach("cam-1", transport="t")
    assert a is b
