"""Video analysis assembled: session ids, streams of frames, uploads, and the fan-out behind them.

:class:`VideoAnalysis` is what the video analysis transports (Socket.IO events and the HTTP
endpoints) talk to; it holds no wire format. Built from the ``analysis`` settings, started and
stopped with the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..config import AnalysisSettings
from ..errors import ClusterUnavailable, InvalidInput, SessionConflict, SessionNotFound
from ..media.container import open_source
from ..media.convert import to_bgr
from ..media.encode import EncoderOptions
from ..media.sources import SourceError
from ..sessions import Sessions
from .fanout import Fanout, HttpService, HttpServices, InProcessPipelines, Video
from .session_ids import SessionIds
from .streams import TRANSPORT, Emit, RunBlocking, StreamConfig, VideoStream, VideoStreams

__all__ = ["OWNER_GONE", "VideoAnalysis", "signing_key"]

log = logging.getLogger(__name__)

Image = NDArray[np.uint8]

ASK_ELSEWHERE_S = 0.8
"""How long a connection waits to learn whether its id runs in another process: less than
the 1 s a python-socketio client waits for its connect by default. An owner that died holds
its lease for seconds (a cluster's ``ttl_s``); a connect that waited that long would be given
up by its client, and a stream resumed for it left to nobody. It is refused with
``cluster_unavailable`` instead, its id as good as it was, and the client's retry finds the
lease run out."""

OWNER_GONE: frozenset[str] = frozenset({"node_lost", "server_restarted"})
"""The reasons the store gives a session whose process died under it: in a cluster another
node found it orphaned (``node_lost``), or the process's next life did (``server_restarted``).
A stream that ended so was not ended by anyone: its id is not used up, and a connection with
it resumes the stream from its last snapshot (:meth:`VideoAnalysis.open_stream`)."""


def signing_key(settings: AnalysisSettings, key_file: Path | None) -> bytes:
    """The key that signs handed-out session ids: ``SECRET_KEY`` when set; else the one kept
    in ``key_file`` (made on first use, readable by its owner only), which every process on
    the same data directory shares, so an id one worker handed out is good on another and
    across restarts; with neither, a random key for this process alone."""
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value().encode("utf-8")
        return key if len(key) >= 16 else key.ljust(16, b"\0")  # dev_mode allows short keys
    if key_file is None:
        log.info(
            "SECRET_KEY is not set: session ids are signed with a random key for this process "
            "only (they do not survive a restart)"
        )
        return secrets.token_bytes(32)
    return read_or_make_key(key_file)


def read_or_make_key(path: Path, size: int = 32) -> bytes:
    """The random key stored at ``path``, made there first (mode 0600) if there is none.

    Two processes starting together agree: the file is created exclusively, and the loser
    of that race reads the winner's key. Raises ``ValueError`` for a file of another size
    (a key cut short must not silently weaken every signature).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the winner may not have written it yet
            key = path.read_bytes()
            if len(key) == size:
                return key
            time.sleep(0.01)
        raise ValueError(f"{path}: expected a {size}-byte key, found {len(key)} bytes") from None
    key = secrets.token_bytes(size)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
        out.flush()
        os.fsync(out.fileno())
    return key


class VideoAnalysis:
    """Video analysis's state in one process. ``transport`` replaces httpx's network (tests)."""

    def __init__(
        self,
        settings: AnalysisSettings,
        sessions: Sessions,
        offload: RunBlocking,
        *,
        key_file: Path | None = None,
        transport: Any = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.offload = offload
        self.ids = SessionIds(
            signing_key(settings, key_file),
            allowed=settings.allowed_session_ids,
            ttl_s=settings.issued_id_ttl_s,
            max_ids=settings.max_issued_ids,
        )
        http = HttpServices(
            (
                HttpService(name, s.url, timeout_s=s.timeout_s, retries=s.retries, field=s.field)
                for name, s in settings.services.items()
            ),
            max_concurrency=settings.max_concurrent_requests,
            max_answer_bytes=settings.max_answer_bytes,
            transport=transport,
        )
        pipelines = InProcessPipelines(sessions, settings.pipelines) if settings.pipelines else None
        self.fanout = Fanout(http, pipelines)
        self.streams = VideoStreams()
        self.on_ended: Callable[[str, str], Awaitable[None]] | None = None
        """``await on_ended(session_id, reason)`` once a stream has ended (the transport tells
        the session's observers); not called for streams the server stops."""
        self._detached: dict[str, tuple[VideoStream, asyncio.TimerHandle]] = {}
        """Streams whose connection went, by id, waiting for it to come back."""
        self._expiring: set[asyncio.Task[None]] = set()
        self.stream_config = StreamConfig(
            window_frames=settings.window_frames,
            window_seconds=settings.window_seconds,
            max_window_bytes=settings.max_window_bytes,
            max_inflight=settings.max_inflight_events,
            max_windows_in_flight=settings.max_windows_in_flight,
            emit_result=settings.emit_result,
            encoder=EncoderOptions(
                fps=settings.video_fps, preset=settings.video_preset, crf=settings.video_crf
            ),
        )

    async def start(self) -> None:
        """Build every configured pipeline once, so a bad one stops the server now."""
        pipelines = self.fanout.pipelines
        if pipelines is not None:
            await self.offload(pipelines.check)

    async def stop(self) -> None:
        await self.streams.close_all()
        for stream, timer in list(self._detached.values()):
            timer.cancel()
            await stream.close("server_stopped")
        self._detached.clear()
        for task in list(self._expiring):
            task.cancel()
        await asyncio.gather(*self._expiring, return_exceptions=True)
        await self.fanout.aclose()

    def options(self) -> dict[str, Any]:
        """``GET /options``: the names a client may ask for, and what each one is."""
        return {"processes": self.fanout.names, "details": self.fanout.options()}

    def select(self, requested: Iterable[str] | None) -> list[str]:
        return self.fanout.select(requested)

    async def open_stream(
        self,
        connection: str,
        session_id: str | None,
        *,
        emit: Emit,
        processes: Iterable[str] | None = None,
        client: str | None = None,
    ) -> tuple[VideoStream, bool]:
        """A stream for a new connection; returns it and whether its id was made here.

        The id must be allowed (configured, or handed out and unused) and not connected
        already; with ``generate_session_id_on_connect`` a missing or unknown id gets a new
        one instead. An id whose stream's process died (its session ended for a reason of
        :data:`OWNER_GONE`) is not used up: its stream resumes here from its last snapshot,
        numbering its frames and windows on (the window open at that snapshot is lost); it
        is used up if that process died before any snapshot. The stream is a session, which
        ``client`` (the connection's address) holds as one of its ``max_sessions_per_client``
        until :meth:`close_stream`; its frames are bounded by ``max_fps_per_session``.
        Raises :class:`InvalidInput`, :class:`SessionNotFound`,
        :class:`~framebroker.errors.SessionConflict`,
        :class:`~framebroker.errors.CapacityExceeded` or
        :class:`~framebroker.errors.ClientSessionLimit`, and nothing is kept then.
        """
        names = self.select(processes)
        waiting = self._detached.pop(session_id, None) if session_id is not None else None
        if waiting is not None:  # the same client back within the grace period
            stream, timer = waiting
            timer.cancel()
            stream.rebind(emit)
            self.streams.add(connection, stream)
            log.info("video analysis session %s reconnected", stream.id)
            return stream, False
        self.sessions.check_client(client)
        generated = resume = False
        try:
            sid = self.ids.claim(session_id)
            try:
                resume = await self._resumable_soon(sid)
            except SessionNotFound:
                self.ids.release(sid)  # used up elsewhere: remembered here too
                raise
            except BaseException:
                # In use elsewhere, or not known now (the cluster or the store did not
                # answer): the id stays as good as it was, for this client to retry.
                self.ids.unclaim(sid)
                raise
        except (InvalidInput, SessionNotFound):
            if not self.settings.generate_session_id_on_connect:
                raise
            sid, generated = self.ids.claim_new(), True
        try:
            stream = await self._start(sid, names, emit, client, resume=resume)
        except SessionNotFound:
            if not resume or not self.settings.generate_session_id_on_connect:
                raise
            sid, generated, resume = self.ids.claim_new(), True, False
            stream = await self._start(sid, names, emit, client, resume=False)
        self.streams.add(connection, stream)
        how = "resumed from its last snapshot" if resume else "made" if generated else "given"
        log.info("video analysis session %s connected (%s)", sid, how)
        return stream, generated

    async def _start(
        self, sid: str, names: list[str], emit: Emit, client: str | None, *, resume: bool
    ) -> VideoStream:
        """The stream of the claimed id ``sid``: a new session, or with ``resume`` the one
        its dead process left (``SessionNotFound`` when it left no snapshot: the id is used
        up then, as nothing can carry its numbering on)."""
        try:
            return await VideoStream.open(
                sid,
                sessions=self.sessions,
                offload=self.offload,
                fanout=self.fanout,
                names=names,
                config=self.stream_config,
                emit=emit,
                client=client,
                resume=resume,
            )
        except SessionNotFound:
            if not resume:
                self.ids.unclaim(sid)
                raise
            log.info("video analysis session %s: its process died before a snapshot", sid)
            self.ids.release(sid)
            raise
        except BaseException:
            # Nothing ran (no capacity, the store or the cluster away): the id stays good.
            # A stream that did start and end is in the store, which says so next time.
            self.ids.unclaim(sid)
            raise

    async def _resumable_soon(self, session_id: str) -> bool:
        """:meth:`_resumable`, or ``ClusterUnavailable`` past :data:`ASK_ELSEWHERE_S`."""
        try:
            return await asyncio.wait_for(self._resumable(session_id), ASK_ELSEWHERE_S)
        except TimeoutError:
            raise ClusterUnavailable(
                f"session {session_id!r}: the process that ran it does not answer yet; "
                "retry in a few seconds",
                operation="connect",
            ) from None

    async def _resumable(self, session_id: str) -> bool:
        """What this process's id table cannot know: whether another process (a node of the
        cluster, or this server before a restart) has the id's session running, or ran it
        and so used the id up, or ran it and died under it (then ``True``: the stream is to
        be resumed). The store and the cluster's directory know, through
        :meth:`Sessions.info`. Raises :class:`SessionConflict` or :class:`SessionNotFound`."""
        try:
            info = await self.sessions.info(session_id)
        except SessionNotFound:
            return False
        if info.state == "ended":
            reason = (info.summary or {}).get("reason")
            if info.transport == TRANSPORT and reason in OWNER_GONE:
                return True
            raise SessionNotFound(session_id, field="session_id")
        where = f" on node {info.node!r}" if info.node else ""
        raise SessionConflict(
            f"session {session_id!r} is already connected{where}; an id serves one connection",
            field="session_id",
        )

    async def observe(self, session_id: str | None) -> str:
        """The id of the running stream an observer may follow: a good id (:meth:`SessionIds.
        verify`: an observer must hold the id, as its client does) of a video analysis session
        running now, on this node or another. Raises :class:`InvalidInput` or
        :class:`SessionNotFound`."""
        sid = self.ids.verify(session_id)
        info = await self.sessions.info(sid)
        if info.state != "active" or info.transport != TRANSPORT:
            raise SessionNotFound(sid, field="session_id")
        return sid

    async def close_stream(self, connection: str, *, dropped: bool = False) -> None:
        """The connection ended: its stream is closed and its id used up. When it ``dropped``
        (it went without the client's ``end``), the stream first waits ``reconnect_grace_s``
        for the same id to connect again (python-socketio's clients reconnect by themselves),
        keeping its open window and the answers of the windows analysed meanwhile."""
        grace = self.settings.reconnect_grace_s if dropped else 0.0
        if grace <= 0:
            reason = "disconnected" if dropped else "ended"
            await self._end_stream(await self.streams.close(connection), reason=reason)
            return
        stream = self.streams.detach(connection)
        if stream is None:
            return
        stream.rebind(None)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(grace, self._expire, stream.id)
        self._detached[stream.id] = (stream, timer)
        log.info(
            "video analysis session %s disconnected; kept %g s for a reconnect", stream.id, grace
        )

    def _expire(self, session_id: str) -> None:
        waiting = self._detached.pop(session_id, None)
        if waiting is not None:
            task = asyncio.ensure_future(
                self._end_stream(waiting[0], close=True, reason="reconnect_timeout")
            )
            self._expiring.add(task)
            task.add_done_callback(self._expiring.discard)

    async def _end_stream(
        self, stream: VideoStream | None, *, close: bool = False, reason: str = "ended"
    ) -> None:
        if stream is None:
            return
        self.ids.release(stream.id)  # used up first: a late reconnect is refused, not raced
        if close:
            await stream.close()
        log.info("video analysis session %s ended (%s)", stream.id, reason)
        if self.on_ended is not None:
            try:
                await self.on_ended(stream.id, reason)
            except Exception:  # telling observers must not break ending a stream
                log.debug("session %s: observers not told of the end", stream.id, exc_info=True)

    async def probe_upload(self, path: Path) -> None:
        """Raise :class:`InvalidInput` unless ``path`` holds a video FFmpeg can decode."""

        def probe() -> None:
            with open_source(str(path)):
                pass

        try:
            await self.offload(probe)
        except SourceError as exc:
            reason = exc.message.split(": ", 1)[-1]
            raise InvalidInput(
                f"file: the upload is not a usable video: {reason}", field="file"
            ) from None

    async def _frames(self, path: Path) -> AsyncGenerator[Image, None]:
        source = await self.offload(open_source, str(path))
        frames = source.frames()

        def step() -> Image | None:
            frame = next(frames, None)
            if frame is None:
                return None
            return to_bgr(frame)

        try:
            while (image := await self.offload(step)) is not None:
                yield image
        finally:
            await self.offload(source.close)

    async def analyse_upload(
        self,
        path: Path,
        names: Collection[str],
        *,
        filename: str = "video.mp4",
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """An uploaded video (a file on disk) to every name in ``names``; ``{name: answer}``."""
        await self.probe_upload(path)
        local = [n for n in names if n not in self.fanout.http.services]
        frames = self._frames(path) if local else None
        video = Video(path=path, filename=filename, content_type=content_type)
        try:
            return await self.fanout.batch(
                video, frames, names, max_frames=self.settings.batch_max_frames
            )
        finally:
            if frames is not None:
                await frames.aclose()
