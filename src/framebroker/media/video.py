"""Video in: files, network streams and cameras, decoded with PyAV into BGR frames.

Three ways in, one decoder underneath:

- :func:`open_source` opens a source and decodes its first frame, so a missing file, a file
  with no video, or one that cannot be decoded is refused at once with a :class:`SourceError`
  that says which, instead of surfacing later as an empty stream.
- :class:`VideoSource` reads a source in its own daemon thread and hands each frame to a
  callback, paced at the source's frame rate when asked; it loops files and reconnects to
  cameras and network streams with exponential backoff. This is what feeds a session from
  ``serve --source``. It never decodes more than one frame ahead of the callback, so memory
  stays flat however slow the consumer is; the consumer keeps the newest frame (the
  ``latest`` policy) and drops the rest.
- :func:`read_frames` is the synchronous version for tools (``extract-frames``): sample a
  file at a given rate on the video's own clock, from a given time, at a given size.

Frames are BGR ``uint8`` arrays of shape (height, width, 3), like every image in framebroker.
Timestamps are seconds on the video's clock, starting at 0 at the beginning of the source.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import av
import av.container
import numpy as np
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray

from ..errors import InvalidInput
from .convert import to_bgr

__all__ = [
    "NETWORK_SCHEMES",
    "Backoff",
    "FrameCallback",
    "OpenedSource",
    "SourceError",
    "SourceKind",
    "SourceSpec",
    "VideoSource",
    "demo_clip",
    "open_source",
    "parse_source",
    "read_frames",
]

logger = logging.getLogger(__name__)

Image = NDArray[np.uint8]
SourceKind = Literal["file", "network", "device"]
FrameCallback = Callable[[Image, float, int], None]
"""``on_frame(image, pts_s, index)``: called from the reader thread for each delivered frame."""

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https"})
_DEVICE_NUMBER = re.compile(r"\d+")
# Used only where a stream declares no frame rate and a frame carries no timestamp.
_FALLBACK_FPS = 25.0
# Consecutive packets the decoder may reject before the source counts as broken. A camera on
# a lossy link produces a few undecodable packets now and then; a file of garbage, all of them.
_MAX_BAD_PACKETS = 100
# How long realtime pacing may keep skipping frames without catching up before it resets its
# schedule instead (see _Pacer).
_MAX_CATCH_UP_S = 1.0


class SourceError(InvalidInput):
    """A video source cannot be opened or read: no such file, no video stream, undecodable
    data, an unsupported URL scheme, or a network source or camera that is unreachable or
    dropped. ``field`` is ``"source"``. URLs in the message have their password masked.
    """

    code = "source_error"

    def __init__(self, message: str, *, field: str | None = "source") -> None:
        super().__init__(message, field=field)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What a source string names, before anything is opened.

    ``url`` is what FFmpeg is given (``/dev/video0`` for a bare ``0``), ``format`` forces a
    demuxer (``v4l2`` for cameras), ``options`` are FFmpeg demuxer options, and ``label`` is
    the source with any password masked, for logs and messages.
    """

    uri: str
    kind: SourceKind
    url: str
    format: str | None
    options: Mapping[str, str]
    label: str


_ONE_THREAD_MAX_PIXELS = 1920 * 1080


def _redact(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def parse_source(uri: str, *, options: Mapping[str, str] | None = None) -> SourceSpec:
    """Classify ``uri`` as a file, a network stream or a camera; nothing is opened.

    - ``rtsp://``, ``rtsps://``, ``rtmp://``, ``rtmps://``, ``http://``, ``https://``: a
      network stream. RTSP asks for TCP first (``rtsp_flags=prefer_tcp``), so a lossy link
      does not smear frames, and still falls back to UDP.
    - a bare integer ``N``: the camera ``/dev/videoN``; any path under ``/dev/``: a camera.
      Both are read with FFmpeg's ``v4l2`` input (Linux).
    - ``file://PATH`` or anything else: a file path.

    ``options`` go to FFmpeg's demuxer and override the defaults above (for example
    ``{"rtsp_transport": "udp"}`` or, for a camera, ``{"video_size": "1280x720"}``).
    Raises :class:`SourceError` for an empty string or an unsupported URL scheme.
    """
    text = uri.strip()
    extra = dict(options or {})
    if not text:
        raise SourceError("expected a video file path, a stream URL or a camera, got ''")
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme == "file":
            path = urlsplit(text).path
            return SourceSpec(uri, "file", path, None, extra, path)
        if scheme not in NETWORK_SCHEMES:
            supported = ", ".join(f"{s}://" for s in sorted(NETWORK_SCHEMES))
            raise SourceError(
                f"source {_redact(text)!r}: unsupported URL scheme {scheme!r}; expected a "
                f"file path, a camera (0, /dev/video0) or one of {supported}"
            )
        defaults = {"rtsp_flags": "prefer_tcp"} if scheme in {"rtsp", "rtsps"} else {}
        return SourceSpec(uri, "network", text, None, defaults | extra, _redact(text))
    if _DEVICE_NUMBER.fullmatch(text):
        device = f"/dev/video{int(text)}"
        return SourceSpec(uri, "device", device, "v4l2", extra, device)
    if text.startswith("/dev/"):
        return SourceSpec(uri, "device", text, "v4l2", extra, text)
    return SourceSpec(uri, "file", text, None, extra, text)


def _ffmpeg_reason(exc: BaseException) -> str:
    # FFmpeg errors repeat the URL, password included; the strerror part alone says why.
    reason = getattr(exc, "strerror", None)
    return str(reason) if reason else type(exc).__name__


def _fps_of(stream: VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _start_of(stream: VideoStream) -> float | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


class OpenedSource:
    """An open video: its container, its video stream and its first frame already decoded.

    Made by :func:`open_source`; close it (or use it as a context manager) when done.
    ``width`` and ``height`` are the first frame's, ``fps`` the stream's average rate (or
    FFmpeg's guess; ``None`` if neither is known), ``duration_s`` and ``frame_count`` come
    from the container and are ``None`` when unknown (live streams). ``live`` is true for
    cameras and for network streams of unknown duration: their end means a drop, not the end
    of the video.
    """

    def __init__(
        self,
        spec: SourceSpec,
        container: av.container.InputContainer,
        stream: VideoStream,
    ) -> None:
        self.spec = spec
        self.container = container
        self.stream = stream
        self.fps = _fps_of(stream)
        self.start_s = _start_of(stream)
        duration = container.duration
        self.duration_s: float | None = duration / 1_000_000 if duration else None
        self.frame_count: int | None = stream.frames or None
        self.live = spec.kind == "device" or (spec.kind == "network" and self.duration_s is None)
        self._frames = self._decode()
        self._first: VideoFrame | None = self._first_frame()
        self.width = self._first.width
        self.height = self._first.height

    def __enter__(self) -> OpenedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"OpenedSource({self.spec.label!r}, {self.width}x{self.height}, "
            f"{self.fps} fps, {self.duration_s} s)"
        )

    @property
    def interval(self) -> float:
        """Seconds between frames at the stream's rate (25 fps when the rate is unknown)."""
        return 1.0 / (self.fps or _FALLBACK_FPS)

    def _decode(self) -> Generator[VideoFrame, None, None]:
        bad = 0
        for packet in self.container.demux(self.stream):
            try:
                decoded = packet.decode()
            except av.InvalidDataError as exc:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
                    raise SourceError(
                        f"source {self.spec.label!r}: {bad} packets in a row could not be "
                        f"decoded ({_ffmpeg_reason(exc)})"
                    ) from None
                continue
            for frame in decoded:
                bad = 0
                yield frame

    def _first_frame(self) -> VideoFrame:
        try:
            return next(self._frames)
        except StopIteration:
            raise SourceError(
                f"source {self.spec.label!r}: the {self.stream.codec_context.name} video "
                "stream holds no decodable frame"
            ) from None
        except av.FFmpegError as exc:
            raise SourceError(
                f"source {self.spec.label!r}: cannot decode its video: {_ffmpeg_reason(exc)}"
            ) from None

    def frames(self) -> Iterator[VideoFrame]:
        """The decoded frames in presentation order, the first one included.

        Raises :class:`SourceError` when the decoder rejects too many packets in a row, and
        PyAV's ``av.FFmpegError`` (an ``OSError`` or ``ValueError``) when reading fails.
        """
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._frames

    def seek(self, time_s: float) -> None:
        """Move to the keyframe at or before ``time_s`` on the video's clock (0 = start).

        The next :meth:`frames` starts at that keyframe, so frames from before ``time_s`` may
        come first; the caller skips what it does not want. Raises :class:`SourceError` when
        the source cannot seek (a live stream, a pipe).
        """
        self._frames.close()
        self._first = None
        try:
            time_base = self.stream.time_base
            if time_base is None:
                raise SourceError(
                    f"source {self.spec.label!r}: cannot seek, its video stream has no time base"
                )
            origin = self.stream.start_time or 0
            target = origin + math.floor(Fraction(time_s) / Fraction(time_base))
            # seek() also flushes the decoder, so nothing from the old position leaks out.
            self.container.seek(target, stream=self.stream)
        except av.FFmpegError as exc:
            raise SourceError(
                f"source {self.spec.label!r}: cannot seek to {time_s:g} s: {_ffmpeg_reason(exc)}"
            ) from None
        finally:
            self._frames = self._decode()

    def rewind(self) -> None:
        """Go back to the first frame; the next :meth:`frames` starts there.

        Raises :class:`SourceError` when the source cannot seek.
        """
        self.seek(0.0)

    def close(self) -> None:
        """Release the container and its decoder; safe to call twice."""
        self._frames.close()
        self._first = None
        self.container.close()


def open_source(
    uri: str,
    *,
    options: Mapping[str, str] | None = None,
    timeout: float | None = 10.0,
) -> OpenedSource:
    """Open ``uri`` (see :func:`parse_source`) and decode its first frame.

    ``timeout`` bounds, in seconds, connecting to a network stream or camera and each read
    from it afterwards; files are not bounded. Decoding uses FFmpeg's own threads
    (``thread_type="AUTO"``).

    Raises :class:`SourceError` for: no such file; a path that is a directory; data FFmpeg
    cannot read as a media file; a file with no video stream (naming the streams it has);
    video that cannot be decoded or holds no frame; a network stream or camera that cannot
    be reached in time or refuses the connection.
    """
    spec = parse_source(uri, options=options)
    label = spec.label
    if spec.kind == "file":
        path = Path(spec.url)
        if not path.exists():
            raise SourceError(f"source {label!r}: no such file")
        if path.is_dir():
            raise SourceError(f"source {label!r}: is a directory, expected a video file")
    try:
        container = av.open(
            spec.url,
            "r",
            format=spec.format,
            options=dict(spec.options),
            timeout=None if spec.kind == "file" else timeout,
        )
    except av.FFmpegError as exc:
        reason = _ffmpeg_reason(exc)
        if spec.kind == "file":
            raise SourceError(
                f"source {label!r}: not a video file FFmpeg can read ({reason})"
            ) from None
        what = "camera" if spec.kind == "device" else "stream"
        raise SourceError(f"source {label!r}: cannot open the {what}: {reason}") from None
    try:
        if not container.streams.video:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
            raise SourceError(
                f"source {label!r}: has no video stream (streams found: {', '.join(kinds)})"
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        # Up to 1080p one decoder thread keeps well ahead of any frame rate a pipeline runs
        # at, and extra threads only take cores from the detector (measured on 2 cores: the
        # people counter ran 5-10% faster end to end); bigger pictures get FFmpeg's choice.
        small = 0 < (ctx.width or 0) * (ctx.height or 0) <= _ONE_THREAD_MAX_PIXELS
        ctx.thread_count = 1 if small else 0
        return OpenedSource(spec, container, stream)
    except BaseException:
        container.close()
        raise


class Backoff:
    """Delays between reconnection attempts: ``base``, doubling up to ``cap``.

    :meth:`reset` after a success, so the next drop is retried quickly again.
    """

    __slots__ = ("_next", "base", "cap")

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"backoff base must be a positive number of seconds, got {base!r}")
        if not (math.isfinite(cap) and cap >= base):
            raise ValueError(f"backoff cap must be at least the base ({base}), got {cap!r}")
        self.base = base
        self.cap = cap
        self._next = base

    def next_delay(self) -> float:
        """The delay before the coming attempt; each call doubles the following one."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.base


class _Timeline:
    """Source timestamps made into seconds that only go forward.

    A rewound file, a reconnected stream or a camera whose clock jumps back starts a new run
    of timestamps; each run is placed one frame interval after the last frame delivered, so
    consumers (trackers, rate limits, the ``latest`` policy) never see time go backwards.
    """

    __slots__ = ("_last", "_offset", "_segment_start")

    def __init__(self) -> None:
        self._last: float | None = None
        self._offset = 0.0
        self._segment_start: float | None = None

    def new_segment(self, start_s: float | None) -> None:
        """The next frame begins a new run whose clock starts at ``start_s`` (None: at it)."""
        self._segment_start = start_s
        self._offset = math.nan

    def stamp(self, raw: float | None, interval: float) -> float:
        last = self._last
        if math.isnan(self._offset):
            origin = self._segment_start if self._segment_start is not None else raw
            head = 0.0 if last is None else last + interval
            self._offset = head - (origin if origin is not None else 0.0)
        if raw is None:
            t = 0.0 if last is None else last + interval
        else:
            t = raw + self._offset
            if last is not None and t <= last:
                self._offset += last + interval - t
                t = last + interval
        t = max(t, 0.0)
        self._last = t
        return t


class _Pacer:
    """Holds frames back to their due time on a monotonic clock, and skips late ones.

    A frame more than one interval late is skipped (the next one is already due), which
    brings a slow consumer back onto the source's clock instead of letting it drift. When
    skipping does not catch up (decoding itself is slower than real time, or a live source's
    delay grew), the schedule restarts from the current frame rather than dropping forever.
    """

    __slots__ = ("_origin", "_run", "_stop")

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._origin: tuple[float, float] | None = None  # (monotonic time, pts) of the schedule
        self._run: tuple[float, float] | None = None  # (monotonic time, lateness) a skip began

    def reset(self) -> None:
        self._origin = None
        self._run = None

    def admit(self, pts: float, interval: float) -> bool:
        """Wait until ``pts`` is due; False if the frame should be skipped instead."""
        now = time.monotonic()
        if self._origin is None:
            self._origin = (now, pts)
            return True
        late = now - (self._origin[0] + pts - self._origin[1])
        if late < 0:
            self._stop.wait(-late)
            self._run = None
            return True
        if late < interval:
            self._run = None
            return True
        if self._run is None:
            self._run = (now, late)
            return False
        started, late_then = self._run
        if late - late_then < interval and now - started < _MAX_CATCH_UP_S:
            return False
        self._origin = (now, pts)
        self._run = None
        return True


def _fit(width: int, height: int, bound: tuple[int, int] | None) -> tuple[int, int]:
    if bound is None:
        return width, height
    scale = min(bound[0] / width, bound[1] / height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_size(name: str, size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if len(size) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size
    ):
        raise ValueError(f"{name} must be (width, height) in positive integers, got {size!r}")
    return int(size[0]), int(size[1])


class VideoSource:
    """A video file, network stream or camera read in its own daemon thread.

    Each decoded frame goes to ``on_frame(image, pts_s, index)`` in the reader thread, as a
    new BGR array: ``pts_s`` is the frame's time in seconds on the source's clock, always
    increasing (also across loops and reconnects); ``index`` counts the frames read from the
    source, so skipped frames show as gaps. The reader waits for ``on_frame`` to return
    before decoding the next frame and holds no queue: a consumer wanting only the newest
    frame keeps the last one it was given.

    - ``realtime``: hold each frame until its time comes, at the source's rate; frames that
      are already late are skipped (counted in :attr:`frames_dropped`) so a slow consumer
      stays on the source's clock instead of drifting. ``None`` means on for files and
      network videos of known length, off for cameras and live streams (they come at their
      own pace). Off for a file: as fast as ``on_frame`` returns.
    - ``loop``: start a file over when it ends; ``pts_s`` keeps counting up.
    - ``reconnect``: when a network stream or camera cannot be opened, fails, or ends,
      try again after ``backoff_base`` seconds, doubling to ``backoff_cap``; the delay goes
      back to ``backoff_base`` once a frame is decoded. Each attempt is logged. Files never
      reconnect: their errors are final.
    - ``max_size``: (width, height) bound; larger frames are scaled down, keeping their
      aspect ratio. Smaller frames are left as they are.
    - ``on_end(error)``: called once from the reader thread when it finishes, with ``None``
      for a clean end (the file ended, or :meth:`stop`) or the error that ended it.
    - ``options`` and ``timeout``: as for :func:`open_source`.

    An exception from ``on_frame`` stops the source; it is logged and kept in
    :attr:`last_error`.
    """

    def __init__(
        self,
        uri: str,
        on_frame: FrameCallback,
        *,
        realtime: bool | None = None,
        loop: bool = False,
        reconnect: bool = True,
        max_size: tuple[int, int] | None = None,
        on_end: Callable[[BaseException | None], None] | None = None,
        options: Mapping[str, str] | None = None,
        timeout: float | None = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.spec = parse_source(uri, options=options)
        self._on_frame = on_frame
        self._on_end = on_end
        self._realtime = realtime
        self.loop = loop
        self.reconnect = reconnect
        self.max_size = _check_size("max_size", max_size)
        self._timeout = timeout
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._fps: float | None = None
        self._width: int | None = None
        self._height: int | None = None
        self._live: bool | None = None
        self._connected = False
        self._frames_read = 0
        self._frames_delivered = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._last_error: BaseException | None = None
        self._failed = False
        self._opened: OpenedSource | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"VideoSource({self.spec.label!r}, {state}, {self._frames_read} frames read)"

    @property
    def name(self) -> str:
        """The source as given, with any password masked."""
        return self.spec.label

    @property
    def fps(self) -> float | None:
        """The stream's average frame rate, once opened; ``None`` before or if unknown."""
        return self._fps

    @property
    def width(self) -> int | None:
        """Width of the frames delivered (after ``max_size``); ``None`` before the first."""
        return self._width

    @property
    def height(self) -> int | None:
        """Height of the frames delivered (after ``max_size``); ``None`` before the first."""
        return self._height

    @property
    def realtime(self) -> bool | None:
        """Whether frames are paced; ``None`` until the source is opened and the default is
        resolved."""
        if self._realtime is not None:
            return self._realtime
        return None if self._live is None else not self._live

    @property
    def live(self) -> bool | None:
        """True for cameras and live streams, False for files; ``None`` until opened."""
        return self._live

    @property
    def frames_read(self) -> int:
        """Frames decoded from the source so far."""
        return self._frames_read

    @property
    def frames_delivered(self) -> int:
        """Frames handed to ``on_frame`` so far."""
        return self._frames_delivered

    @property
    def frames_dropped(self) -> int:
        """Frames decoded but skipped by realtime pacing because they were already late."""
        return self._frames_dropped

    @property
    def reconnects(self) -> int:
        """Reconnection attempts scheduled so far (each one logged)."""
        return self._reconnects

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the reader thread has finished."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while the source is open (false while waiting to reconnect)."""
        return self._connected

    @property
    def last_error(self) -> BaseException | None:
        """The most recent failure, kept after a successful reconnect; ``None`` if none."""
        return self._last_error

    def start(self) -> None:
        """Start reading. A file is opened here, so its errors are raised to the caller.

        Network streams and cameras are opened in the reader thread (connecting may take a
        while, and may be retried); their failures go to :attr:`last_error`, the log and
        ``on_end``. Raises :class:`SourceError` for a file that cannot be used and
        ``RuntimeError`` if the source was already started.
        """
        with self._start_lock:
            if self._thread is not None or self._stop.is_set():
                raise RuntimeError(f"video source {self.name!r} was already started or stopped")
            if self.spec.kind == "file":
                self._opened = self._open()
            self._thread = threading.Thread(
                target=self._run, name=f"video:{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop reading and wait up to ``timeout`` seconds for the thread to end.

        Returns whether it ended. Safe to call more than once, before :meth:`start`, and
        from ``on_frame`` itself (then it does not wait). A pacing sleep or a reconnection
        delay is cut short at once; a network read in progress can take up to the source's
        ``timeout`` to give up.
        """
        self._stop.set()
        with self._start_lock:  # a start() in progress has made its thread by then
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the reader to finish by itself (a file that ended); True if it did."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _open(self) -> OpenedSource:
        opened = open_source(self.spec.uri, options=self.spec.options, timeout=self._timeout)
        self._fps = opened.fps
        self._live = opened.live
        return opened

    def _run(self) -> None:
        timeline = _Timeline()
        pacer = _Pacer(self._stop)
        try:
            while not self._stop.is_set():
                try:
                    if self._opened is None:
                        self._opened = self._open()
                        if self._reconnects:
                            logger.info("video source %s: connected again", self.name)
                    self._connected = True
                    pacer.reset()
                    self._read(timeline, pacer)
                    return
                except (SourceError, av.FFmpegError, OSError) as exc:
                    error = (
                        exc
                        if isinstance(exc, SourceError)
                        else SourceError(f"source {self.name!r}: {_ffmpeg_reason(exc)}")
                    )
                    if not self._retry(error):
                        return
                finally:
                    self._connected = False
                    if self._opened is not None:
                        self._opened.close()
                        self._opened = None
        except Exception as exc:
            self._fail(exc)
            logger.exception("video source %s: reader failed", self.name)
        finally:
            if self._on_end is not None:
                try:
                    self._on_end(self._last_error if self._failed else None)
                except Exception:
                    logger.exception("video source %s: on_end raised", self.name)

    def _fail(self, error: BaseException) -> None:
        self._last_error = error
        self._failed = True

    def _retry(self, error: SourceError) -> bool:
        """Record ``error``; wait out the backoff if this source reconnects. False: give up."""
        self._last_error = error
        if self.spec.kind == "file" or not self.reconnect:
            self._fail(error)
            logger.error("%s", error.message)
            return False
        delay = self._backoff.next_delay()
        self._reconnects += 1
        logger.warning("%s; reconnecting in %.2f s", error.message, delay)
        return not self._stop.wait(delay)

    def _read(self, timeline: _Timeline, pacer: _Pacer) -> None:
        """Deliver frames from ``self._opened`` until it is over for good or stopped.

        Raises :class:`SourceError` (or PyAV's errors) when reading fails, and when a live
        source ends, since for a camera or a stream the end is a drop to reconnect after.
        """
        opened = self._opened
        assert opened is not None
        realtime = self._realtime if self._realtime is not None else not opened.live
        interval = opened.interval
        timeline.new_segment(None if opened.live else opened.start_s)
        sizes = ((0, 0), (0, 0))  # (decoded size, delivered size) of the last frame
        while True:
            read_before = self._frames_read
            for frame in opened.frames():
                if self._stop.is_set():
                    return
                self._backoff.reset()
                index = self._frames_read
                self._frames_read += 1
                pts = timeline.stamp(frame.time, interval)
                if realtime and not pacer.admit(pts, interval):
                    self._frames_dropped += 1
                    continue
                if self._stop.is_set():
                    return
                if sizes[0] != (frame.width, frame.height):
                    size = (frame.width, frame.height)
                    sizes = (size, _fit(*size, self.max_size))
                self._width, self._height = sizes[1]
                if not self._deliver(to_bgr(frame, *sizes[1]), pts, index):
                    return
            if self._stop.is_set():
                return
            if opened.live:
                raise SourceError(f"source {self.name!r}: the stream ended")
            if not self.loop:
                return
            if self._frames_read == read_before:
                raise SourceError(f"source {self.name!r}: no frames to loop over")
            try:
                opened.rewind()
            except SourceError:
                # Some inputs cannot seek (a file on a pipe, HTTP without ranges): reopen.
                opened.close()
                self._opened = None
                self._opened = opened = self._open()
            timeline.new_segment(opened.start_s)

    def _deliver(self, image: Image, pts: float, index: int) -> bool:
        try:
            self._on_frame(image, pts, index)
        except Exception as exc:
            self._fail(exc)
            logger.exception("video source %s: on_frame raised; stopping", self.name)
            self._stop.set()
            return False
        self._frames_delivered += 1
        return True


def read_frames(
    uri: str,
    *,
    fps: float | None = None,
    seek_s: float = 0.0,
    size: tuple[int, int] | None = None,
    realtime: bool = False,
    options: Mapping[str, str] | None = None,
    timeout: float | None = 10.0,
) -> Iterator[tuple[Image, float, int]]:
    """Frames of ``uri`` as ``(image, pts_s, index)``, read synchronously.

    - ``fps``: sample this many frames per second of video (``2.5`` allowed): for each
      instant ``seek_s + k / fps`` the frame on screen at that instant is taken, and a frame
      is never given twice (a rate above the source's gives every frame). ``None``: every
      frame.
    - ``seek_s``: start at this time; the first frame is the one on screen then.
    - ``size``: (width, height) to scale every frame to, exactly (aspect not kept).
    - ``realtime``: yield each sample no earlier than its time on the video clock, measured
      from the first one; a slow consumer delays the rest, nothing is skipped.

    ``pts_s`` is the frame's own time on the video clock (0 at the start of the video);
    ``index`` its number in the video, counted from the start, or worked out from its time
    and the average rate after a seek. Errors in opening are raised by this call, before
    the first frame is asked for. The container is closed when the generator is exhausted
    or closed (or, if it is never started, when it is garbage-collected).

    Raises :class:`SourceError` as :func:`open_source` does, and when ``seek_s`` is past the
    end of a video of known length; ``ValueError`` for a non-positive ``fps``, a negative
    ``seek_s`` or a bad ``size``.
    """
    step: Fraction | None = None
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        step = 1 / Fraction(fps).limit_denominator(1_000_000)
    if not (math.isfinite(seek_s) and seek_s >= 0):
        raise ValueError(f"seek_s must be a non-negative number of seconds, got {seek_s!r}")
    out_size = _check_size("size", size)
    start = Fraction(seek_s).limit_denominator(1_000_000)
    opened = open_source(uri, options=options, timeout=timeout)
    if opened.duration_s is not None and start >= Fraction(opened.duration_s):
        opened.close()
        raise SourceError(
            f"source {opened.spec.label!r}: cannot start at {float(start):g} s, the video is "
            f"{opened.duration_s:g} s long"
        )
    return _sample(opened, step, start, out_size, realtime)


def _frame_time(frame: VideoFrame) -> Fraction | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return frame.pts * Fraction(frame.time_base)


def _sample(
    opened: OpenedSource,
    step: Fraction | None,
    start: Fraction,
    size: tuple[int, int] | None,
    realtime: bool,
) -> Iterator[tuple[Image, float, int]]:
    with opened:
        fps = Fraction(opened.fps or _FALLBACK_FPS).limit_denominator(1_000_000)
        interval = 1 / fps
        origin, time_base = opened.stream.start_time, opened.stream.time_base
        base = origin * Fraction(time_base) if origin is not None and time_base else None
        seeked = start > 0
        if seeked:
            # Not seekable (a pipe, a live stream): decode from here and skip up to ``start``.
            with contextlib.suppress(SourceError):
                opened.seek(float(start))

        clock: tuple[float, float] | None = None

        def emit(frame: VideoFrame, t: Fraction, count: int) -> tuple[Image, float, int]:
            nonlocal clock
            if realtime:
                now = time.monotonic()
                if clock is None:
                    clock = (now, float(t))
                else:
                    delay = clock[0] + float(t) - clock[1] - now
                    if delay > 0:
                        time.sleep(delay)
            w, h = size or (frame.width, frame.height)
            index = round(t * fps) if seeked else count
            return to_bgr(frame, w, h), float(t), index

        target = start
        held: tuple[VideoFrame, Fraction, int] | None = None
        last_t: Fraction | None = None
        for count, frame in enumerate(opened.frames()):
            raw = _frame_time(frame)
            if base is None:
                base = raw if raw is not None else Fraction(0)
            t = (
                (last_t + interval if last_t is not None else Fraction(0))
                if raw is None
                else raw - base
            )
            last_t = t
            if t <= target:
                held = (frame, t, count)  # on screen at ``target``, unless a later one is
                continue
            if held is not None:
                yield emit(*held)
                target = _next_target(target, step, t)
                held = (frame, t, count)
                continue
            # No frame is on screen at ``target`` (the video starts later): the first one after
            # it stands in, and the instants it covers are passed over.
            yield emit(frame, t, count)
            target = _next_target(target, step, t, inclusive=True)
        if held is not None:
            frame, t, count = held
            if step is None or target < t + interval:
                yield emit(frame, t, count)


def _next_target(
    target: Fraction, step: Fraction | None, t: Fraction, *, inclusive: bool = False
) -> Fraction:
    """The next sampling instant once the frame before the one at time ``t`` was given.

    That frame stays on screen until ``t``, so instants before ``t`` would pick it again and
    are passed over; ``inclusive`` passes over ``t`` too (the frame at ``t`` was given).
    """
    if step is None:
        return t
    while target < t or (inclusive and target == t):
        target += step
    return target


def demo_clip() -> Path:
    """The sample clip shipped in the package, for ``framebroker demo`` (20 s, 640x480).

    Raises :class:`SourceError` if the installation lacks it (package data left out, or an
    install from a zip archive, which has no file path to hand to FFmpeg).
    """
    resource = importlib.resources.files("framebroker.data") / "demo.mp4"
    if isinstance(resource, Path) and resource.is_file():
        return resource
    raise SourceError(
        "the demo clip framebroker/data/demo.mp4 is not installed as a file; reinstall "
        "framebroker with its package data"
    )
