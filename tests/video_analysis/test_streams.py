"""VideoStream's bounds and timers, driven directly with a fake client and a mock service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from framebroker.core.frame import ImageSource, RawImage
from framebroker.core.manager import SessionPolicy
from framebroker.errors import CapacityExceeded, InvalidImage, SessionNotFound
from framebroker.plugins import ProcessorRegistry
from framebroker.processors.video_window import VideoWindow
from framebroker.runtime import Broker, BrokerConfig
from framebroker.video_analysis.fanout import Fanout, HttpService, HttpServices
from framebroker.video_analysis.streams import StreamConfig, VideoStream, VideoStreams

from ..transports.images import scene


class Recorder:
    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def __call__(self, event: str, payload: dict[str, Any]) -> None:
        self.events.put_nowait((event, payload))

    async def next(self, timeout: float = 5) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.events.get(), timeout)


def image(seed: int = 0, w: int = 64, h: int = 48) -> Callable[[], ImageSource]:
    return lambda: RawImage(scene(w, h, seed=seed))


def make_broker(**policy: Any) -> Broker:
    registry = ProcessorRegistry()
    registry.register("video_window", VideoWindow)
    return Broker(registry, config=BrokerConfig(max_workers=2, policy=SessionPolicy(**policy)))


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    b = make_broker()
    await b.start()
    yield b
    await b.stop()


async def opened(broker: Broker, session_id: str, **kwargs: Any) -> VideoStream:
    """A stream whose session lives in ``broker``."""
    return await VideoStream.open(
        session_id, sessions=broker, offload=broker.run_blocking, **kwargs
    )


def fanout(delay: float = 0.0) -> Fanout:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay)
        return httpx.Response(200, json={"bytes": len(request.content)})

    http = HttpServices(
        [HttpService("svc", "http://analysis.test/v")], transport=httpx.MockTransport(handler)
    )
    return Fanout(http)


async def test_frames_replies_and_a_result_per_window(broker: Broker) -> None:
    rec = Recorder()
    fan = fanout()
    stream = await opened(
        broker, "s", fanout=fan, names=["svc"], config=StreamConfig(window_frames=2), emit=rec
    )  # fmt: skip
    replies = [await stream.add(image(i)) for i in range(3)]
    assert [(r["frame"], r["window"]) for r in replies] == [(0, 0), (1, 0), (2, 1)]
    event, payload = await rec.next()
    assert event == "result"
    assert (payload["window"], payload["frames"], payload["closed_by"]) == (0, 2, "frames")
    assert payload["result"]["svc"]["bytes"] > payload["video_bytes"]  # multipart around it
    assert await stream.flush() == 1
    event, payload = await rec.next()
    assert (payload["window"], payload["closed_by"]) == (1, "end")
    assert await stream.flush() is None
    await stream.close()
    with pytest.raises(SessionNotFound):
        await stream.add(image())
    await fan.aclose()


async def test_a_bad_image_changes_nothing(broker: Broker) -> None:
    def bad() -> ImageSource:
        raise InvalidImage("image: broken", field="image")

    fan = fanout()
    stream = await opened(broker, "s", fanout=fan, names=[], config=StreamConfig(), emit=Recorder())
    with pytest.raises(InvalidImage):
        await stream.add(bad)
    assert (await stream.add(image()))["frame"] == 0
    assert stream.inflight == 0
    await stream.close()
    await fan.aclose()


async def test_in_flight_frames_are_capped(broker: Broker) -> None:
    fan = fanout()
    stream = await opened(
        broker, "s", fanout=fan, names=[], config=StreamConfig(max_inflight=3, window_frames=100),
        emit=Recorder()
    )  # fmt: skip
    outcomes = await asyncio.gather(
        *(stream.add(image(i, 320, 240)) for i in range(10)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, CapacityExceeded)]
    accepted = [o for o in outcomes if isinstance(o, dict)]
    assert len(accepted) == 3
    assert len(refused) == 7
    assert [a["frame"] for a in accepted] == [0, 1, 2]  # in arrival order
    assert stream.frames_refused == 7
    await stream.close()
    await fan.aclose()


async def test_timed_windows_and_dropped_windows(broker: Broker) -> None:
    rec = Recorder()
    fan = fanout(delay=0.5)
    config = StreamConfig(window_frames=1, window_seconds=0.2, max_windows_in_flight=1)
    stream = await opened(broker, "s", fanout=fan, names=["svc"], config=config, emit=rec)
    await stream.add(image(0))  # window 0 closes at once, goes to the slow service
    await stream.add(image(1))  # window 1 has nowhere to go
    event, payload = await rec.next()
    assert (event, payload["code"], payload["window"]) == ("error", "capacity_exceeded", 1)
    event, payload = await rec.next()
    assert (event, payload["window"]) == ("result", 0)
    assert stream.windows_dropped == 1
    await stream.close()
    await fan.aclose()

    rec = Recorder()
    fan = fanout()
    config = StreamConfig(window_frames=50, window_seconds=0.2)
    stream = await opened(broker, "t", fanout=fan, names=["svc"], config=config, emit=rec)
    await stream.add(image(0))
    await stream.add(image(1))
    event, payload = await rec.next()
    assert (event, payload["frames"], payload["closed_by"]) == ("result", 2, "seconds")
    await stream.add(image(2))  # the next window gets its own timer
    event, payload = await rec.next()
    assert (payload["window"], payload["frames"]) == (1, 1)
    await stream.close()
    await fan.aclose()


async def test_close_cancels_analyses_and_drops_the_open_window(
    broker: Broker,
) -> None:
    rec = Recorder()
    fan = fanout(delay=30)
    config = StreamConfig(window_frames=2, window_seconds=60)
    stream = await opened(broker, "s", fanout=fan, names=["svc"], config=config, emit=rec)
    for i in range(3):
        await stream.add(image(i))
    assert stream.analyses == 1
    await asyncio.wait_for(stream.close(), 5)
    assert stream.analyses == 0
    assert rec.events.empty()
    await stream.close()  # twice is fine
    await fan.aclose()


async def test_streams_are_bounded_by_the_session_directory() -> None:
    broker = make_broker(max_sessions=1)
    await broker.start()
    fan = fanout()
    streams = VideoStreams()

    async def make(sid: str) -> VideoStream:
        return await opened(
            broker, sid, fanout=fan, names=[], config=StreamConfig(), emit=Recorder()
        )

    streams.add("c1", await make("a"))
    with pytest.raises(CapacityExceeded):
        streams.add("c2", await make("b"))
    assert [s.id for s in await broker.live()] == ["a"]  # a stream is a session
    assert streams.get("c1") is not None
    assert await streams.close("c1") is not None
    assert await streams.close("c1") is None
    assert await broker.live() == []
    streams.add("c2", await make("b"))
    await streams.close_all()
    assert len(streams) == 0
    await fan.aclose()
    await broker.stop()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_inflight"):
        StreamConfig(max_inflight=0)
    with pytest.raises(ValueError, match="window_seconds"):
        StreamConfig(window_seconds=-1)
