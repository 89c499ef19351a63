"""A source feed: the server reading a video itself into a people-counting session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from framebroker.config import load_settings
from framebroker.media.video import demo_clip
from framebroker.runtime import Broker, BrokerConfig
from framebroker.runtime.live import LiveFeedConfig
from framebroker.runtime.sources import PeopleCounterConfig, SourceFeed
from framebroker.server.app import build_registry


async def test_ending_its_session_from_outside_stops_the_reader(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    broker = Broker(build_registry(settings), config=BrokerConfig(max_workers=2))
    await broker.start()
    feed = SourceFeed(
        "demo", str(demo_clip()), broker, None,
        PeopleCounterConfig(faces=False), LiveFeedConfig(),
        realtime=False, loop=True,
    )  # fmt: skip
    try:
        await feed.start()
        assert feed.video is not None
        assert feed.session is not None
        for _ in range(300):  # some frames go through first
            if feed.session.stats.frames_processed >= 2:
                break
            await asyncio.sleep(0.05)
        await broker.end_session(feed.session.id, reason="deleted")
        for _ in range(200):
            if not feed.video.running:
                break
            await asyncio.sleep(0.05)
        assert not feed.video.running
        read = feed.video.frames_read
        await asyncio.sleep(0.3)
        assert feed.video.frames_read == read  # nothing decoded for nobody
    finally:
        await feed.stop()
        await broker.stop()


async def test_failing_frames_are_counted_and_reported_a_line_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(data_dir=tmp_path)
    broker = Broker(build_registry(settings), config=BrokerConfig(max_workers=1))
    feed = SourceFeed(
        "cam", "unused.mp4", broker, None,
        PeopleCounterConfig(faces=False), LiveFeedConfig(),
        realtime=False, loop=False,
    )  # fmt: skip

    async def fail() -> None:
        raise RuntimeError("processor 'hang' timed out")

    caplog.set_level(logging.WARNING, logger="framebroker.runtime.sources")
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
