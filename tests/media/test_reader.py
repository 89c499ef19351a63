"""The reader thread (``media/reader.py``): delivery, pacing, looping, stopping, scaling, and
reconnecting to streams that fail or drop."""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framebroker.media.reader import VideoSource
from framebroker.media.sources import SourceError

from .video_clips import VTEST, H, W, encode_video, index_of, needs_vtest


@dataclass
class Collector:
    """An ``on_frame``/``on_end`` pair that records what a VideoSource delivers."""

    stop_after: int | None = None
    delay_s: float = 0.0
    source: VideoSource | None = None
    images: list[np.ndarray] = field(default_factory=list)
    pts: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    first: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    end_error: BaseException | None = None

    def on_frame(self, image: np.ndarray, pts_s: float, index: int) -> None:
        self.images.append(image)
        self.pts.append(pts_s)
        self.indices.append(index)
        self.first.set()
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.stop_after is not None and len(self.images) >= self.stop_after:
            assert self.source is not None
            self.source.stop()

    def on_end(self, error: BaseException | None) -> None:
        self.end_error = error
        self.ended.set()

    def source_for(self, uri: str | Path, **kwargs: Any) -> VideoSource:
        self.source = VideoSource(str(uri), self.on_frame, on_end=self.on_end, **kwargs)
        return self.source


def run_to_end(collector: Collector, uri: str | Path, **kwargs: Any) -> tuple[VideoSource, float]:
    source = collector.source_for(uri, **kwargs)
    t0 = time.monotonic()
    source.start()
    assert source.wait(10), "the reader did not finish"
    return source, time.monotonic() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_delivers_every_frame_fast_when_not_realtime(clip: Path) -> None:
    c = Collector()
    source, elapsed = run_to_end(c, clip, realtime=False)
    assert elapsed < 1.0
    assert c.indices == list(range(50))
    assert [index_of(i) for i in c.images] == list(range(50))
    assert all(i.shape == (H, W, 3) and i.dtype == np.uint8 for i in c.images)
    assert c.pts == pytest.approx([i / 25 for i in range(50)])
    assert (source.fps, source.width, source.height) == (25, W, H)
    assert (source.frames_read, source.frames_delivered, source.frames_dropped) == (50, 50, 0)
    assert c.ended.is_set()
    assert c.end_error is None
    assert not source.running
    assert source.last_error is None


def test_realtime_takes_the_clip_duration(clip: Path) -> None:
    c = Collector()
    source, elapsed = run_to_end(c, clip)  # files default to realtime
    assert source.realtime is True
    assert 1.85 <= elapsed <= 2.6
    assert source.frames_read == 50
    assert source.frames_delivered >= 45  # a loaded machine may skip one or two


def test_realtime_skips_ahead_for_a_slow_consumer(clip: Path) -> None:
    c = Collector(delay_s=0.1)  # 2.5 frame intervals per frame
    source, elapsed = run_to_end(c, clip, realtime=True)
    assert elapsed < 2.6  # on the source's clock, not 50 x 0.1 s
    assert source.frames_dropped > 20
    assert source.frames_delivered + source.frames_dropped == 50
    assert c.indices == sorted(c.indices)
    assert [index_of(i) for i in c.images] == c.indices


def test_loop_keeps_pts_increasing(clip: Path) -> None:
    c = Collector(stop_after=130)  # stop() from inside on_frame
    source, _ = run_to_end(c, clip, realtime=False, loop=True)
    assert len(c.pts) == 130
    assert c.indices == list(range(130))
    assert all(b > a for a, b in zip(c.pts, c.pts[1:], strict=False))
    assert c.pts[50] == pytest.approx(2.0)
    assert c.pts[129] == pytest.approx(129 / 25)
    assert [index_of(i) for i in c.images] == [i % 50 for i in range(130)]
    assert c.end_error is None
    assert source.last_error is None


def test_stop_interrupts_a_pacing_sleep(slow_clip: Path) -> None:
    c = Collector()
    source = c.source_for(slow_clip)
    source.start()
    assert c.first.wait(5)
    t0 = time.monotonic()
    assert source.stop(timeout=2)
    assert time.monotonic() - t0 < 0.3
    assert not source.running
    assert c.ended.is_set()
    assert c.end_error is None
    assert len(c.pts) == 1
    assert source.stop() is True  # idempotent


def test_max_size_scales_down_keeping_aspect(clip: Path) -> None:
    c = Collector()
    source, _ = run_to_end(c, clip, realtime=False, max_size=(32, 32))
    assert {i.shape for i in c.images} == {(24, 32, 3)}
    assert (source.width, source.height) == (32, 24)
    c2 = Collector()
    run_to_end(c2, clip, realtime=False, max_size=(640, 480))  # never scaled up
    assert {i.shape for i in c2.images} == {(H, W, 3)}


def test_on_frame_error_stops_the_source(clip: Path) -> None:
    seen: list[int] = []
    ended: list[BaseException | None] = []

    def on_frame(image: np.ndarray, pts_s: float, index: int) -> None:
        seen.append(index)
        if index == 2:
            raise RuntimeError("consumer bug")

    source = VideoSource(str(clip), on_frame, realtime=False, on_end=ended.append)
    source.start()
    assert source.wait(5)
    assert seen == [0, 1, 2]
    assert isinstance(source.last_error, RuntimeError)
    assert ended == [source.last_error]
    assert source.frames_delivered == 2


def test_start_twice_and_stop_before_start(clip: Path) -> None:
    source = VideoSource(str(clip), lambda *_: None, realtime=False)
    assert source.stop() is True
    with pytest.raises(RuntimeError, match="already started"):
        source.start()  # a stopped source cannot be started
    other = VideoSource(str(clip), lambda *_: None)
    other.start()
    with pytest.raises(RuntimeError, match="already started"):
        other.start()
    assert other.stop()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_size": (0, 10)}, "max_size"),
        ({"max_size": (10,)}, "max_size"),
        ({"backoff_base": 0}, "backoff base"),
        ({"backoff_base": 2, "backoff_cap": 1}, "backoff cap"),
    ],
)
def test_bad_options(clip: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VideoSource(str(clip), lambda *_: None, **kwargs)


def delays_logged(caplog: pytest.LogCaptureFixture) -> list[float]:
    found = (re.search(r"reconnecting in ([\d.]+) s", r.getMessage()) for r in caplog.records)
    return [float(m.group(1)) for m in found if m]


def test_reconnects_with_growing_backoff_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="framebroker.media.reader")
    c = Collector()
    source = c.source_for(
        f"rtsp://user:secret@127.0.0.1:{free_port()}/x",
        backoff_base=0.02,
        backoff_cap=0.08,
        timeout=1,
    )
    source.start()  # does not raise: network sources connect in the thread
    wait_for(lambda: source.reconnects >= 5)
    t0 = time.monotonic()
    assert source.stop(timeout=2)
    assert time.monotonic() - t0 < 0.5
    assert delays_logged(caplog)[:5] == [0.02, 0.04, 0.08, 0.08, 0.08]
    assert isinstance(source.last_error, SourceError)
    assert "cannot open the stream" in str(source.last_error)
    assert "secret" not in caplog.text
    assert "secret" not in str(source.last_error)
    assert c.ended.is_set()
    assert c.end_error is None
    assert not source.running
    assert not source.connected


def test_no_reconnect_ends_with_the_error() -> None:
    c = Collector()
    source, _ = run_to_end(c, f"rtsp://127.0.0.1:{free_port()}/x", reconnect=False)
    assert source.reconnects == 0
    assert isinstance(c.end_error, SourceError)
    assert c.end_error is source.last_error


@pytest.fixture
def stream_server() -> Iterator[tuple[str, list[int]]]:
    """An HTTP server sending 1 s of MPEG-TS per request, then hanging up: a live stream
    that keeps dropping. Yields its URL and the list of requests served."""
    buffer = io.BytesIO()
    encode_video(buffer, frames=25, fps=25, format="mpegts")
    payload = buffer.getvalue()
    served: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(len(served))
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/live.ts", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_live_stream_reconnects_after_a_drop(
    stream_server: tuple[str, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="framebroker.media.reader")
    url, served = stream_server
    c = Collector(stop_after=60)
    source, elapsed = run_to_end(c, url, backoff_base=0.05)
    assert source.live is True
    assert source.realtime is False
    assert len(served) >= 3
    assert source.reconnects >= 2
    assert elapsed < 3
    assert all(b > a for a, b in zip(c.pts, c.pts[1:], strict=False))
    assert c.pts[0] == 0.0
    # Every connection delivered frames, so the backoff never grew.
    assert set(delays_logged(caplog)) == {0.05}
    assert "connected again" in caplog.text


@needs_vtest
def test_vtest_whole_file() -> None:
    c = Collector()
    source, _ = run_to_end(c, VTEST, realtime=False, max_size=(384, 384))
    assert source.frames_read == 795
    assert (source.fps, source.width, source.height) == (10, 384, 288)
    assert {i.shape for i in c.images} == {(288, 384, 3)}
    assert c.pts[-1] == pytest.approx(79.4)
