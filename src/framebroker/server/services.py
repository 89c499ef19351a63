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

import socketio

from ..cluster.engineio_route import EngineIORouter
from ..cluster.host import Cluster
from ..cluster.keys import Keys
from ..cluster.sources import SourceKeeper
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
    keepers: dict[str, SourceKeeper] = field(default_factory=dict, init=False)
    """In a cluster, each source's lease, which starts and stops its feed."""
    started: bool = field(default=False, init=False)
    listening: bool = field(default=True, init=False)
    """False while a server is still opening its listeners; /healthz answers 503 meanwhile."""
    sweep_faces: bool = field(default=True, init=False)
    """Remove the face crops a crash left unfinished at start. Only while nothing else
    writes faces to the same folder: a sweep beside a writer could take a crop renamed into
    place before its row is committed. The workers of ``serve --workers`` set it False (any
    of them may run a source while another starts); their supervisor sweeps before any
    starts."""

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
        sources = Sources(feeds)
        if isinstance(broker, Cluster):
            # A listener on any node follows any node's source (its frames come by Redis).
            broker.local_sources = hub.known_sources
            broker.running_sources = lambda: [feed.name for feed in feeds if feed.running]
            hub.known_sources = broker.sources
            # A stop or start of a source reaches the node that runs it, from any node.
            sources.elsewhere = broker.source_elsewhere
            broker.source_action = sources.act_here
        analysis = VideoAnalysis(
            settings.analysis,
            broker,
            broker.run_blocking,
            key_file=settings.data_dir / "secret.key",
        )
        manager = socket_io_manager(settings)
        socketio = SocketIOTransport(
            ctx, analysis, settings.limits, settings.auth, client_manager=manager
        )
        if isinstance(broker, Cluster):
            route_engineio(socketio, broker, settings)
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
            sources,
            own,
        )

    async def start(self) -> None:
        await self.broker.start()
        if isinstance(self.broker, Cluster):
            # Ids handed out here name this node: a front proxy sends their Socket.IO
            # connections to it.
            self.analysis.ids.prefix = self.broker.id_prefix
        await self.hub.start()
        self.started = True
        if self.sweep_faces and self.records is not None and self.crops is not None:
            await self._sweep_faces(self.records, self.crops)
        for feed in self.feeds:
            if isinstance(self.broker, Cluster):
                # One node of the cluster runs it at a time: whichever holds its lease.
                keeper = self.broker.keep_source(feed.name, feed.start, feed.stop)
                feed.gate = keeper
                self.keepers[feed.name] = keeper
            else:
                await feed.start()
        await self.analysis.start()
        await self.webrtc.start()

    async def stop_sources(self) -> None:
        """Stop every source; in a cluster, give each one's lease back once it stopped, so
        another node takes it over at once, from the counts this one stored. Never raises
        (a source that does not stop cleanly is logged)."""
        for feed in self.feeds:
            keeper = self.keepers.pop(feed.name, None)
            try:
                await (keeper.close() if keeper is not None else feed.stop())
            except Exception:
                log.exception("source %s did not stop cleanly", feed.name)

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
        await self.stop_sources()
        await self.hub.stop()
        await self.broker.stop()
        if self.store is not None:
            self.store.close()


def route_engineio(socketio: SocketIOTransport, cluster: Cluster[Any], settings: Settings) -> None:
    """Seed 002's long-polling across processes: Engine.IO sids name the node that made them,
    this node's relay answers the requests other nodes forward to it, and the app mounted at
    ``/socket.io`` forwards a request for another node's sid to that node
    (:mod:`framebroker.cluster.engineio_route`). One server builds none of it."""
    socketio.use_sids(cluster.engineio_sid)
    cluster.engineio_app = socketio.app
    socketio.app = EngineIORouter(
        socketio.app,
        holds=socketio.holds,
        peers=cluster,
        max_body=settings.limits.max_ws_message_bytes,
        poll_timeout_s=socketio.poll_timeout_s,
    )


def socket_io_manager(settings: Settings) -> Any:
    """Seed 002's Socket.IO client manager: in a cluster python-socketio's
    ``AsyncRedisManager`` on the cluster's Redis, on a channel of the cluster's name (several
    clusters may share a Redis), so an emit to a stream's room reaches its members on every
    node; on one server ``None`` (python-socketio's own, in this process)."""
    cluster = settings.cluster
    if cluster.url is None:
        return None
    return socketio.AsyncRedisManager(
        cluster.url,
        channel=Keys(cluster.name).socketio,
        # A Redis that does not answer must not hold a connect for ever; no read timeout,
        # which would cut the manager's idle pub/sub listener.
        redis_options={"socket_connect_timeout": 2.0},
    )
