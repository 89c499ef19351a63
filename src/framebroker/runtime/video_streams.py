"""Video analysis streams: frames in, one reply per frame, each window's merged answers out.

A :class:`VideoStream` is one connected client's session. Its frames are parsed, decoded and
added to the open window in the worker pool, one at a time and in arrival order; a window
that closes is analysed in a task of its own (:class:`~.fanout.Fanout`) while frames keep
coming, and its answers are emitted as ``result``. Every bound is explicit:

- at most ``max_inflight`` frames of a client are being handled at once; one more is refused
  at once with :class:`~framebroker.errors.CapacityExceeded` (the transport turns that into
  an ``error`` event), so a client that floods gets errors, not a queue that grows;
- with a ``rate`` (``limits.max_fps_per_session``), a frame arriving faster is refused with
  :class:`~framebroker.errors.FrameRateExceeded`; the stream goes on;
- the open window holds at most ``max_window_bytes``;
- at most ``max_windows_in_flight`` windows of a stream are analysed at once; a window that
  closes while that many are still out is dropped and the client is told (``error`` event
  with code ``capacity_exceeded`` and the window's index);
- a timed window (``window_seconds``) closes on a timer even if no frame follows.

When the client goes, :meth:`VideoStream.close` drops the open window (nobody is left to
receive its answers), cancels its analyses and ends its in-process pipeline sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..core.frame import ImageSource
from ..core.rate import FrameRate
from ..errors import CapacityExceeded, FramebrokerError, FrameRateExceeded, SessionNotFound
from ..media.encode import EncoderOptions
from .fanout import Fanout, Video
from .video_windows import ClosedBy, ClosedWindow, WindowWriter

__all__ = ["Emit", "StreamConfig", "VideoStream", "VideoStreams"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Image = NDArray[np.uint8]
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
"""``emit(event, payload)``: send an event to the stream's client."""
RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class StreamConfig:
    window_frames: int = 30
    window_seconds: float = 0.0
    max_window_bytes: int = 64 * 1024 * 1024
    max_inflight: int = 8
    max_windows_in_flight: int = 2
    emit_result: bool = True
    encoder: EncoderOptions = field(default_factory=EncoderOptions)

    def __post_init__(self) -> None:
        for name in ("window_frames", "max_window_bytes", "max_inflight", "max_windows_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.window_seconds < 0:
            raise ValueError(f"window_seconds must be >= 0, got {self.window_seconds}")


def _pixel_reply(image: Image) -> dict[str, Any]:
    b, g, r = (int(v) for v in image[0, 0])
    return {"first_pixel": [r, g, b], "size": [int(image.shape[1]), int(image.shape[0])]}


class VideoStream:
    """One client's video analysis session; see the module docstring."""

    def __init__(
        self,
        session_id: str,
        *,
        fanout: Fanout,
        names: Collection[str],
        config: StreamConfig,
        emit: Emit,
        run_blocking: RunBlocking,
        client: str | None = None,
        rate: FrameRate | None = None,
    ) -> None:
        self.id = session_id
        self.client = client
        self.rate = rate
        self.fanout = fanout
        self.names = list(names)
        self.config = config
        self._emit = emit
        self._run_blocking = run_blocking
        self._writer = WindowWriter(
            config.window_frames,
            max_bytes=config.max_window_bytes,
            options=config.encoder,
            keep_frames=fanout.has_pipelines and any(n not in fanout.http.services for n in names),
        )
        self._lock = asyncio.Lock()
        self._inflight = 0
        self._analyses: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_window: int | None = None
        self.closed = False
        self.frames_refused = 0
        self.windows_dropped = 0
        self.windows_done = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def analyses(self) -> int:
        return len(self._analyses)

    @property
    def frames_accepted(self) -> int:
        return self._writer.frames_added

    async def add(self, parse: Callable[[], ImageSource]) -> dict[str, Any]:
        """Take one frame: ``parse`` (run in the pool) turns the client's payload into an
        image, which is decoded and appended to the open window.

        Returns ``{"frame", "window", "first_pixel": [r, g, b], "size": [w, h]}``. Raises
        :class:`CapacityExceeded` when ``max_inflight`` frames are already being handled,
        :class:`~framebroker.errors.FrameRateExceeded` for a frame over the stream's rate,
        :class:`SessionNotFound` once closed, and whatever ``parse`` or decoding raises for a
        bad image (the window is then unchanged).
        """
        if self.closed:
            raise SessionNotFound(self.id, field="session_id")
        if self.rate is not None:
            try:
                self.rate.admit(time.time(), self.id)
            except FrameRateExceeded:
                self.frames_refused += 1
                raise
        if self._inflight >= self.config.max_inflight:
            self.frames_refused += 1
            raise CapacityExceeded(
                f"{self._inflight} frames of this session are already being handled (the "
                f"limit is {self.config.max_inflight}); wait for replies before sending more"
            )
        self._inflight += 1
        try:
            async with self._lock:
                if self.closed:
                    raise SessionNotFound(self.id, field="session_id")
                frame, window, reply, closed = await self._run_blocking(self._ingest, parse)
                for done in closed:
                    self._dispatch(done)
                self._arm_timer()
        finally:
            self._inflight -= 1
        return {"frame": frame, "window": window, **reply}

    def _ingest(
        self, parse: Callable[[], ImageSource]
    ) -> tuple[int, int, dict[str, Any], list[ClosedWindow]]:
        image = parse().decode()
        frame = self._writer.frames_added
        window, closed = self._writer.add(image, time.time())
        return frame, window, _pixel_reply(image), closed

    # -- timed windows ----------------------------------------------------------------------

    def _arm_timer(self) -> None:
        if self.config.window_seconds <= 0:
            return
        index = self._writer.open_index
        if index == self._timer_window:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_window = index
        opened = self._writer.open_since
        if index is None or opened is None:
            return
        delay = max(0.0, opened + self.config.window_seconds - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer, index)

    def _on_timer(self, index: int) -> None:
        self._timer = None
        self._spawn(self._close_by_time(index))

    async def _close_by_time(self, index: int) -> None:
        async with self._lock:
            if self.closed or self._writer.open_index != index:
                return
            done = await self._run_blocking(self._writer.close, "seconds", time.time())
            self._timer_window = None
            if done is not None:
                self._dispatch(done)

    # -- analysis ---------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, window: ClosedWindow) -> None:
        if len(self._analyses) >= self.config.max_windows_in_flight:
            self.windows_dropped += 1
            error = CapacityExceeded(
                f"window {window.index} ({window.count} frames) dropped: "
                f"{len(self._analyses)} windows of this session are still being analysed"
            )
            log.warning("session %s: %s", self.id, error.message)
            self._spawn(self._send("error", {**error.to_dict(), "window": window.index}))
            return
        task = asyncio.create_task(self._analyse(window), name=f"window-{self.id}-{window.index}")
        self._analyses.add(task)
        task.add_done_callback(self._analyses.discard)

    async def _analyse(self, window: ClosedWindow) -> None:
        started = time.perf_counter()
        video = Video(data=window.video, filename=f"{self.id}-{window.index}.mp4")
        meta = {"session_id": self.id, "window": window.index}
        try:
            answers = await self.fanout.window(self.id, video, window.frames, self.names, meta=meta)
        except Exception as exc:  # Fanout reports per name; this is a bug, say so and go on
            log.exception("session %s: window %d could not be analysed", self.id, window.index)
            await self._send(
                "error",
                {
                    "error": f"window {window.index}: {exc}",
                    "code": "internal",
                    "window": window.index,
                },
            )
            return
        self.windows_done += 1
        if not self.config.emit_result:
            return
        await self._send(
            "result",
            {
                "session_id": self.id,
                "window": window.index,
                "frames": window.count,
                "first_frame": window.first_frame,
                "size": list(window.size),
                "closed_by": window.closed_by,
                "video_bytes": len(window.video),
                "seconds": round(time.perf_counter() - started, 4),
                "result": answers,
            },
        )

    async def _send(self, event: str, payload: dict[str, Any]) -> None:
        try:
            await self._emit(event, payload)
        except Exception:  # a client that went away must not break the stream's tasks
            log.debug("session %s: could not emit %s", self.id, event, exc_info=True)

    async def flush(self, closed_by: ClosedBy = "end") -> int | None:
        """Close the open window now and analyse it; returns its index (``None``: none open)."""
        async with self._lock:
            done: ClosedWindow | None = await self._run_blocking(
                self._writer.close, closed_by, time.time()
            )
            self._arm_timer()
            if done is None:
                return None
            self._dispatch(done)
            return done.index

    async def drain(self) -> None:
        """Wait until the windows being analysed now are answered."""
        while self._analyses:
            await asyncio.gather(*list(self._analyses), return_exceptions=True)

    async def close(self) -> None:
        """Drop the open window, cancel analyses and timers, end pipeline sessions."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = [*self._analyses, *self._tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        async with self._lock:  # a frame being added finishes first
            await self._run_blocking(self._writer.abandon)
        try:
            await self.fanout.end(self.id)
        except FramebrokerError:
            log.exception("session %s: pipelines did not end cleanly", self.id)


class VideoStreams:
    """The open streams by connection id, at most ``max_streams``."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._by_connection: dict[str, VideoStream] = {}

    def __len__(self) -> int:
        return len(self._by_connection)

    def get(self, connection: str) -> VideoStream | None:
        return self._by_connection.get(connection)

    def streams(self) -> list[VideoStream]:
        return list(self._by_connection.values())

    def check_room(self) -> None:
        if len(self._by_connection) >= self.max_streams:
            raise CapacityExceeded(
                f"the server holds {len(self._by_connection)} streams, "
                f"the limit is {self.max_streams}"
            )

    def add(self, connection: str, stream: VideoStream) -> None:
        self.check_room()
        self._by_connection[connection] = stream

    async def close(self, connection: str) -> VideoStream | None:
        stream = self._by_connection.pop(connection, None)
        if stream is not None:
            await stream.close()
        return stream

    async def close_all(self) -> None:
        for connection in list(self._by_connection):
            with contextlib.suppress(Exception):
                await self.close(connection)
