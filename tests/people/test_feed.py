"""A source feed: the server reading a video itself into a people-counting session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from framebroker.config import load_settings
from framebroker.core.inbox import Backpressure
from framebroker.media.sources import demo_clip
from framebroker.people.config import LiveSettings, PeopleCounterSettings
from framebroker.people.feed import SourceFeed, people_pipeline
from framebroker.runtime import Broker, BrokerConfig
from framebroker.server.app import build_registry


@contextlib.asynccontextmanager
async def demo_feed(
    tmp_path: Path, *, realtime: bool | None, max_workers: int = 2
) -> AsyncIterator[tuple[Broker, SourceFeed]]:
    """A started broker and a feed on the bundled clip (looped), stopped afterwards."""
    settings = load_settings(data_dir=tmp_path)
    broker = Broker(build_registry(settings), config=BrokerConfig(max_workers=max_workers))
    await broker.start()
    feed = SourceFeed(
        "demo", str(demo_clip()), broker, broker.run_blocking, None,
        PeopleCounterSettings(faces=False), LiveSettings(),
        realtime=realtime, loop=True,
    )  # fmt: skip
    try:
        await feed.start()
        yield broker, feed
    finally:
        await feed.stop()
        await broker.stop()


async def test_ending_its_session_from_outside_stops_the_reader(tmp_path: Path) -> None:
    async with demo_feed(tmp_path, realtime=False) as (broker, feed):
        assert feed.video is not None
        assert feed.session is not None
        for _ in range(300):  # some frames go through first
            if broker.get(feed.session.id).stats.frames_processed >= 2:
                break
            await asyncio.sleep(0.05)
        await broker.end(feed.session.id, reason="deleted")
        for _ in range(200):
            if not feed.video.running:
                break
            await asyncio.sleep(0.05)
        assert not feed.video.running
        read = feed.video.frames_read
        await asyncio.sleep(0.3)
        assert feed.video.frames_read == read  # nothing decoded for nobody


async def test_failing_frames_are_counted_and_reported_a_line_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(data_dir=tmp_path)
    broker = Broker(build_registry(settings), config=BrokerConfig(max_workers=1))
    feed = SourceFeed(
        "cam", "unused.mp4", broker, broker.run_blocking, None,
        PeopleCounterSettings(faces=False), LiveSettings(),
        realtime=False, loop=False,
    )  # fmt: skip

    async def fail() -> None:
        raise RuntimeError("processor 'hang' timed out")

    caplog.set_level(logging.WARNING, logger="framebroker.people.feed")
    for _ in range(50):  # every frame of a feed whose processor is stuck fails
        task = asyncio.ensure_future(fail())
        with contextlib.suppress(RuntimeError):
            await task
        feed._done(task, throttled=False)
    assert feed.frames_failed == 50
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "1 frame(s) failed" in lines[0]
    assert "timed out" in lines[0]


async def test_a_file_read_as_fast_as_the_pipeline_goes_loses_no_frame(tmp_path: Path) -> None:
    # The reader waits for the pipeline; under "latest" a frame arriving behind a waiting one
    # overtook it, freed its slot, and the reader spun through the clip (measured: 586 of 628
    # frames dropped, ten decoded for each one processed).
    async with demo_feed(tmp_path, realtime=False, max_workers=4) as (broker, feed):
        assert feed.session is not None
        assert feed.video is not None
        assert feed.session.backpressure == Backpressure.WAIT
        assert feed.paced_by_pipeline
        stats = broker.get(feed.session.id).stats
        for _ in range(600):
            if stats.frames_processed >= 40:
                break
            await asyncio.sleep(0.05)
        assert stats.frames_processed >= 40
        assert stats.frames_dropped == 0
        slots = broker.frames_in_flight(broker.get(feed.session.id)) + 1
        assert feed.video.frames_read <= stats.frames_processed + slots + 1


@pytest.mark.parametrize("realtime", [None, True])
async def test_a_file_paced_at_its_frame_rate_keeps_the_latest_frame(
    tmp_path: Path, realtime: bool | None
) -> None:
    async with demo_feed(tmp_path, realtime=realtime) as (_, feed):
        assert feed.session is not None
        assert feed.session.backpressure == Backpressure.LATEST
        assert not feed.paced_by_pipeline


async def test_a_reader_paced_under_latest_has_room_for_the_first_stage_and_one_more(
    tmp_path: Path,
) -> None:
    # A network video that is not live, read as fast as possible: its session keeps the
    # latest frame, so more slots than this would let frames overtake one another.
    settings = load_settings(data_dir=tmp_path)
    broker = Broker(build_registry(settings), config=BrokerConfig(parallel_frames=3))
    await broker.start()
    feed = SourceFeed(
        "net", "http://127.0.0.1:9/clip.mp4", broker, broker.run_blocking, None,
        PeopleCounterSettings(faces=False), LiveSettings(), realtime=False,
    )  # fmt: skip
    try:
        latest = await broker.create(
            transport="source",
            pipeline=people_pipeline(PeopleCounterSettings(faces=False), day="2026-11-22"),
            backpressure=Backpressure.LATEST,
        )
        waiting = await broker.create(
            transport="source",
            pipeline=people_pipeline(PeopleCounterSettings(faces=False), day="2026-11-22"),
            backpressure=Backpressure.WAIT,
        )
        assert broker.stage_widths(broker.get(latest.id)) == [3, 1]
        assert latest.stage_widths == (3, 1)
        assert feed._slot_count(latest) == 4
        assert feed._slot_count(waiting) == 5
    finally:
        await broker.stop()
