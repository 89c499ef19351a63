"""A source feed: the server reading a video itself into a people-counting session."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
