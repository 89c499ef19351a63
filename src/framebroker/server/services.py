"""Everything one server process runs besides its listeners, built once and started together.

:meth:`Services.build` is the app factory's first half: it makes every per-process part
exactly once (the broker with its store, bus and worker pool; the live hub; the video
sources; video analysis; the WebRTC peers), and nothing of it lives in a module global, so a
process may hold several servers (tests do) and several processes never share one by
accident. The listeners (:mod:`.app`) are the second half: the main port and each
compatibility port get an ASGI app over the same ``Services``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..cluster.host import Cluster
from ..config import Settings
from ..core.store import Store
from ..people.feed import SourceFeed, Sources, parse_source_arg
from ..people.records import FaceCrops, PeopleRecords
from ..runtime.metrics import Metrics
from ..sessions import Sessions
from ..storage import SQLPeopleRecords, face_crops_for
from ..transports.context import ServerContext
from ..transports.people_ws import LiveHub
from ..transports.video_analysis_socketio import SocketIOTransport
from ..transports.webrtc_signaling import WebRTCTransport
from ..video_analysis.service import VideoAnalysis

__all__ = ["Services", "SessionHost"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class SessionHost(Sessions, Protocol):
    """:class:`~framebroker.sessions.Sessions` plus what the process needs to host them: a
    life cycle, its metrics and its worker pool. The broker is one; a test's in-memory fake
    is another, and a node of a cluster (:class:`~framebroker.cluster.host.Cluster`, the
    broker wrapped) is a third."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def closing(self) -> bool: ...

    @property
    def session_count(self) -> int: ...

    @property
    def stuck_threads(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass(eq=False)
class Services:
    """The broker and every client-serving part of one process.

    Listeners (the main port and the compatibility ports) share one ``Services``, so a client
    of the live people counter on 8765 sees the same sessions as one on the main port.
    """

    settings: Settings
    broker: SessionHost
    ctx: ServerContext
    hub: LiveHub
    records: PeopleRecords | None
    crops: FaceCrops | None
    analysis: VideoAnalysis
    socketio: SocketIOTransport
    webrtc: WebRTCTransport
    feeds: Sources = field(default_factory=Sources)
    store: Store | None = None
    """The store, when this ``Services`` (not the broker) is the one to close it."""
    started: bool = field(default=False, init=False)
    listening: bool = field(default=True, init=False)
    """False while a server is still opening its listeners; /healthz answers 503 meanwhile."""
    sweep_faces: bool = field(default=True, init=False)
    """Remove the face crops a crash left unfinished at start. Only the process that writes
    faces may (a worker of ``serve --workers`` that runs no source sets it False): a sweep
    beside a writer could take a crop renamed into place before its row is committed."""

    @classmethod
    def build(cls, settings: Settings, sessions: SessionHost | None = None) -> Services:
        """Every part, once: the store, the broker over it (or ``sessions``), and what
        serves clients."""
        from .app import build_host, open_configured_store

        store = open_configured_store(settings)
        broker = sessions if sessions is not None else build_host(settings, store)
        ctx = ServerContext(sessions=broker, telemetry=broker.metrics, offload=broker.run_blocking)
        records = SQLPeopleRecords(store)
        crops = face_crops_for(store, settings.faces_dir)
        hub = LiveHub(
            broker,
            timezone=settings.people.timezone,
            client_queue=settings.live.client_queue,
            send_timeout_s=settings.live.send_timeout_s,
            records=records,
            crops=crops,
            run_blocking=broker.run_blocking,
        )
        feeds = []
        for i, arg in enumerate(settings.sources):
            name, uri = parse_source_arg(arg, i)
            feeds.append(
                SourceFeed(
                    name, uri, broker, broker.run_blocking, records,
                    settings.people, settings.live, crops=crops,
                    realtime=settings.source_realtime, loop=settings.loop,
                )
            )  # fmt: skip
        hub.known_sources = lambda: [feed.name for feed in feeds]
        if isinstance(broker, Cluster):
            # A listener on any node follows any node's source (its frames come by Redis).
            broker.local_sources = hub.known_sources
            hub.known_sources = broker.sources
        analysis = VideoAnalysis(
            settings.analysis,
            broker,
            broker.run_blocking,
            key_file=settings.data_dir / "secret.key",
        )
        socketio = SocketIOTransport(ctx, analysis, settings.limits, settings.auth)
        webrtc = WebRTCTransport(ctx, settings.webrtc, settings.limits)
        own = store if sessions is not None else None
        return cls(
            settings,
            broker,
            ctx,
            hub,
            records,
            crops,
            analysis,
            socketio,
            webrtc,
            Sources(feeds),
            own,
        )

    async def start(self) -> None:
        await self.broker.start()
        await self.hub.start()
        self.started = True
        if self.sweep_faces and self.records is not None and self.crops is not None:
            await self._sweep_faces(self.records, self.crops)
        for feed in self.feeds:
            await feed.start()
        await self.analysis.start()
        await self.webrtc.start()

    async def _sweep_faces(self, records: PeopleRecords, crops: FaceCrops) -> None:
        """Before any feed writes a face, remove the crops a crash left unfinished."""
        gone = await self.broker.run_blocking(lambda: crops.sweep(records.face_filenames()))
        if gone:
            log.info("removed %d face crop(s) a previous run left unfinished", gone)

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        await self.webrtc.stop()
        await self.socketio.stop()
        await self.analysis.stop()
        for feed in self.feeds:
            try:
                await feed.stop()
            except Exception:
                log.exception("source %s did not stop cleanly", feed.name)
        await self.hub.stop()
        await self.broker.stop()
        if self.store is not None:
            self.store.close()
