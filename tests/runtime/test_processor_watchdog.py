"""A processor that hangs is timed out and reported, and one that leaks shows in /metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from framebroker.core import Backpressure, Frame, Pipeline, ProcessContext, Processor
from framebroker.errors import ProcessorTimeout
from framebroker.plugins import ProcessorRegistry
from framebroker.runtime import Broker, BrokerConfig
from framebroker.runtime.model_lanes import LaneLimits
from framebroker.runtime.workers import WorkerPool
from framebroker.sessions import FrameIn
from framebroker.video_analysis.fanout import InProcessPipelines

from ..core.helpers import live_session
from .bad_processors import GIVE_UP_S, RELEASE, Hang, Leak, MiB, Noop, Tally

LIMIT_S = 0.3
HANG = {"hang": "event"}


class After(Tally):
    """A second tally, placed after the hang, to see whether anything runs past it."""

    name: ClassVar[str] = "after"


class Slow(Processor):
    name: ClassVar[str] = "slow"
    seconds: ClassVar[float] = 0.6 * LIMIT_S

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        time.sleep(self.seconds)
        return {self.name: True}


class Slow2(Slow):
    name: ClassVar[str] = "slow2"


class Slow3(Slow):
    name: ClassVar[str] = "slow3"


def registry() -> ProcessorRegistry:
    reg = ProcessorRegistry()
    for cls in (Hang, Leak, Noop, Tally, After, Slow, Slow2, Slow3):
        reg.register(cls.name, cls)
    return reg


@pytest.fixture
def release() -> Iterator[None]:
    """Whatever hangs is let go at teardown, after the broker has stopped without it."""
    RELEASE.clear()
    yield
    RELEASE.set()


async def make_broker(**config: Any) -> Broker:
    settings: dict[str, Any] = {
        "max_workers": 1,  # one stuck call would stop every session without a replacement
        "processor_timeout_s": LIMIT_S,
        "default_pipeline": ("hang", "tally"),
        "lanes": LaneLimits(end_timeout_s=0.2),
        **config,
    }
    broker = Broker(registry(), config=BrokerConfig(**settings))
    await broker.start()
    return broker


@pytest.fixture
async def broker(release: None) -> AsyncIterator[Broker]:
    b = await make_broker()
    yield b
    await asyncio.wait_for(b.stop(), 10)  # a stuck thread must not hold the stop up


def sample(broker: Broker, name: str, **labels: str) -> float:
    value = broker.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def bounded(aw: Awaitable[Any]) -> Awaitable[Any]:
    return asyncio.wait_for(aw, 10)


async def test_a_hung_processor_times_out_is_reported_and_other_sessions_go_on(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = await live_session(broker, transport="t")
    other = await live_session(broker, transport="t")
    with pytest.raises(ProcessorTimeout) as timed_out:
        await bounded(broker.submit(stuck.id, FrameIn(meta=HANG)))
    error = timed_out.value
    assert (error.processor, error.session_id, error.timeout_s) == ("hang", stuck.id, LIMIT_S)
    assert error.http_status == 504
    assert error.to_dict()["code"] == "processor_timeout"
    assert "'hang'" in error.message
    assert stuck.id in error.message
    assert any(
        "processor hang has run for over" in r.getMessage() and stuck.id in r.getMessage()
        for r in caplog.records
    )
    assert sample(broker, "framebroker_processor_timeouts_total", processor="hang") == 1
    assert sample(broker, "framebroker_stuck_threads") == 1
    assert broker.stuck_threads == 1

    # The only worker is stuck, yet another session is served: the pool replaced it.
    result = await bounded(broker.submit(other.id, FrameIn()))
    assert result.outputs == {"hang": "passed", "tally": 1}

    # The stuck session refuses frames at once instead of queueing them behind the call.
    with pytest.raises(ProcessorTimeout, match="is blocked: processor 'hang' has been running"):
        await bounded(broker.submit(stuck.id, FrameIn()))

    RELEASE.set()
    await eventually(lambda: broker.stuck_threads == 0)
    assert sample(broker, "framebroker_stuck_threads") == 0
    # Once the call returns the session goes on; the late frame went through the rest of
    # the pipeline in order (tally saw it), but its answer was not sent twice.
    result = await bounded(broker.submit(stuck.id, FrameIn()))
    assert result.outputs == {"hang": "passed", "tally": 2}
    assert sample(broker, "framebroker_frames_total", transport="t", outcome="processed") == 2
    assert sample(broker, "framebroker_processor_timeouts_total", processor="hang") == 1


async def test_frames_queued_behind_a_hung_call_fail_with_it(broker: Broker) -> None:
    session = await live_session(broker, transport="t")
    frames = [FrameIn(meta=HANG), FrameIn(), FrameIn()]
    answers = await bounded(
        asyncio.gather(*(broker.submit(session.id, f) for f in frames), return_exceptions=True)
    )
    assert all(isinstance(a, ProcessorTimeout) for a in answers), answers
    assert sample(broker, "framebroker_frames_total", transport="t", outcome="failed") == 3


async def test_ending_a_stuck_session_ends_the_other_processors_and_skips_the_stuck_one(
    broker: Broker,
) -> None:
    session = await live_session(broker, transport="t", pipeline=["tally", "hang", "after"])
    await bounded(broker.submit(session.id, FrameIn()))
    # Ending it while the call is still inside its limit: the end waits for the timeout,
    # not for the call.
    frame = asyncio.ensure_future(broker.submit(session.id, FrameIn(meta=HANG)))
    await eventually(lambda: bool(session.pipeline.running()))
    summary = await bounded(broker.end(session.id))
    with pytest.raises(ProcessorTimeout):
        await bounded(frame)
    assert summary.results == {"tally_total": 2, "after_total": 1}
    assert summary.errors == [
        {
            "processor": "hang",
            "error": "TimeoutError: still processing a frame when the session ended; its "
            "end() and close() were not called",
        }
    ]
    tally, _, after = session.pipeline.processors
    assert isinstance(tally, Tally)
    assert isinstance(after, After)
    assert tally.closed
    assert after.closed

    RELEASE.set()
    await eventually(lambda: broker.stuck_threads == 0)
    assert after.seen == 1  # nothing started past the hang once the session had ended


async def test_the_limit_is_per_processor_call_not_per_frame(broker: Broker) -> None:
    session = await live_session(broker, transport="t", pipeline=["slow", "slow2", "slow3"])
    result = await bounded(broker.submit(session.id, FrameIn()))
    assert sum(result.timings.values()) > LIMIT_S  # the frame took longer than the limit...
    assert result.outputs == {"slow": True, "slow2": True, "slow3": True}
    assert broker.stuck_threads == 0  # ...but no processor call did
    assert sample(broker, "framebroker_processor_timeouts_total", processor="slow") == 0


async def test_a_stage_of_a_staged_pipeline_times_out(broker: Broker) -> None:
    pipeline: list[Any] = [{"name": "tally", "ends_stage": True}, "hang"]
    stuck = await live_session(broker, transport="t", pipeline=pipeline)
    assert stuck.pipeline.stages == 2
    with pytest.raises(ProcessorTimeout) as timed_out:
        await bounded(broker.submit(stuck.id, FrameIn(meta=HANG)))
    assert timed_out.value.processor == "hang"
    with pytest.raises(ProcessorTimeout, match="is blocked"):
        await bounded(broker.submit(stuck.id, FrameIn()))
    other = await live_session(broker, transport="t", pipeline=pipeline)
    assert (await bounded(broker.submit(other.id, FrameIn()))).outputs["hang"] == "passed"
    RELEASE.set()
    await eventually(lambda: broker.stuck_threads == 0)
    assert (await bounded(broker.submit(stuck.id, FrameIn()))).outputs["tally"] == 2


class ParallelHang(Hang):
    name: ClassVar[str] = "parallel_hang"
    reentrant = True
    ends_stage = True


class Nap(Processor):
    """Reentrant; sleeps ``frame.meta["nap"]`` seconds (none without it)."""

    name: ClassVar[str] = "nap"
    reentrant = True

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        time.sleep(float(frame.meta.get("nap", 0.0)))
        return None


class Nap2(Nap):
    name: ClassVar[str] = "nap2"


async def test_a_parallel_stage_blames_only_the_frame_that_hangs(release: None) -> None:
    """Frame 0 hangs; frame 1, beside it in the stage, takes longer than the limit in two
    calls under it. Frame 1's watch must not take frame 0's call for its own: the hang is
    counted once and one thread is lost, not two."""
    reg = registry()
    for cls in (ParallelHang, Nap, Nap2):
        reg.register(cls.name, cls)
    broker = Broker(
        reg,
        config=BrokerConfig(max_workers=2, processor_timeout_s=LIMIT_S, parallel_frames=2),
    )
    await broker.start()
    try:
        session = await live_session(
            broker, transport="t", pipeline=["nap", "nap2", "parallel_hang", "tally"]
        )
        assert session.pipeline.parallel(0)
        hung = asyncio.ensure_future(broker.submit(session.id, FrameIn(meta=HANG)))
        slow = asyncio.ensure_future(
            broker.submit(session.id, FrameIn(meta={"nap": 0.6 * LIMIT_S}))
        )
        with pytest.raises(ProcessorTimeout) as timed_out:
            await bounded(hung)
        assert timed_out.value.processor == "parallel_hang"
        assert "frame 0" in str(timed_out.value)
        with pytest.raises(ProcessorTimeout):  # answered with it: frames keep their order
            await bounded(slow)
        await asyncio.sleep(3 * LIMIT_S)  # frame 1's call has returned by now
        timeouts = sample(broker, "framebroker_processor_timeouts_total", processor="parallel_hang")
        assert timeouts == 1
        assert broker.stuck_threads == 1
        RELEASE.set()
        await eventually(lambda: broker.stuck_threads == 0)
        after = await bounded(broker.submit(session.id, FrameIn()))
        assert after.outputs["hang"] == "passed"
    finally:
        RELEASE.set()
        await asyncio.wait_for(broker.stop(), 10)


async def test_a_stuck_session_is_not_busy_so_it_can_expire(broker: Broker) -> None:
    session = await live_session(broker, transport="t")
    with pytest.raises(ProcessorTimeout):
        await bounded(broker.submit(session.id, FrameIn(meta=HANG)))
    assert session.id not in broker.busy_sessions


async def test_a_timed_out_model_lane_is_counted_and_its_thread_replaced(broker: Broker) -> None:
    session = await live_session(
        broker, transport="webrtc", pipeline=["hang"], backpressure=Backpressure.NEWEST
    )
    predictions = broker.subscribe(f"session/{session.id}/prediction")
    broker.offer(session.id, FrameIn(meta=HANG))
    await bounded(predictions.wait())
    seen = [m.payload for m in predictions.drain()]
    assert seen[0]["error"] is not None
    assert "timed out" in seen[0]["error"]["error"]
    assert sample(broker, "framebroker_processor_timeouts_total", processor="hang") == 1
    assert broker.stuck_threads == 1
    # The lane's only worker is stuck; a plain session still gets a thread.
    other = await live_session(broker, transport="t", pipeline=["noop"])
    assert (await bounded(broker.submit(other.id, FrameIn()))).outputs == {"noop": 0}
    RELEASE.set()
    await eventually(lambda: broker.stuck_threads == 0)
    await bounded(broker.end(session.id))


@pytest.mark.parametrize("every", [1, 4])
async def test_a_leaking_processor_shows_its_growth_and_a_clean_one_does_not(
    release: None, every: int
) -> None:
    broker = await make_broker(memory_sample_every=every, default_pipeline=("leak", "noop"))
    try:
        session = await live_session(broker, transport="t")
        for _ in range(8):
            await bounded(broker.submit(session.id, FrameIn()))
        leaked = sample(broker, "framebroker_processor_memory_growth_bytes", processor="leak")
        clean = sample(broker, "framebroker_processor_memory_growth_bytes", processor="noop")
        # 8 calls keeping 2 MiB each; with every=4 two calls are measured, each counted 4 times.
        assert 0.75 * 16 * MiB <= leaked <= 1.5 * 16 * MiB, leaked / MiB
        assert abs(clean) < 1 * MiB, clean / MiB
    finally:
        await broker.stop()


async def test_no_memory_is_measured_when_sampling_is_off(release: None) -> None:
    broker = await make_broker(memory_sample_every=0, default_pipeline=("leak",))
    try:
        session = await live_session(broker, transport="t")
        assert session.pipeline.probe is None
        await bounded(broker.submit(session.id, FrameIn()))
        text = broker.metrics.render().decode()
        assert 'framebroker_processor_memory_growth_bytes{processor="leak"}' not in text
    finally:
        await broker.stop()


def test_a_pipeline_says_what_runs_and_once_abandoned_starts_nothing(release: None) -> None:
    tally, hang, after = Tally(), Hang(), After()
    pipeline = Pipeline([tally, hang, after])
    ctx = ProcessContext(session_id="s")
    pipeline.run(Frame(), ctx)
    assert pipeline.running() == []
    worker = threading.Thread(target=pipeline.run, args=(Frame(meta=HANG), ctx))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not pipeline.running():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        [call] = pipeline.running()
        assert (call.processor, call.stage) == ("hang", 0)
        assert pipeline.abandon() == ["hang"]
        results, errors = pipeline.end(ctx)
        assert results == {"tally_total": 2, "after_total": 1}
        assert [e["processor"] for e in errors] == ["hang"]
    finally:
        RELEASE.set()
        worker.join(10)
    assert after.seen == 1  # the frame that hung never reached it
    assert pipeline.running() == []


async def test_a_seed_002_pipeline_answers_the_timeout_and_the_others_answer(
    broker: Broker,
) -> None:
    pipes = InProcessPipelines(broker, {"stall": ["hang"], "count": ["tally"]})
    image = np.zeros((8, 8, 3), np.uint8)
    answers = await bounded(pipes.run("stream", [image, image], meta=HANG))
    # What a Socket.IO client gets in its 'result' event for this window.
    assert answers["stall"]["code"] == "processor_timeout"
    assert answers["stall"]["processor"] == "hang"
    assert answers["stall"]["frames"] == 0
    assert answers["count"]["results"] == [{"tally": 1}, {"tally": 2}]


def test_the_pool_replaces_a_stuck_thread_even_when_it_looked_idle(release: None) -> None:
    # ThreadPoolExecutor counts a worker idle after each call, busy again or not; lose() must
    # start a thread anyway, else work queued behind the stuck call waits on it.
    pool = WorkerPool(1)
    go = threading.Event()
    try:
        first = pool.submit(go.wait, 10)
        pool.submit(lambda: None)
        stuck = pool.submit(RELEASE.wait, GIVE_UP_S)  # runs after two calls left two permits
        go.set()
        first.result(10)
        behind = pool.submit(lambda: "ran")
        time.sleep(0.05)
        assert not behind.done()
        assert not stuck.done()
        pool.lose()
        assert pool.stuck == 1
        assert behind.result(10) == "ran"
        RELEASE.set()
        stuck.result(10)
        pool.regain()
        assert pool.stuck == 0
    finally:
        RELEASE.set()
        pool.shutdown(wait=True)
