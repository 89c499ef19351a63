"""Model lanes: each model sees the newest frame it can keep up with; faults stay in their lane."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
import pytest

from framebroker.core import Backpressure, Frame, Pipeline, ProcessContext, Processor, Session
from framebroker.errors import SessionNotFound
from framebroker.media.av_frame import VideoFrameImage
from framebroker.plugins import ProcessorRegistry
from framebroker.runtime import Broker, BrokerConfig
from framebroker.runtime.metrics import Metrics
from framebroker.runtime.model_lanes import LaneLimits, LaneSessionStats, ModelLanes, Prediction
from framebroker.runtime.watchdog import Watchdog
from framebroker.runtime.workers import WorkerPool
from framebroker.sessions import FrameIn
from framebroker.storage import open_store


class Fast(Processor):
    name: ClassVar[str] = "fast"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.seen.append(frame.index)
        return {"fast": frame.index, "shared": "fast"}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"fast_frames": len(self.seen), "final": "fast"}


class Slow(Processor):
    name: ClassVar[str] = "slow"

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds
        self.seen: list[int] = []

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        time.sleep(self.seconds)
        self.seen.append(frame.index)
        return {"slow": frame.index, "shared": "slow"}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"slow_frames": len(self.seen), "final": "slow"}


class Quiet(Processor):
    """Says nothing on its first frames, as the seed's models may."""

    name: ClassVar[str] = "quiet"

    def __init__(self) -> None:
        self.n = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.n += 1
        return {"shared": "quiet"} if self.n > 3 else None


class Boom(Processor):
    name: ClassVar[str] = "boom"

    def __init__(self) -> None:
        self.ended = False

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        raise ValueError(f"cannot read frame {frame.index}")

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        self.ended = True
        return {"boom_end": True}


class Hang(Processor):
    """Blocks on its first frame until released (or 10 s pass)."""

    name: ClassVar[str] = "hang"
    release: ClassVar[threading.Event] = threading.Event()

    def __init__(self) -> None:
        self.calls = 0
        self.ended = False

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.calls += 1
        if self.calls == 1:
            Hang.release.wait(10)
        return {"hang": frame.index}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        self.ended = True
        return {"hang_end": True}


class Pixels(Processor):
    name: ClassVar[str] = "pixels"
    needs_image = True

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"mean": float(frame.image.mean()), "array_id": id(frame.image)}


@pytest.fixture
def executor() -> Iterator[WorkerPool]:
    pool = WorkerPool(max_workers=4, thread_name_prefix="lanes-test")
    yield pool
    Hang.release.set()
    pool.shutdown(wait=True)


def watchdog(pool: WorkerPool, timeout_s: float = 5.0, metrics: Metrics | None = None) -> Watchdog:
    """The broker's one watchdog, over ``pool``, with a time limit per call."""
    return Watchdog(pool, timeout_s, metrics or Metrics())


@pytest.fixture(autouse=True)
def _hang_blocks() -> Iterator[None]:
    Hang.release.clear()
    yield
    Hang.release.set()


def lanes_for(
    processors: list[Processor],
    executor: WorkerPool,
    limits: LaneLimits | None = None,
    timeout_s: float = 5.0,
) -> tuple[ModelLanes, list[Prediction]]:
    session = Session("s1", Pipeline(processors), backpressure=Backpressure.NEWEST)
    seen: list[Prediction] = []
    lanes = ModelLanes(session, watchdog(executor, timeout_s), limits, on_prediction=seen.append)
    lanes.start()
    return lanes, seen


async def feed(lanes: ModelLanes, n: int, fps: float = 100.0) -> None:
    for _ in range(n):
        lanes.offer(Frame())
        await asyncio.sleep(1 / fps)


async def test_a_slow_model_stalls_neither_the_track_nor_a_fast_model(
    executor: WorkerPool,
) -> None:
    fast, slow = Fast(), Slow(0.1)
    lanes, seen = lanes_for([fast, slow], executor)
    start = time.monotonic()
    await feed(lanes, 40)
    offered_in = time.monotonic() - start
    assert await lanes.wait_idle(5)
    await lanes.stop()

    assert offered_in < 1.5  # offering never waited for the slow model (40 x 0.1 s = 4 s)
    assert len(fast.seen) >= 38
    assert 3 <= len(slow.seen) <= 10
    assert slow.seen == sorted(slow.seen)
    assert slow.seen[-1] >= 30  # it always takes the newest frame, not the next in line
    report = lanes.report()
    for name in ("fast", "slow"):
        m = report[name]
        assert m["frames_offered"] == 40
        assert m["frames_run"] + m["frames_skipped"] + m["frames_not_due"] + m["timeouts"] == 40
    assert report["slow"]["frames_run"] == len(slow.seen)
    assert report["slow"]["frames_skipped"] == 40 - len(slow.seen)
    assert report["fast"]["errors"] == report["slow"]["errors"] == 0
    stats = lanes.stats.to_dict()
    assert stats["frames_in"] == 40
    assert stats["frames_processed"] == 40 - stats["frames_dropped"]
    assert set(stats["mean_latency_ms"]) == {"fast", "slow"}
    assert stats["mean_latency_ms"]["slow"] >= 90
    assert {p.model for p in seen} == {"fast", "slow"}
    assert all(p.latency_s >= 0 for p in seen)


async def test_outputs_merge_in_pipeline_order_later_keys_win(
    executor: WorkerPool,
) -> None:
    lanes, seen = lanes_for([Fast(), Quiet(), Slow(0.01)], executor)
    for _ in range(6):
        lanes.offer(Frame())
        assert await lanes.wait_idle(5)
    await lanes.stop()
    last = seen[-1].merged
    assert last["shared"] == "slow"  # the last model in the list wins
    assert {"fast", "slow", "shared"} <= set(last)
    assert lanes.merged()["shared"] == "slow"
    quiet = [p for p in seen if p.model == "quiet"]
    assert len(quiet) == 3  # nothing was sent for its first 3 frames, where it returned None
    assert lanes.report()["quiet"]["frames_run"] == 6
    # Before the slow model answered anything, fast's value stood.
    first_fast = next(p for p in seen if p.model == "fast")
    assert first_fast.merged["shared"] == "fast"


async def test_a_model_that_raises_is_reported_and_disabled_after_repeated_failures(
    executor: WorkerPool,
) -> None:
    fast, boom = Fast(), Boom()
    lanes, seen = lanes_for([fast, boom], executor, LaneLimits(max_failures=3))
    for _ in range(6):
        lanes.offer(Frame())
        assert await lanes.wait_idle(5)
    await lanes.stop()
    errors = [p.error for p in seen if p.error is not None]
    assert len(errors) == 3
    assert all(e["processor"] == "boom" for e in errors)
    assert "ValueError: cannot read frame 0" in errors[0]["error"]
    assert "disabled" not in errors[1]
    assert errors[2]["disabled"] is True
    assert lanes.disabled.keys() == {"boom"}
    assert "3 failures in a row" in lanes.disabled["boom"]
    assert len(fast.seen) == 6  # the others go on
    report = lanes.report()
    assert report["boom"]["frames_offered"] == 3  # none after it was disabled
    assert report["boom"]["errors"] == 3
    assert report["boom"]["disabled"] is not None
    assert lanes.stats.frame_errors == 3


async def test_a_success_resets_the_failure_count(executor: WorkerPool) -> None:
    class Flaky(Processor):
        name: ClassVar[str] = "flaky"

        def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
            if frame.index % 2 == 0:
                raise RuntimeError("even")
            return {"odd": frame.index}

    lanes, _ = lanes_for([Flaky()], executor, LaneLimits(max_failures=2))
    for _ in range(8):
        lanes.offer(Frame())
        assert await lanes.wait_idle(5)
    await lanes.stop()
    assert lanes.disabled == {}
    assert lanes.report()["flaky"]["errors"] == 4


async def test_a_model_that_hangs_is_timed_out_and_the_others_go_on(
    executor: WorkerPool,
) -> None:
    fast, hang = Fast(), Hang()
    lanes, seen = lanes_for([hang, fast], executor, LaneLimits(max_failures=2), timeout_s=0.2)
    lanes.offer(Frame())
    await asyncio.sleep(0.4)
    timeouts = [p for p in seen if p.error is not None]
    assert len(timeouts) == 1
    assert timeouts[0].model == "hang"
    assert "timed out" in timeouts[0].error["error"]  # type: ignore[index]
    assert "disabled" not in timeouts[0].error  # type: ignore[operator]
    await feed(lanes, 10)  # the hung model is not given these; the fast one is
    assert hang.calls == 1
    assert len(fast.seen) >= 10
    Hang.release.set()
    assert await lanes.wait_idle(5)
    await lanes.stop()
    assert hang.calls == 2  # after its call returned it got the newest frame
    report = lanes.report()["hang"]
    assert report["timeouts"] == 1
    assert report["frames_run"] == 1
    assert report["frames_skipped"] == 9
    # Its late answer to frame 0 was dropped; the answer to the newest frame came through.
    answers = [p.outputs for p in seen if p.model == "hang" and p.error is None]
    assert answers == [{"hang": 10}]


async def test_a_hung_model_is_disabled_after_max_failures(executor: WorkerPool) -> None:
    lanes, seen = lanes_for([Hang(), Fast()], executor, LaneLimits(max_failures=1), timeout_s=0.1)
    lanes.offer(Frame())
    await asyncio.sleep(0.3)
    await feed(lanes, 3)
    assert lanes.disabled.keys() == {"hang"}
    errors = [p.error for p in seen if p.error is not None]
    assert errors[0]["disabled"] is True  # type: ignore[index]
    assert lanes.report()["hang"]["frames_offered"] == 1
    Hang.release.set()
    await lanes.stop()


async def test_waiting_for_a_free_worker_does_not_count_against_the_timeout() -> None:
    class Slow2(Slow):
        name: ClassVar[str] = "slow2"

    pool = WorkerPool(max_workers=1)
    try:
        lanes, seen = lanes_for([Slow(0.15), Slow2(0.15)], pool, timeout_s=0.25)
        lanes.offer(Frame())  # one of the two waits 0.15 s for the only worker
        assert await lanes.wait_idle(5)
        await lanes.stop()
    finally:
        pool.shutdown(wait=True)
    assert [p.error for p in seen] == [None, None]


async def test_pixels_are_converted_once_for_all_models(executor: WorkerPool) -> None:
    class Pixels2(Pixels):
        name: ClassVar[str] = "pixels2"

    lanes, seen = lanes_for([Pixels(), Pixels2(), Fast()], executor)
    image = VideoFrameImage(av.VideoFrame.from_ndarray(np.full((8, 8, 3), 7, np.uint8), "bgr24"))
    lanes.offer(Frame(source=image))
    assert await lanes.wait_idle(5)
    await lanes.stop()
    assert [p.outputs["mean"] for p in seen if p.model.startswith("pixels")] == [7.0, 7.0]
    assert len({p.outputs["array_id"] for p in seen if p.model.startswith("pixels")}) == 1
    assert lanes.needs_image


async def test_frames_no_model_reads_are_never_converted(executor: WorkerPool) -> None:
    lanes, _ = lanes_for([Fast()], executor)
    image = VideoFrameImage(av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), "bgr24"))
    lanes.offer(Frame(source=image))
    assert await lanes.wait_idle(5)
    await lanes.stop()
    assert not image.decoded
    assert not lanes.needs_image


async def test_offer_before_start_or_after_stop_raises(executor: WorkerPool) -> None:
    session = Session("s", Pipeline([Fast()]))
    lanes = ModelLanes(session, watchdog(executor))
    with pytest.raises(RuntimeError, match="not running"):
        lanes.offer(Frame())
    lanes.start()
    with pytest.raises(RuntimeError, match="already started"):
        lanes.start()
    await lanes.stop()
    with pytest.raises(RuntimeError, match="not running"):
        lanes.offer(Frame())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"end_timeout_s": float("inf")}, "end_timeout_s"),
        ({"max_failures": -1}, "max_failures"),
        ({"max_failures": True}, "max_failures"),
    ],
)
def test_limits_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LaneLimits(**kwargs)


# -- ending through the broker -----------------------------------------------------------


def lanes_broker(tmp_path: Path, limits: LaneLimits, processor_timeout_s: float = 10.0) -> Broker:
    reg = ProcessorRegistry()
    for cls in (Fast, Slow, Boom, Hang, Quiet):
        reg.register(cls.name, cls)
    return Broker(
        reg,
        store=open_store(f"sqlite:///{tmp_path / 'lanes.sqlite3'}"),
        config=BrokerConfig(
            max_workers=4,
            default_pipeline=("fast",),
            lanes=limits,
            processor_timeout_s=processor_timeout_s,
        ),
    )


async def offer(broker: Broker, session_id: str, n: int, fps: float = 100.0) -> None:
    for _ in range(n):
        broker.offer(session_id, FrameIn())
        await asyncio.sleep(1 / fps)


async def test_finish_runs_every_end_merges_in_order_and_persists(tmp_path: Path) -> None:
    broker = lanes_broker(tmp_path, LaneLimits(max_failures=2))
    await broker.start()
    try:
        info = await broker.create(
            transport="webrtc", pipeline=["fast", "slow", "boom"], backpressure=Backpressure.NEWEST
        )
        session = broker.get(info.id)
        await offer(broker, info.id, 10)
        lanes = broker._lanes[info.id].models
        assert lanes is not None
        assert await lanes.wait_idle(5)
        summary = await broker.end(info.id, reason="disconnected")

        assert summary.reason == "disconnected"
        assert summary.pipeline == ["fast", "slow", "boom"]
        # Every model's end ran, the disabled one's too; later models win on equal keys.
        assert summary.results["final"] == "slow"
        assert summary.results["fast_frames"] == 10
        assert summary.results["boom_end"] is True
        assert summary.stats["models"]["boom"]["disabled"] is not None
        assert summary.stats["models"]["fast"]["frames_run"] == 10
        assert session.id not in broker.manager
        assert isinstance(session.stats, LaneSessionStats)

        assert broker.store is not None
        record = await broker.run_blocking(broker.store.get_session, session.id)
        assert record is not None
        assert record["state"] == "ended"
        assert record["summary"]["results"]["final"] == "slow"
        assert record["summary"]["stats"]["models"]["slow"]["frames_offered"] == 10
    finally:
        await broker.stop()


async def test_a_model_still_hung_at_the_end_does_not_get_its_end_called(tmp_path: Path) -> None:
    broker = lanes_broker(tmp_path, LaneLimits(end_timeout_s=0.2), processor_timeout_s=0.1)
    await broker.start()
    try:
        info = await broker.create(
            transport="webrtc", pipeline=["hang", "fast"], backpressure=Backpressure.NEWEST
        )
        hang = broker.get(info.id).pipeline.processors[0]
        assert isinstance(hang, Hang)
        await offer(broker, info.id, 5)
        start = time.monotonic()
        summary = await broker.end(info.id)
        assert time.monotonic() - start < 2
        assert not hang.ended
        assert summary.pipeline == ["hang", "fast"]
        assert summary.results == {"fast_frames": 5, "final": "fast"}
        assert summary.errors[0]["processor"] == "hang"
        assert "end() was not called" in summary.errors[0]["error"]
    finally:
        Hang.release.set()
        await broker.stop()


async def test_predictions_are_published_as_plain_data(tmp_path: Path) -> None:
    broker = lanes_broker(tmp_path, LaneLimits())
    await broker.start()
    try:
        info = await broker.create(
            transport="webrtc", pipeline=["fast"], backpressure=Backpressure.NEWEST
        )
        feed = broker.subscribe(f"session/{info.id}/prediction")
        broker.offer(info.id, FrameIn(meta={"pts": 7}))
        await asyncio.wait_for(feed.wait(), 5)
        (message,) = feed.drain()
        assert message.payload["model"] == "fast"
        assert message.payload["frame"] == 0
        assert message.payload["meta"] == {"pts": 7}
        assert message.payload["merged"] == message.payload["outputs"]
        assert message.payload["error"] is None
        with pytest.raises(ValueError, match="by submit, not offer"):
            broker.offer((await broker.create(transport="t")).id, FrameIn())
        await broker.end(info.id)
        with pytest.raises(SessionNotFound):
            broker.offer(info.id, FrameIn())
    finally:
        await broker.stop()


async def test_frames_and_model_times_are_counted_in_metrics(
    executor: WorkerPool,
) -> None:
    from framebroker.runtime.metrics import Metrics

    metrics = Metrics()
    session = Session("s1", Pipeline([Fast(), Slow(0.05)]), transport="webrtc",
                      backpressure=Backpressure.LATEST)  # fmt: skip
    lanes = ModelLanes(session, watchdog(executor, metrics=metrics), metrics=metrics)
    lanes.start()
    await feed(lanes, 20)
    assert await lanes.wait_idle(5)
    await lanes.stop()
    stats = lanes.stats.to_dict()
    text = metrics.render().decode()

    def value(series: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(series + " "))
        return float(line.split()[-1])

    outcome = 'framebroker_frames_total{{outcome="{}",transport="webrtc"}}'
    assert value(outcome.format("received")) == 20
    assert value(outcome.format("processed")) == stats["frames_processed"]
    dropped = stats["frames_dropped"]
    if dropped:
        assert value(outcome.format("dropped")) == dropped
    runs = lanes.report()
    assert (
        value('framebroker_processor_seconds_count{processor="slow"}') == runs["slow"]["frames_run"]
    )
    assert value('framebroker_processor_seconds_count{processor="fast"}') == 20


async def test_frames_over_the_sessions_rate_reach_no_model_and_are_counted(
    executor: WorkerPool,
) -> None:
    from framebroker.runtime.metrics import Metrics

    metrics = Metrics()
    session = Session("s1", Pipeline([Fast()]), transport="webrtc",
                      backpressure=Backpressure.LATEST, client="10.0.0.1", max_fps=5)  # fmt: skip
    lanes = ModelLanes(session, watchdog(executor, metrics=metrics), metrics=metrics)
    lanes.start()
    start = time.time()
    offered = [lanes.offer(Frame(received_at=start + i / 50)) for i in range(20)]  # 50 fps
    assert offered[:5] == [True] * 5  # the first second's burst
    assert offered.count(True) <= 7
    assert await lanes.wait_idle(5)
    await lanes.stop()
    refused = offered.count(False)
    stats = lanes.stats.to_dict()
    assert stats["frames_dropped"] >= refused
    assert stats["frames_in"] == 20
    assert lanes.report()["fast"]["frames_offered"] == 20 - refused
    # The frames that went in are numbered without gaps.
    fast = session.pipeline.processors[0]
    assert isinstance(fast, Fast)
    assert fast.seen == sorted(fast.seen)
    assert set(fast.seen) <= set(range(20 - refused))
    text = metrics.render().decode()
    assert (
        f'framebroker_frames_dropped_total{{reason="rate_limited",transport="webrtc"}} {refused}.0'
        in text
    )
