"""Video analysis streams: frames in, one reply per frame, each window's merged answers out.

A :class:`VideoStream` is one connected client's session, a session like any other in the one
session directory: listed, counted against the client's share, swept when idle. Its frames are
parsed and decoded in the worker pool, one at a time and in arrival order, then queued in the
session, whose one processor (``video_window``, see :mod:`framebroker.processors.video_window`) adds
each to the open window; a window that closes is analysed in a task of its own
(:class:`~.fanout.Fanout`) while frames keep coming, and its answers are emitted as ``result``.
Every bound is explicit:

- at most ``max_inflight`` frames of a client are being handled at once; one more is refused
  at once with :class:`~framebroker.errors.CapacityExceeded` (the transport turns that into
  an ``error`` event), so a client that floods gets errors, not a queue that grows;
- the session's ``limits.max_fps_per_session`` refuses a frame arriving faster with
  :class:`~framebroker.errors.FrameRateExceeded`; the stream goes on;
- the open window holds at most ``max_window_bytes``;
- at most ``max_windows_in_flight`` windows of a stream are analysed at once; a window that
  closes while that many are still out is dropped and the client is told (``error`` event
  with code ``capacity_exceeded`` and the window's index);
- a timed window (``window_seconds``) closes on a timer even if no frame follows: the timer
  queues a frame that carries no image, only the order to close (see
  :data:`~framebroker.processors.video_window.CLOSE`).

When the client goes, :meth:`VideoStream.close` ends the session, which drops the open
window (nobody is left to receive its answers), cancels its analyses and ends its
in-process pipeline sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..core.frame import ImageSource, RawImage
from ..errors import CapacityExceeded, FramebrokerError, FrameRateExceeded, SessionNotFound
from ..media.encode import EncoderOptions
from ..media.video_windows import ClosedBy, ClosedWindow
from ..processors.video_window import CLOSE
from ..sessions import FrameIn, FrameOut, Sessions
from .fanout import Fanout, Video

__all__ = ["TRANSPORT", "Emit", "StreamConfig", "VideoStream", "VideoStreams"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Image = NDArray[np.uint8]
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
"""``emit(event, payload)``: send an event to the stream's client."""
RunBlocking = Callable[..., Awaitable[Any]]
TRANSPORT = "socketio"


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


class VideoStream:
    """One client's video analysis session; see the module docstring. Make it with
    :meth:`open`."""

    def __init__(
        self,
        session_id: str,
        *,
        sessions: Sessions,
        offload: RunBlocking,
        fanout: Fanout,
        names: Collection[str],
        config: StreamConfig,
        emit: Emit,
        client: str | None = None,
    ) -> None:
        self.id = session_id
        self.client = client
        self.sessions = sessions
        self.fanout = fanout
        self.names = list(names)
        self.config = config
        self._emit: Emit | None = emit
        self._held: deque[tuple[str, dict[str, Any]]] = deque(
            maxlen=max(1, config.max_windows_in_flight)
        )
        self._offload = offload
        self._lock = asyncio.Lock()
        self._inflight = 0
        self._analyses: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_window: int | None = None
        self.closed = False
        self.frames_accepted = 0
        self.frames_refused = 0
        self.windows_dropped = 0
        self.windows_done = 0

    @classmethod
    async def open(
        cls,
        session_id: str,
        *,
        sessions: Sessions,
        offload: RunBlocking,
        fanout: Fanout,
        names: Collection[str],
        config: StreamConfig,
        emit: Emit,
        client: str | None = None,
        transport: str = TRANSPORT,
        resume: bool = False,
    ) -> VideoStream:
        """Start the stream's session (``client`` holds it, within its share of sessions);
        raises what :meth:`~framebroker.sessions.Sessions.create` raises.

        With ``resume``, take over instead the session of a stream whose process died
        (:meth:`~framebroker.sessions.Sessions.attach` without ``create``: from its last
        snapshot, its window numbering carried on); raises ``SessionNotFound`` when there is
        nothing to resume from."""
        encoder = config.encoder
        keep_frames = fanout.has_pipelines and any(n not in fanout.http.services for n in names)
        window: dict[str, Any] = {
            "name": "video_window",
            "window_frames": config.window_frames,
            "max_bytes": config.max_window_bytes,
            "fps": encoder.fps,
            "preset": encoder.preset,
            "crf": encoder.crf,
            "keep_frames": keep_frames,
        }
        if resume:
            await sessions.attach(
                session_id, transport=transport, pipeline=[window], client=client, create=False
            )
        else:
            await sessions.create(
                session_id=session_id, transport=transport, pipeline=[window], client=client
            )
        return cls(
            session_id,
            sessions=sessions,
            offload=offload,
            fanout=fanout,
            names=names,
            config=config,
            emit=emit,
            client=client,
        )

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def analyses(self) -> int:
        return len(self._analyses)

    async def add(self, parse: Callable[[], ImageSource]) -> dict[str, Any]:
        """Take one frame: ``parse`` (run in the pool) turns the client's payload into an
        image, which is decoded there and then appended to the open window.

        Returns ``{"frame", "window", "first_pixel": [r, g, b], "size": [w, h]}``. Raises
        :class:`CapacityExceeded` when ``max_inflight`` frames are already being handled,
        :class:`~framebroker.errors.FrameRateExceeded` for a frame over the session's rate,
        :class:`SessionNotFound` once closed, and whatever ``parse`` or decoding raises for a
        bad image (the window is then unchanged).
        """
        if self.closed:
            raise SessionNotFound(self.id, field="session_id")
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
                image = await self._offload(_decoded, parse)
                try:
                    result = await self.sessions.submit(self.id, FrameIn(image=image))
                except FrameRateExceeded:
                    self.frames_refused += 1
                    raise
                out = self._windows(result)
                self.frames_accepted += 1
        finally:
            self._inflight -= 1
        return {
            "frame": out["frame"],
            "window": out["window"],
            "first_pixel": out["first_pixel"],
            "size": out["size"],
        }

    def _windows(self, result: FrameOut) -> dict[str, Any]:
        """Send the windows a frame closed on for analysis, and time the open one."""
        if result.errors:
            error = result.errors[0]
            raise FramebrokerError(f"frame not added: {error.get('error', error)}")
        out = result.outputs
        for done in out.get("closed") or ():
            self._dispatch(done)
        self._arm_timer(out.get("open"))
        return out

    # -- timed windows ----------------------------------------------------------------------

    def _arm_timer(self, open_window: dict[str, Any] | None) -> None:
        if self.config.window_seconds <= 0:
            return
        index = None if open_window is None else int(open_window["window"])
        if index == self._timer_window:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_window = index
        if open_window is None or index is None:
            return
        delay = max(0.0, float(open_window["since"]) + self.config.window_seconds - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer, index)

    def _on_timer(self, index: int) -> None:
        self._timer = None
        self._spawn(self._close_by_time(index))

    async def _close_by_time(self, index: int) -> None:
        async with self._lock:
            if self.closed:
                return
            self._timer_window = None
            with contextlib.suppress(SessionNotFound):
                await self._close_window("seconds", index)

    async def _close_window(self, closed_by: ClosedBy, index: int | None = None) -> int | None:
        meta: dict[str, Any] = {CLOSE: closed_by}
        if index is not None:
            meta["window"] = index
        result = await self.sessions.submit(self.id, FrameIn(meta=meta, control=True))
        out = self._windows(result)
        closed = out.get("closed") or []
        return closed[-1].index if closed else None

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

    def rebind(self, emit: Emit | None) -> None:
        """Send to another connection of the same client from now on (``None``: it has
        none for the moment: what would be sent waits, the last ``max_windows_in_flight``
        results at most, and goes out when it is back)."""
        self._emit = emit
        if emit is not None and self._held:
            held, self._held = list(self._held), deque(maxlen=self._held.maxlen)
            for event, payload in held:
                self._spawn(self._send(event, payload))

    async def _send(self, event: str, payload: dict[str, Any]) -> None:
        emit = self._emit
        if emit is None:
            self._held.append((event, payload))
            return
        try:
            await emit(event, payload)
        except Exception:  # a client that went away must not break the stream's tasks
            log.debug("session %s: could not emit %s", self.id, event, exc_info=True)

    async def flush(self, closed_by: ClosedBy = "end") -> int | None:
        """Close the open window now and analyse it; returns its index (``None``: none open)."""
        async with self._lock:
            if self.closed:
                raise SessionNotFound(self.id, field="session_id")
            return await self._close_window(closed_by)

    async def drain(self) -> None:
        """Wait until the windows being analysed now are answered."""
        while self._analyses:
            await asyncio.gather(*list(self._analyses), return_exceptions=True)

    async def close(self, reason: str = "disconnected") -> None:
        """End the session (the open window is dropped), cancel analyses and timers, end the
        stream's pipeline sessions."""
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
            with contextlib.suppress(SessionNotFound):  # swept as idle meanwhile
                await self.sessions.end(self.id, reason=reason)
        try:
            await self.fanout.end(self.id)
        except FramebrokerError:
            log.exception("session %s: pipelines did not end cleanly", self.id)


def _decoded(parse: Callable[[], ImageSource]) -> RawImage:
    return RawImage(parse().decode())


class VideoStreams:
    """The open streams by Socket.IO connection id. How many there may be is the session
    directory's business (``limits.max_sessions``, ``max_sessions_per_client``)."""

    def __init__(self) -> None:
        self._by_connection: dict[str, VideoStream] = {}

    def __len__(self) -> int:
        return len(self._by_connection)

    def get(self, connection: str) -> VideoStream | None:
        return self._by_connection.get(connection)

    def streams(self) -> list[VideoStream]:
        return list(self._by_connection.values())

    def add(self, connection: str, stream: VideoStream) -> None:
        self._by_connection[connection] = stream

    def detach(self, connection: str) -> VideoStream | None:
        """Forget the connection, not the stream (it may come back on another one)."""
        return self._by_connection.pop(connection, None)

    async def close(self, connection: str, reason: str = "disconnected") -> VideoStream | None:
        stream = self._by_connection.pop(connection, None)
        if stream is not None:
            await stream.close(reason)
        return stream

    async def close_all(self, reason: str = "server_stopped") -> None:
        for connection in list(self._by_connection):
            with contextlib.suppress(Exception):
                await self.close(connection, reason)
