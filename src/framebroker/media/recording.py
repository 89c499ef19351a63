"""Write a live stream's decoded frames to an MP4 file at their own timestamps.

A WebRTC track delivers ``av.VideoFrame`` objects (YUV, 90 kHz timestamps) whose size may
change mid-stream as the sender adapts its bitrate. :class:`StreamRecorder` encodes them with
H.264 to a file, keeping each frame's presentation time so the recording plays at the pace it
was received; frames of another size are scaled to the first frame's. It is synchronous and
does CPU work: call it from a worker thread, one call at a time.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import av.container
from av.video.stream import VideoStream

from .convert import reformat

__all__ = ["StreamRecorder"]

log = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, 90_000)  # RTP's video clock
_DEFAULT_FPS = 30


class StreamRecorder:
    """An MP4 file being written from ``av.VideoFrame`` objects.

    The file is created on the first :meth:`write`; :meth:`close` flushes the encoder and
    finishes the file (a recorder closed before any frame leaves no file). A frame whose
    timestamp is not after the previous one's is skipped (counted in ``skipped``); a frame
    without a timestamp is placed one 30 fps interval after the previous one.
    """

    def __init__(self, path: Path, *, crf: int = 23, preset: str = "ultrafast") -> None:
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf!r}")
        self.path = Path(path)
        self.crf = crf
        self.preset = preset
        self.frames = 0
        self.skipped = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: VideoStream | None = None
        self._size = (0, 0)
        self._origin: int | None = None
        self._last_pts = -1
        self._closed = False

    @property
    def started(self) -> bool:
        return self._container is not None

    def _open(self, frame: av.VideoFrame) -> VideoStream:
        # H.264 in 4:2:0 needs even sides.
        width, height = frame.width - frame.width % 2, frame.height - frame.height % 2
        if width < 2 or height < 2:
            raise ValueError(f"cannot record a {frame.width}x{frame.height} frame")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), mode="w", format="mp4")
        try:
            stream = container.add_stream(
                "libx264",
                rate=_DEFAULT_FPS,
                options={"preset": self.preset, "crf": str(self.crf), "tune": "zerolatency"},
            )
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.time_base = _TIME_BASE
            stream.codec_context.time_base = _TIME_BASE
            stream.thread_count = 1
        except Exception:
            container.close()
            raise
        self._container, self._stream, self._size = container, stream, (width, height)
        return stream

    def _pts(self, frame: av.VideoFrame) -> int:
        if frame.pts is None or frame.time_base is None:
            return self._last_pts + _TIME_BASE.denominator // _DEFAULT_FPS
        ticks = round(frame.pts * frame.time_base / _TIME_BASE)
        if self._origin is None:
            self._origin = ticks
        return int(ticks - self._origin)

    def write(self, frame: av.VideoFrame) -> None:
        """Encode one frame; raises ``RuntimeError`` after :meth:`close`."""
        if self._closed:
            raise RuntimeError(f"recording {self.path} is closed")
        stream = self._stream if self._stream is not None else self._open(frame)
        container = self._container
        assert container is not None
        pts = self._pts(frame)
        if pts <= self._last_pts:
            self.skipped += 1
            return
        width, height = self._size
        out = reformat(frame, width=width, height=height, format="yuv420p")
        out.pts = pts
        out.time_base = _TIME_BASE
        for packet in stream.encode(out):
            container.mux(packet)
        self._last_pts = pts
        self.frames += 1

    def close(self) -> None:
        """Flush and finish the file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        container, stream = self._container, self._stream
        if container is None or stream is None:
            return
        try:
            for packet in stream.encode(None):
                container.mux(packet)
        finally:
            container.close()
        log.debug("recorded %d frames to %s", self.frames, self.path)
