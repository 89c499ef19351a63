"""Opening a video source and seeking in it, with PyAV.

:func:`open_source` opens a source (see :func:`~.sources.parse_source`) and decodes its first
frame, so a missing file, a file with no video, or one that cannot be decoded is refused at
once with a :class:`~.sources.SourceError` that says which, instead of surfacing later as an
empty stream. The :class:`OpenedSource` it returns gives the decoded frames, seeks and
rewinds; the reader thread (:mod:`.reader`) and frame sampling (:mod:`.sampling`) both read
through it.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av
import av.container
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from .sources import SourceError, SourceSpec, parse_source

__all__ = ["FALLBACK_FPS", "OpenedSource", "ffmpeg_reason", "open_source"]

FALLBACK_FPS = 25.0
"""Used only where a stream declares no frame rate and a frame carries no timestamp."""

# Consecutive packets the decoder may reject before the source counts as broken. A camera on
# a lossy link produces a few undecodable packets now and then; a file of garbage, all of them.
_MAX_BAD_PACKETS = 100
_ONE_THREAD_MAX_PIXELS = 1920 * 1080


def ffmpeg_reason(exc: BaseException) -> str:
    """Why FFmpeg failed: its errors repeat the URL, password included; the strerror part
    alone says why."""
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
        return 1.0 / (self.fps or FALLBACK_FPS)

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
                        f"decoded ({ffmpeg_reason(exc)})"
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
                f"source {self.spec.label!r}: cannot decode its video: {ffmpeg_reason(exc)}"
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
                f"source {self.spec.label!r}: cannot seek to {time_s:g} s: {ffmpeg_reason(exc)}"
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
        reason = ffmpeg_reason(exc)
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
