from __future__ import annotations

import hashlib
import io
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from framebroker.errors import FramebrokerError, InvalidInput
from framebroker.media.video import (
    Backoff,
    SourceError,
    VideoSource,
    demo_clip,
    open_source,
    parse_source,
    read_frames,
)

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"
VTEST = MEDIA / "vtest.avi"
needs_vtest = pytest.mark.skipif(
    not VTEST.is_file(),
    reason=f"{VTEST} is absent (see shared/data/media/README.md to get it)",
)

W, H = 64, 48


def picture(i: int) -> np.ndarray:
    """Frame ``i``: its number in binary, as eight black or white stripes (survives lossy
    coding); :func:`index_of` reads it back."""
    image = np.zeros((H, W, 3), np.uint8)
    for bit in range(8):
        if i >> bit & 1:
            image[:, bit * 8 : bit * 8 + 8] = 255
    return image


def index_of(image: np.ndarray) -> int:
    step = image.shape[1] // 8
    bits = [
        image[:, b * step + step // 4 : (b + 1) * step - step // 4].mean() > 128 for b in range(8)
    ]
    return sum(1 << b for b, on in enumerate(bits) if on)


def encode_video(
    target: str | io.BytesIO,
    *,
    frames: int,
    fps: int,
    codec: str = "mpeg4",
    format: str | None = None,
) -> None:
    """A ``W``x``H`` video whose frames show their own number (see :func:`picture`)."""
    with av.open(target, "w", format=format) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(picture(i), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 25 fps, H.264 with B-frames in MP4: 50 frames."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    encode_video(str(path), frames=50, fps=25, codec="libx264")
    return path


@pytest.fixture(scope="module")
def slow_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 frames at 1 fps, MPEG-4 part 2 in MP4: long gaps to stop in."""
    path = tmp_path_factory.mktemp("video") / "slow.mp4"
    encode_video(str(path), frames=5, fps=1)
    return path


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


# -- parse_source / open_source ------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "kind", "url", "fmt"),
    [
        ("clip.mp4", "file", "clip.mp4", None),
        ("/data/a b.mkv", "file", "/data/a b.mkv", None),
        ("file:///data/x.avi", "file", "/data/x.avi", None),
        ("rtsp://cam.local:554/stream1", "network", "rtsp://cam.local:554/stream1", None),
        ("RTMP://live/app/key", "network", "RTMP://live/app/key", None),
        ("https://example.org/live.m3u8", "network", "https://example.org/live.m3u8", None),
        ("0", "device", "/dev/video0", "v4l2"),
        ("12", "device", "/dev/video12", "v4l2"),
        ("/dev/video2", "device", "/dev/video2", "v4l2"),
    ],
)
def test_parse_source_classifies(uri: str, kind: str, url: str, fmt: str | None) -> None:
    spec = parse_source(uri)
    assert (spec.kind, spec.url, spec.format) == (kind, url, fmt)


def test_parse_source_defaults_options_and_masks_passwords() -> None:
    spec = parse_source("rtsp://admin:hunter2@10.0.0.5/h264")
    assert spec.options == {"rtsp_flags": "prefer_tcp"}
    assert "hunter2" not in spec.label
    assert spec.label == "rtsp://admin:***@10.0.0.5/h264"
    mine = parse_source("rtsp://10.0.0.5/h264", options={"rtsp_flags": "", "stimeout": "5"})
    assert mine.options == {"rtsp_flags": "", "stimeout": "5"}


@pytest.mark.parametrize(("uri", "match"), [("", "got ''"), ("ftp://x/y.mp4", "scheme 'ftp'")])
def test_parse_source_refuses(uri: str, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_source(uri)


def test_source_error_is_a_client_error_naming_the_source() -> None:
    err = SourceError("x")
    assert isinstance(err, InvalidInput)
    assert isinstance(err, FramebrokerError)
    assert err.to_dict() == {"error": "x", "code": "source_error", "field": "source"}


def test_open_source_reports_the_stream(clip: Path) -> None:
    with open_source(str(clip)) as opened:
        assert (opened.width, opened.height) == (W, H)
        assert opened.fps == 25
        assert opened.duration_s == pytest.approx(2.0)
        assert opened.frame_count == 50
        assert not opened.live
        assert opened.stream.thread_type == av.codec.context.ThreadType.AUTO
        assert sum(1 for _ in opened.frames()) == 50


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=r"nope\.mp4.*no such file"):
        open_source(str(path))
    with pytest.raises(SourceError, match="no such file"):
        VideoSource(str(path), lambda *_: None).start()


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        open_source(str(tmp_path))


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video at all\n" * 20)
    with pytest.raises(SourceError, match="not a video file FFmpeg can read"):
        open_source(str(path))


def test_truncated_file(tmp_path: Path, clip: Path) -> None:
    path = tmp_path / "cut.mp4"
    path.write_bytes(clip.read_bytes()[:600])
    with pytest.raises(SourceError, match=r"cut\.mp4"):
        open_source(str(path))


def test_audio_only(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        samples = (np.sin(np.arange(8000) / 5) * 1000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(SourceError, match=r"no video stream \(streams found: audio\)"):
        open_source(str(path))


def test_undecodable_video(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.open()
        rng = np.random.default_rng(0)
        for i in range(10):
            packet = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base = Fraction(1, 25)
            out.mux(packet)
    with pytest.raises(SourceError, match=r"garbage\.mkv.*(no decodable frame|cannot decode)"):
        open_source(str(path))


# -- VideoSource ---------------------------------------------------------------------------


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


# -- reconnecting ------------------------------------------------------------------------


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    b = Backoff(0.5, 30)
    assert [b.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    b.reset()
    assert b.next_delay() == 0.5


def delays_logged(caplog: pytest.LogCaptureFixture) -> list[float]:
    found = (re.search(r"reconnecting in ([\d.]+) s", r.getMessage()) for r in caplog.records)
    return [float(m.group(1)) for m in found if m]


def test_reconnects_with_growing_backoff_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="framebroker.media.video")
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
    caplog.set_level(logging.INFO, logger="framebroker.media.video")
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


def test_timestamps_never_go_back() -> None:
    from framebroker.media.video import _Timeline

    timeline = _Timeline()
    timeline.new_segment(0.0)
    # A camera clock that jumps back, a frame with no timestamp, then a new connection.
    stamps = [timeline.stamp(raw, 0.1) for raw in (0.0, 0.1, 0.2, 0.05, 0.15, None)]
    timeline.new_segment(None)
    stamps += [timeline.stamp(raw, 0.1) for raw in (7.0, 7.1)]
    assert stamps == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])


# -- read_frames -------------------------------------------------------------------------


def test_read_frames_every_frame(clip: Path) -> None:
    frames = list(read_frames(str(clip)))
    assert [i for _, _, i in frames] == list(range(50))
    assert [p for _, p, _ in frames] == pytest.approx([i / 25 for i in range(50)])
    assert [index_of(img) for img, _, _ in frames] == list(range(50))


def test_read_frames_samples_at_a_decimal_rate(clip: Path) -> None:
    frames = list(read_frames(str(clip), fps=2.5))
    assert [p for _, p, _ in frames] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    assert [i for _, _, i in frames] == [0, 10, 20, 30, 40]
    assert [index_of(img) for img, _, _ in frames] == [0, 10, 20, 30, 40]


def test_read_frames_takes_the_frame_on_screen(clip: Path) -> None:
    # 3 fps on a 25 fps clip: instants 0, 1/3, 2/3, ... fall between frames.
    frames = list(read_frames(str(clip), fps=3))
    assert [i for _, _, i in frames] == [0, 8, 16, 25, 33, 41]


def test_read_frames_never_repeats_a_frame(slow_clip: Path) -> None:
    frames = list(read_frames(str(slow_clip), fps=4))
    assert [i for _, _, i in frames] == [0, 1, 2, 3, 4]


def test_read_frames_seeks(clip: Path) -> None:
    frames = list(read_frames(str(clip), fps=2.5, seek_s=1.0))
    assert [p for _, p, _ in frames] == pytest.approx([1.0, 1.4, 1.8])
    assert [i for _, _, i in frames] == [25, 35, 45]
    assert [index_of(img) for img, _, _ in frames] == [25, 35, 45]
    rest = list(read_frames(str(clip), seek_s=1.5))
    assert [i for _, _, i in rest] == list(range(37, 50))  # frame 37 is on screen at 1.5 s


def test_read_frames_resizes(clip: Path) -> None:
    frames = list(read_frames(str(clip), fps=5, size=(20, 30)))
    assert len(frames) == 10
    assert {img.shape for img, _, _ in frames} == {(30, 20, 3)}


def test_read_frames_realtime_paces(clip: Path) -> None:
    t0 = time.monotonic()
    frames = list(read_frames(str(clip), fps=5, seek_s=1.0, realtime=True))
    assert len(frames) == 5
    assert 0.75 <= time.monotonic() - t0 <= 1.3  # 4 intervals of 0.2 s


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fps": 0}, ValueError, "fps"),
        ({"fps": float("nan")}, ValueError, "fps"),
        ({"seek_s": -1}, ValueError, "seek_s"),
        ({"size": (0, 5)}, ValueError, "size"),
        ({"seek_s": 2.0}, SourceError, r"cannot start at 2 s, the video is 2 s long"),
    ],
)
def test_read_frames_refuses(
    clip: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        read_frames(str(clip), **kwargs)


# -- the shared sample and the bundled demo clip -------------------------------------------


@needs_vtest
def test_vtest_whole_file() -> None:
    c = Collector()
    source, _ = run_to_end(c, VTEST, realtime=False, max_size=(384, 384))
    assert source.frames_read == 795
    assert (source.fps, source.width, source.height) == (10, 384, 288)
    assert {i.shape for i in c.images} == {(288, 384, 3)}
    assert c.pts[-1] == pytest.approx(79.4)


@needs_vtest
def test_vtest_seek_and_sample() -> None:
    frames = list(read_frames(str(VTEST), fps=2.5, seek_s=70))
    assert len(frames) == 24
    assert [i for _, _, i in frames[:3]] == [700, 704, 708]
    assert frames[-1][1] == pytest.approx(79.2)
    assert frames[0][0].shape == (576, 768, 3)


def test_demo_clip_is_shipped_and_decodes() -> None:
    path = demo_clip()
    with open_source(str(path)) as opened:
        assert (opened.width, opened.height, opened.fps) == (640, 480, 10)
        assert opened.duration_s == pytest.approx(20.0)
        assert opened.frame_count == 200
        assert opened.stream.codec_context.name == "h264"
    frames = list(read_frames(str(path)))
    assert len(frames) == 200
    assert frames[-1][1] == pytest.approx(19.9)
    assert path.stat().st_size < 2_000_000


def test_demo_clip_notice_matches_the_clip() -> None:
    path = demo_clip()
    notice = (path.parent / "NOTICE").read_text(encoding="utf-8")
    assert "Apache-2.0 AND BSD-3-Clause" in notice
    assert "vtest.avi" in notice
    assert hashlib.sha256(path.read_bytes()).hexdigest() in notice
