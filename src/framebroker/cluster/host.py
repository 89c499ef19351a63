"""One node of a cluster: :class:`Cluster` is the ``Sessions`` every transport of this node
speaks to, wrapping the node's own runtime (the broker) and reaching the others.

A session runs in exactly one node, its owner (its processors keep state). The directory in
Redis says who that is; this class decides, per call, where a call goes:

- a session this node runs: straight to the local runtime, with no Redis round trip (the hot
  path of a client that keeps talking to the node that made its session);
- a session another live node owns: relayed to it (:mod:`.relay_client`), the frame as
  :meth:`FrameIn.to_wire` and the answer as :meth:`FrameOut.from_wire`, so the client sees
  one server. Which node owns a session is remembered (bounded) and looked up again when the
  owner says it no longer holds it or does not answer;
- a session whose owner died (its lease ran out): taken over here under a new epoch, its
  store rows recovered from the dead owner, and resumed from its last snapshot, with the
  same track ids from that snapshot on;
- a new session: claimed in the directory first (one winner per id across the cluster),
  then made locally. Ids this node makes start with the node's name, so they never collide
  across nodes and a front proxy can route them to their owner without asking Redis.

While Redis does not answer, sessions this node runs carry on (their calls never touch
Redis); whatever needs the directory (a new session, a session elsewhere) gets
:class:`~framebroker.errors.ClusterUnavailable` (503, ``cluster_unavailable``).

Bus topics of one session (``session/<id>/...``) stay on the owner's in-process bus, where
the session's consumers are (a source's live publisher, a WebRTC peer); everything else
(``live/<source>/...``: frames, stats, events) goes over :class:`.bus.RedisBus`, so a live
listener or console on any node sees every source of the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from starlette.types import ASGIApp

from ..core.bus import Message
from ..core.store import Owner
from ..errors import (
    ClusterUnavailable,
    ConfigError,
    FramebrokerError,
    SessionConflict,
    SessionFenced,
    SessionNotFound,
    SourceNotFound,
)
from ..sessions import (
    Backpressure,
    Feed,
    FrameIn,
    FrameOut,
    ProcessorSpec,
    SessionInfo,
    Sessions,
    SessionSummary,
)
from .bus import RedisBus
from .connection import Refusals, connect, stop_task
from .directory import Directory, Entry, Lease, NodeInfo
from .engineio_route import EngineIOSids, Forwarded, SidParts, SidRefused
from .keys import Keys
from .metrics import ClusterCollector, ClusterCounters
from .relay_client import OwnerUnreachable, RelayClient
from .relay_server import EngineIOForwards, RelayServer, relay_app
from .relay_wire import (
    NotOwner,
    RelayRefused,
    info_from_wire,
    info_to_wire,
    relay_token,
    summary_from_wire,
    summary_to_wire,
)
from .sources import Action, SourceKeeper, SourceLease

__all__ = ["Cluster", "ClusterConfig", "LocalSessions"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registered(Protocol):
    """What the cluster needs of the process's metrics: the registry ``/metrics`` renders."""

    @property
    def registry(self) -> CollectorRegistry: ...


M = TypeVar("M", bound=Registered)
M_co = TypeVar("M_co", bound=Registered, covariant=True)


class LocalSessions(Sessions, Protocol[M_co]):
    """What the cluster wraps: this node's own runtime (the broker), hosting the sessions
    this node owns."""

    @property
    def metrics(self) -> M_co: ...

    @property
    def closing(self) -> bool: ...

    @property
    def session_count(self) -> int: ...

    @property
    def stuck_threads(self) -> int: ...

    @property
    def owner(self) -> Owner | None:
        """This life of the process as the store names it, once started."""

    def holds(self, session_id: str) -> bool:
        """Whether the session runs here now."""

    async def recover(self, gone: Sequence[Owner], *, reason: str = "node_lost") -> int:
        """End in the store the sessions of owners that are gone (their snapshots stay)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """How this node joins its cluster (from ``[cluster]`` of the settings).

    ``secret``: the cluster's shared ``SECRET_KEY`` (the relay's token is derived from it).
    ``host``: where the relay listens; ``address``: where other nodes reach it;
    ``relay_port`` 0: any free port. ``ports``: this node's other listeners, shown in the
    directory (``http``: its public port). ``source_ttl_s``: a ``--source``'s lease (how
    soon another node takes a dead holder's source over)."""

    url: str
    secret: str
    name: str = "framebroker"
    ttl_s: float = 5.0
    source_ttl_s: float = 3.0
    host: str = "127.0.0.1"
    address: str | None = None
    relay_port: int = 0
    relay_timeout_s: float = 30.0
    op_timeout_s: float = 1.0
    ports: tuple[tuple[str, int], ...] = ()
    route_cache: int = 65536


_OPS = frozenset({"attach", "attach_submit", "submit", "end", "info", "live", "source"})
"""What a node may relay to another."""


def _attach_body(
    transport: str, pipeline: Sequence[ProcessorSpec] | None, client: str | None, create: bool
) -> dict[str, Any]:
    return {
        "transport": transport,
        "pipeline": list(pipeline) if pipeline is not None else None,
        "client": client,
        "create": create,
    }


SourceAction = Literal["stop", "start"]
"""What another node may ask of a source this node runs."""

NODES_REREAD_S = 1.0
"""How often a sid of a node not known here may make this node read the node list again."""

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_~-]")


def _id_prefix(node: str) -> str:
    """The start of every id this node makes: its name in the characters an id allows."""
    return _ID_UNSAFE.sub("-", node)[:48] or "node"


def _advertised(config: ClusterConfig) -> str:
    if config.address:
        return config.address
    if config.host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return config.host


class Cluster(Generic[M]):
    """The ``Sessions`` of one node of a cluster (see the module docstring), wrapping
    ``local``. :meth:`start` joins the cluster (raises ``ConfigError`` when its Redis cannot
    be reached); :meth:`stop` leaves it, suspending the sessions this node runs."""

    def __init__(self, local: LocalSessions[M], config: ClusterConfig) -> None:
        self.local = local
        self.config = config
        self.keys = Keys(config.name)
        self.counters = ClusterCounters()
        self.refusals = Refusals(log, "input from inside the cluster")
        self.directory: Directory | None = None
        self.bus: RedisBus | None = None
        self._redis: Redis | None = None
        self._relay: RelayServer | None = None
        self._client: RelayClient | None = None
        self._routes: OrderedDict[str, str] = OrderedDict()  # session id -> owner node
        self._nodes: dict[str, NodeInfo] = {}
        self._claiming: set[str] = set()  # claimed, not yet made locally: not to release
        self._tasks: list[asyncio.Task[None]] = []
        self._prefix = "node"
        self.local_sources: Callable[[], Iterable[str]] = lambda: ()
        """The ``--source`` names configured on this node, advertised to the others at each
        heartbeat (set by the server that assembles the node)."""
        self.running_sources: Callable[[], Iterable[str]] = lambda: ()
        """Those of them this node runs now (it holds their lease), advertised likewise."""
        self.source_action: Callable[[str, SourceAction], Awaitable[dict[str, Any]]] | None = None
        """``(source, action)`` done here for another node (``/v1/sources/<name>/stop``
        asked of a node that stands by for it), answering the source as described here."""
        self._keepers: dict[str, SourceKeeper] = {}
        self._sids = EngineIOSids(config.secret, config.name)
        self._reread_at = 0.0  # when a sid of an unknown node last made it read the nodes
        self.engineio_app: ASGIApp | None = None
        """This node's Socket.IO app, which answers the Engine.IO requests other nodes
        forward to it (set by the server that assembles the node)."""
        local.metrics.registry.register(ClusterCollector(self.snapshot))

    # -- life cycle ------------------------------------------------------------------------

    @property
    def metrics(self) -> M:
        return self.local.metrics

    @property
    def closing(self) -> bool:
        return self.local.closing

    @property
    def session_count(self) -> int:
        return self.local.session_count

    @property
    def stuck_threads(self) -> int:
        return self.local.stuck_threads

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.local.run_blocking(fn, *args)

    @property
    def node(self) -> str:
        return self._directory.node

    @property
    def id_prefix(self) -> str:
        """What ids this node makes start with (``<prefix>.``): its name in id characters,
        known once started. A front proxy routes an id to its node by it."""
        return self._prefix

    @property
    def _directory(self) -> Directory:
        if self.directory is None:
            raise RuntimeError("the cluster is not started")
        return self.directory

    async def start(self) -> None:
        await self.local.start()
        owner = self.local.owner or Owner(f"node-{secrets.token_hex(4)}", 0)
        config = self.config
        self._redis = connect(config.url, timeout_s=config.op_timeout_s, name=owner.id)
        token = relay_token(config.secret, config.name)
        app = EngineIOForwards(
            relay_app(self._serve, token, self.refusals),
            lambda: self.engineio_app,
            token,
            self.refusals,
            on_forward=self._served_engineio,
        )
        self._relay = RelayServer(app, config.host, config.relay_port)
        self._client = RelayClient(token, self.refusals, timeout_s=config.relay_timeout_s)
        ports = {**dict(config.ports), "relay": self._relay.port}
        self.directory = Directory(
            self._redis,
            keys=self.keys,
            node=owner.id,
            life=owner.epoch,
            ttl_s=config.ttl_s,
            address=_advertised(config),
            ports=ports,
            stats=self._stats,
            on_lost=self._lost,
            op_timeout_s=config.op_timeout_s,
        )
        self._prefix = _id_prefix(owner.id)
        try:
            await self.directory.start()
        except ClusterUnavailable as e:
            await self._close_connections()
            raise ConfigError(
                f"--cluster {config.url}: cannot join the cluster, its Redis did not answer: "
                f"{e.message}"
            ) from None
        self.bus = RedisBus(self._redis, keys=self.keys, node=owner.id)
        await self.bus.start()
        await self._relay.start()
        await self._refresh_nodes()
        self._tasks.append(asyncio.create_task(self._keep_up(), name="cluster-upkeep"))
        log.info(
            "node %s (life %d) joined cluster %r at %s; relay on %s:%d",
            owner.id,
            owner.epoch,
            config.name,
            config.url,
            _advertised(config),
            self._relay.port,
        )

    async def stop(self) -> None:
        """Suspend this node's sessions (their snapshots stored, as on one server), give
        their leases back and leave: their clients resume them on any node."""
        for keeper in list(self._keepers.values()):  # the server closed them first, usually
            await keeper.close()
        for task in self._tasks:
            await stop_task(task, timeout_s=2.0)
        self._tasks = []
        held = dict(self.directory.held) if self.directory is not None else {}
        await self.local.stop()
        if self.directory is not None:
            for lease in held.values():
                with contextlib.suppress(ClusterUnavailable, SessionFenced):
                    await self.directory.release(lease)
            await self.directory.stop(leave=True)
        if self._relay is not None:
            await self._relay.stop()
        if self.bus is not None:
            await self.bus.close()
        await self._close_connections()

    async def _close_connections(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def _keep_up(self) -> None:
        """Every heartbeat: learn the nodes again, and give back the leases of sessions
        this node no longer runs (ended by their client or as idle)."""
        assert self.directory is not None
        while True:
            await asyncio.sleep(self.directory.heartbeat_s)
            try:
                await self._refresh_nodes()
                for sid, lease in list(self.directory.held.items()):
                    if sid not in self._claiming and not self.local.holds(sid):
                        await self._release(lease)
            except ClusterUnavailable:
                continue
            except Exception:
                log.exception("cluster upkeep failed")

    def _stats(self) -> dict[str, Any]:
        return {
            "sessions": self.local.session_count,
            "sources": sorted(self.local_sources()),
            "running": sorted(self.running_sources()),
        }

    def sources(self) -> list[str]:
        """The ``--source`` names of the whole cluster: this node's, and those each live
        node advertised at its last heartbeat (as last read), whichever node runs them."""
        return sorted(self.source_nodes())

    def source_nodes(self) -> dict[str, str | None]:
        """Every ``--source`` of the cluster and the node that runs it (``None`` while no
        node does, as in a takeover): this node's from its own feeds, the others' as they
        advertised them at their last heartbeat. A node that stands by for a source (it is
        configured there, another node holds its lease) does not claim it."""
        found: dict[str, str | None] = dict.fromkeys(self.local_sources())
        me = self.directory.node if self.directory is not None else None
        for node in self._nodes.values():
            if node.id == me:
                continue
            for key in ("sources", "running"):
                advertised = node.stats.get(key)
                if not isinstance(advertised, list):
                    continue
                for name in advertised:
                    if isinstance(name, str):
                        found.setdefault(name, None)
                        if key == "running":
                            found[name] = node.id
        for name in self.running_sources():
            found[name] = me
        return found

    def keep_source(self, name: str, start: Action, stop: Action) -> SourceKeeper:
        """Run the source ``name`` on this node only while this node holds its lease in the
        cluster: ``start()`` when it comes to hold it, ``stop()`` when it stops holding it
        (:class:`~.sources.SourceKeeper`). Call once the cluster is started; the keeper's
        ``close()`` (or this node's stop) stops the source and hands the lease over.
        Raises ``ValueError`` for a source kept already."""
        if self._redis is None or self.directory is None:
            raise RuntimeError("the cluster is not started")
        if name in self._keepers:
            raise ValueError(f"source {name!r} is kept already")
        lease = SourceLease(
            self._redis,
            keys=self.keys,
            node=self.directory.node,
            source=name,
            ttl_s=self.config.source_ttl_s,
            op_timeout_s=self.config.op_timeout_s,
        )
        keeper = SourceKeeper(lease, start, stop)
        self._keepers[name] = keeper
        keeper.start()
        return keeper

    async def source_elsewhere(self, node: str, name: str, action: SourceAction) -> dict[str, Any]:
        """Ask ``node``, which runs the source ``name``, to ``stop`` or ``start`` it; the
        source as that node describes it. ``ClusterUnavailable`` when it cannot be reached."""
        info = await self._node_info(node)
        if info is None:
            raise ClusterUnavailable(
                f"source {name!r} runs on node {node!r}, which this node cannot find",
                operation="relay",
            )
        answer = await self._call(info, "source", {"name": name, "action": action})
        if not isinstance(answer, dict):
            self.refusals.refuse("relay_malformed", f"source {name!r}: {answer!r:.200}")
            raise ClusterUnavailable(
                f"node {node!r} answered for source {name!r} what this node cannot read",
                operation="relay",
            )
        return answer

    async def _refresh_nodes(self) -> None:
        nodes = await self._directory.nodes()
        self._nodes = {n.id: n for n in nodes}

    async def _release(self, lease: Lease) -> None:
        with contextlib.suppress(SessionFenced):
            if await self._directory.release(lease):
                self.counters.released += 1

    def _lost(self, lease: Lease, error: SessionFenced) -> None:
        """Another node took a session of this one over (this node had lost its lease):
        the local copy is stale and ends, without a snapshot."""
        self.counters.lost += 1
        if self.local.holds(lease.session_id):
            task = asyncio.ensure_future(self._end_lost(lease.session_id))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _end_lost(self, session_id: str) -> None:
        with contextlib.suppress(FramebrokerError):
            await self.local.end(session_id, reason="taken_over")

    def snapshot(self) -> dict[str, Any]:
        directory = self.directory
        refusals = {"cluster": self.refusals.as_dict()}
        unavailable = 0
        if directory is not None:
            refusals["directory"] = directory.refusals.as_dict()
            unavailable = directory.counters.unavailable
        if self.bus is not None:
            refusals["bus"] = self.bus.refusals.as_dict()
        return {
            "counters": self.counters,
            "refusals": refusals,
            "unavailable": unavailable,
            "nodes": len(self._nodes),
            "held": len(directory.held) if directory is not None else 0,
            "lease_valid": directory.lease_valid if directory is not None else False,
            "sources": {
                name: {
                    "held": keeper.held,
                    "takeovers": keeper.lease.takeovers,
                    "losses": keeper.lease.losses,
                    "refusals": keeper.lease.refusals,
                    "start_failures": keeper.start_failures,
                    "failures": keeper.failures,
                }
                for name, keeper in sorted(self._keepers.items())
            },
        }

    # -- finding a session -----------------------------------------------------------------

    def _remember(self, session_id: str, node: str) -> None:
        self._routes[session_id] = node
        self._routes.move_to_end(session_id)
        while len(self._routes) > self.config.route_cache:
            self._routes.popitem(last=False)

    async def _node_info(self, node: str) -> NodeInfo | None:
        info = self._nodes.get(node)
        if info is None:
            await self._refresh_nodes()
            info = self._nodes.get(node)
        return info

    async def _lookup(self, session_id: str) -> Entry | None:
        """The session's directory entry, with its owner's record known; a live owner this
        node cannot find is a counted refusal (``unknown_node``) and a 503."""
        entry = await self._directory.lookup(session_id)
        if entry is None or not entry.alive or entry.node == self.node:
            return entry
        if await self._node_info(entry.node) is None:
            self.refusals.refuse(
                "unknown_node", f"session {session_id!r} names node {entry.node!r}, not listed"
            )
            raise ClusterUnavailable(
                f"session {session_id!r} is held by node {entry.node!r}, which this node "
                "cannot find in the cluster",
                operation="lookup",
            )
        self._remember(session_id, entry.node)
        return entry

    async def _relay_to_owner(
        self, session_id: str, op: str, body: dict[str, Any], *, fallback: Callable[[], Any]
    ) -> Any:
        """``op`` on the session's owner, wherever it is: relayed to a live owner (from the
        remembered route, else a lookup), else ``await fallback()`` here: the session has
        no live owner (none, or a dead one's, to be taken over by ``fallback``)."""
        node: str | None = self._routes.get(session_id)
        for attempt in range(4):
            if node is None or attempt > 0:
                entry = await self._lookup(session_id)
                if entry is None or not entry.alive or entry.node == self.node:
                    self._routes.pop(session_id, None)
                    return await fallback()
                node = entry.node
            info = await self._node_info(node)
            if info is None:
                self._routes.pop(session_id, None)
                node = None
                continue
            try:
                result = await self._call(info, op, {"session_id": session_id, **body})
            except NotOwner:
                self._routes.pop(session_id, None)
                if attempt:  # twice: the directory names an owner that does not run it
                    self.refusals.refuse(
                        "stale_entry", f"session {session_id!r}: node {node!r} does not run it"
                    )
                continue
            except OwnerUnreachable as e:
                self._routes.pop(session_id, None)
                self._nodes.pop(node, None)
                await self._wait_for_owner(session_id, node, e)
                continue
            return result
        raise ClusterUnavailable(
            f"session {session_id!r}: its owner could not be reached", operation="relay"
        )

    async def _call(self, node: NodeInfo, op: str, body: dict[str, Any]) -> Any:
        assert self._client is not None
        try:
            result = await self._client.call(node, op, body)
        except OwnerUnreachable:
            self.counters.relayed(op, "unreachable")
            raise
        except FramebrokerError:
            self.counters.relayed(op, "error")
            raise
        self.counters.relayed(op, "ok")
        return result

    async def _wait_for_owner(self, session_id: str, node: str, error: OwnerUnreachable) -> None:
        """An owner that does not answer is either gone (its lease runs out within
        ``ttl_s``: then the session can be taken over) or back soon under a new address
        (a restart). Wait for either, at most its lease; else 503."""
        deadline = time.monotonic() + self.config.ttl_s + 1.0
        log.warning("session %s: %s; waiting for its lease to run out", session_id, error)
        while time.monotonic() < deadline:
            entry = await self._directory.lookup(session_id)
            if entry is None or not entry.alive or entry.node != node:
                return
            await self._refresh_nodes()
            info = self._nodes.get(node)
            if info is not None and info.life != entry.life:
                return
            await asyncio.sleep(0.1)
        raise ClusterUnavailable(
            f"session {session_id!r} is held by node {node!r}, which does not answer ({error})",
            operation="relay",
        )

    # -- taking a session on ---------------------------------------------------------------

    async def _claimed(
        self, session_id: str, make: Callable[[Lease], Any], *, take_over: bool = True
    ) -> Any:
        """Claim ``session_id`` for this node (taking it over from a dead owner), then
        ``await make(lease)`` to run it here; the claim is given back if ``make`` fails."""
        self._claiming.add(session_id)
        try:
            lease = await self._directory.claim(session_id, take_over=take_over)
            self._routes.pop(session_id, None)
            if lease.taken_over_from is not None:
                self.counters.takeovers += 1
                ended = await self.local.recover([lease.taken_over_from])
                log.info(
                    "session %s taken over from node %s (life %d); %d of its sessions "
                    "recovered in the store",
                    session_id,
                    lease.taken_over_from.id,
                    lease.taken_over_from.epoch,
                    ended,
                )
            try:
                return await make(lease)
            except BaseException:
                if not self.local.holds(session_id):
                    with contextlib.suppress(ClusterUnavailable):
                        await self._release(lease)
                raise
        finally:
            self._claiming.discard(session_id)

    def _mine(self, info: SessionInfo) -> SessionInfo:
        return replace(info, node=self.node)

    # -- Sessions --------------------------------------------------------------------------

    async def create(
        self,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        session_id: str | None = None,
        backpressure: Backpressure = Backpressure.WAIT,
        client: str | None = None,
    ) -> SessionInfo:
        async def make(sid: str, lease: Lease) -> SessionInfo:
            return await self.local.create(
                transport=transport,
                pipeline=pipeline,
                session_id=sid,
                backpressure=backpressure,
                client=client,
            )

        if session_id is not None:
            if self.local.holds(session_id):
                raise SessionConflict(f"session {session_id!r} already exists", field="Session-Id")
            self.local.check_client(client)
            info = await self._claimed(session_id, functools.partial(make, session_id))
            return self._mine(info)
        self.local.check_client(client)
        for _ in range(3):
            sid = f"{self._prefix}.{secrets.token_hex(12)}"
            try:
                info = await self._claimed(sid, functools.partial(make, sid), take_over=False)
            except SessionConflict:  # pragma: no cover - 96 random bits
                continue
            return self._mine(info)
        raise SessionConflict("could not make a session id nobody holds")  # pragma: no cover

    async def attach(
        self,
        session_id: str,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
        create: bool = True,
    ) -> SessionInfo:
        if self.local.holds(session_id):
            return self._mine(await self.local.attach(session_id, transport=transport))
        attached = functools.partial(
            self._attach_here, session_id, transport, pipeline, client, create
        )
        body = _attach_body(transport, pipeline, client, create)
        answer = await self._relay_claimed(session_id, "attach", body, fallback=attached)
        return answer if isinstance(answer, SessionInfo) else info_from_wire(answer)

    async def attach_and_submit(
        self,
        session_id: str,
        frame: FrameIn,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
        create: bool = True,
    ) -> tuple[SessionInfo, FrameOut]:
        if self.local.holds(session_id):
            info = await self.local.attach(session_id, transport=transport)
            return self._mine(info), await self.local.submit(session_id, frame)

        async def here() -> tuple[SessionInfo, FrameOut]:
            info = await self._attach_here(session_id, transport, pipeline, client, create)
            return info, await self.local.submit(info.id, frame)

        body = {**_attach_body(transport, pipeline, client, create), "frame": frame.to_wire()}
        answer = await self._relay_claimed(session_id, "attach_submit", body, fallback=here)
        if isinstance(answer, tuple):
            return answer
        try:
            return info_from_wire(answer["info"]), FrameOut.from_wire(answer["frame"])
        except (KeyError, TypeError, ValueError) as e:
            raise self._unreadable(session_id, "attach_submit", e) from None

    async def _attach_here(
        self,
        session_id: str,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None,
        client: str | None,
        create: bool,
    ) -> SessionInfo:
        """Run the session on this node: it has no live owner (none yet, or a dead one's,
        taken over and resumed from its snapshot)."""

        async def make(lease: Lease) -> SessionInfo:
            if lease.taken_over_from is not None:
                with contextlib.suppress(SessionNotFound):
                    return await self._resume(session_id, client)
            return await self.local.attach(
                session_id, transport=transport, pipeline=pipeline, client=client, create=create
            )

        return self._mine(await self._claimed(session_id, make))

    async def _relay_claimed(
        self, session_id: str, op: str, body: dict[str, Any], *, fallback: Callable[[], Any]
    ) -> Any:
        """:meth:`_relay_to_owner` for a call that may claim the session here: a claim that
        loses the race to another node (it claimed between the lookup and ours) is relayed
        to that node, which owns it now."""
        try:
            return await self._relay_to_owner(session_id, op, body, fallback=fallback)
        except SessionConflict as e:
            if isinstance(e, SessionFenced):
                raise
            return await self._relay_to_owner(session_id, op, body, fallback=fallback)

    async def submit(self, session_id: str, frame: FrameIn) -> FrameOut:
        if self.local.holds(session_id):
            return await self.local.submit(session_id, frame)

        async def here() -> FrameOut:
            await self._resume_here(session_id)
            return await self.local.submit(session_id, frame)

        answer = await self._relay_to_owner(
            session_id, "submit", {"frame": frame.to_wire()}, fallback=here
        )
        if isinstance(answer, FrameOut):
            return answer
        try:
            return FrameOut.from_wire(answer)
        except (KeyError, TypeError, ValueError) as e:
            raise self._unreadable(session_id, "submit", e) from None

    def _unreadable(self, session_id: str, op: str, error: Exception) -> ClusterUnavailable:
        """A relayed frame's answer that cannot be read: refused (counted), and a 503."""
        self.refusals.refuse("relay_malformed", f"{op} of {session_id!r}: {error!r:.200}")
        return ClusterUnavailable(
            f"the owner of session {session_id!r} answered a frame this node cannot read",
            operation="relay",
        )

    async def _resume_here(self, session_id: str) -> None:
        """Run here a session that has no live owner: an orphan taken over and resumed from
        its snapshot, or a session a stopped node suspended. ``SessionNotFound`` when there
        is nothing to resume."""

        await self._claimed(session_id, lambda _: self._resume(session_id))

    async def _resume(self, session_id: str, client: str | None = None) -> SessionInfo:
        """The session's last snapshot, running here; ``SessionNotFound`` if it has none."""
        info = await self.local.attach(session_id, transport="cluster", client=client, create=False)
        self.counters.resumed += 1
        return info

    def offer(self, session_id: str, frame: FrameIn) -> bool:
        """Live frames go to the node that runs the session (a WebRTC peer's media reaches
        its owner directly); elsewhere the session is not found."""
        return self.local.offer(session_id, frame)

    async def end(self, session_id: str, *, reason: str = "ended") -> SessionSummary:
        if self.local.holds(session_id):
            return await self._end_here(session_id, reason)

        async def here() -> SessionSummary:
            await self._resume_here(session_id)
            return await self._end_here(session_id, reason)

        answer = await self._relay_to_owner(session_id, "end", {"reason": reason}, fallback=here)
        return answer if isinstance(answer, SessionSummary) else summary_from_wire(answer)

    async def _end_here(self, session_id: str, reason: str) -> SessionSummary:
        summary = await self.local.end(session_id, reason=reason)
        lease = self._directory.held.get(session_id)
        if lease is not None:
            with contextlib.suppress(ClusterUnavailable):  # the upkeep gives it back later
                await self._release(lease)
        return summary

    async def info(self, session_id: str) -> SessionInfo:
        if self.local.holds(session_id):
            return self._mine(await self.local.info(session_id))

        async def stored() -> SessionInfo:
            info = await self.local.info(session_id)
            if info.state != "active":
                return info
            # Recorded as running, and nobody runs it: its owner died. Say so (as a takeover
            # would), so a client polling its session learns it ended: a WebRTC session,
            # whose media went to that node, is never resumed elsewhere.
            entry = await self._directory.lookup(session_id)
            if entry is None or entry.alive or entry.node == self.node:
                return info
            ended = await self.local.recover([entry.owner])
            log.info("node %s (life %d) gone: %d session(s) ended", entry.node, entry.life, ended)
            return await self.local.info(session_id)

        answer = await self._relay_to_owner(session_id, "info", {}, fallback=stored)
        return answer if isinstance(answer, SessionInfo) else info_from_wire(answer)

    async def live(self) -> list[SessionInfo]:
        """Every live session of the cluster, each with its node: this node's, and each
        other live node's as it answers (a node that does not answer in time is left out
        and logged; while Redis is away, this node's alone)."""
        mine = [self._mine(info) for info in await self.local.live()]
        try:
            await self._refresh_nodes()
        except ClusterUnavailable:
            return mine
        others = [n for n in self._nodes.values() if n.id != self.node]
        answers = await asyncio.gather(
            *(self._call(n, "live", {}) for n in others), return_exceptions=True
        )
        found = list(mine)
        for node, answer in zip(others, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("node %s did not list its sessions: %s", node.id, answer)
                continue
            try:
                found.extend(info_from_wire(item) for item in answer)
            except (RelayRefused, TypeError) as e:
                self.refusals.refuse("relay_malformed", f"node {node.id!r} listing: {e}")
        found.sort(key=lambda info: info.created_at or 0.0)
        return found

    def subscribe(
        self,
        pattern: str,
        *,
        maxlen: int | None = None,
        keep: Callable[[Message], bool] | None = None,
    ) -> Feed:
        if pattern.startswith("session/") or self.bus is None:
            return self.local.subscribe(pattern, maxlen=maxlen, keep=keep)
        return self.bus.subscribe(pattern, maxlen=maxlen, keep=keep)

    def publish(self, topic: str, payload: Any) -> int:
        if topic.startswith("session/") or self.bus is None:
            return self.local.publish(topic, payload)
        return self.bus.publish(topic, payload)

    def check_pipeline(self, specs: Sequence[ProcessorSpec], *, client: bool = False) -> None:
        self.local.check_pipeline(specs, client=client)

    def check_client(self, client: str | None) -> None:
        self.local.check_client(client)

    async def prepare(self, specs: Sequence[ProcessorSpec]) -> None:
        await self.local.prepare(specs)

    # -- Engine.IO sessions (seed 002's long-polling) -------------------------------------

    def engineio_sid(self) -> str:
        """A new Engine.IO sid, naming this node (:mod:`.engineio_route`)."""
        return self._sids.make(self.node, self._prefix)

    def _made(self, parts: SidParts) -> str | None:
        for node in self._nodes.values():
            if _id_prefix(node.id) == parts.prefix and self._sids.made_by(parts, node.id):
                return node.id
        return None

    async def engineio_owner(self, sid: str) -> str | None:
        """The live node that made ``sid`` (this node's id when this node did), ``None`` when
        it is gone or unknown; raises ``SidRefused`` for a malformed sid, or one that names a
        live node's prefix with a MAC none of those nodes made (both counted)."""
        try:
            parts = self._sids.read(sid)
        except SidRefused as e:
            self.refusals.refuse(e.reason, str(e))
            raise
        if parts.prefix == self._prefix and self._sids.made_by(parts, self.node):
            return self.node
        node = self._made(parts)
        if node is None and time.monotonic() - self._reread_at > NODES_REREAD_S:
            # A node that joined since the last heartbeat; read at most once a second, so
            # a flood of sids of unknown nodes costs Redis nothing more.
            self._reread_at = time.monotonic()
            with contextlib.suppress(ClusterUnavailable):
                await self._refresh_nodes()
            node = self._made(parts)
        if node is not None:
            return node
        if parts.prefix == self._prefix or any(_id_prefix(n) == parts.prefix for n in self._nodes):
            error = SidRefused("sid_forged", f"a sid node {parts.prefix!r} did not make: {sid!r}")
            self.refusals.refuse(error.reason, str(error))
            raise error
        self.counters.relayed("engineio", "gone")
        return None

    async def engineio_forward(
        self,
        node: str,
        method: str,
        query: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout_s: float,
    ) -> Forwarded | None:
        """An Engine.IO request answered by ``node``'s Engine.IO server; ``None`` when that
        node could not be reached, did not answer, or its relay refused the call."""
        assert self._client is not None
        info = self._nodes.get(node)
        if info is None:
            self.counters.relayed("engineio", "gone")
            return None
        try:
            answer = await self._client.forward(info, method, query, headers, body, timeout_s)
        except OwnerUnreachable as e:
            log.info("an Engine.IO request for node %s: %s", node, e)
            self._nodes.pop(node, None)
            self.counters.relayed("engineio", "unreachable")
            return None
        except ClusterUnavailable:
            self.counters.relayed("engineio", "error")
            return None
        self.counters.relayed("engineio", "ok" if answer.status == 200 else "error")
        return answer

    def _served_engineio(self) -> None:
        self.counters.served["engineio"] = self.counters.served.get("engineio", 0) + 1

    # -- the relay: calls other nodes make to this one -------------------------------------

    async def _serve(self, op: str, body: dict[str, Any]) -> Any:
        """One relayed call, answered from this node's own sessions only (never relayed
        again: two nodes with different views of the directory cannot bounce a call)."""
        if op not in _OPS:
            raise RelayRefused("relay_malformed", f"unknown operation {op!r}")
        self.counters.served[op] = self.counters.served.get(op, 0) + 1
        if op == "live":
            return [info_to_wire(self._mine(info)) for info in await self.local.live()]
        if op == "source":
            name, action = body.get("name"), body.get("action")
            if not isinstance(name, str) or action not in ("stop", "start"):
                raise RelayRefused("relay_malformed", f"source: {name!r} {action!r:.50}")
            if self.source_action is None:
                raise SourceNotFound(f"no source {name!r} on node {self.node!r}", field="name")
            return await self.source_action(name, action)
        sid = body.get("session_id")
        if not isinstance(sid, str) or not sid:
            raise RelayRefused("relay_malformed", f"{op}: no session_id")
        runs_here = self.local.holds(sid)
        holds_lease = sid in self._directory.held
        if op in ("attach", "attach_submit"):
            if not runs_here and not holds_lease:
                raise NotOwner(sid, self.node)
            frame_in = _frame_of(op, body) if op == "attach_submit" else None
            pipeline = body.get("pipeline")
            info = await self.local.attach(
                sid,
                transport=str(body.get("transport") or "cluster"),
                pipeline=pipeline if isinstance(pipeline, list) else None,
                client=body.get("client") if isinstance(body.get("client"), str) else None,
                create=bool(body.get("create", True)),
            )
            if frame_in is None:
                return info_to_wire(self._mine(info))
            out = await self.local.submit(info.id, frame_in)
            return {"info": info_to_wire(self._mine(info)), "frame": out.to_wire()}
        if not runs_here:
            if holds_lease:  # an entry left by a session that ended here: give it back
                with contextlib.suppress(ClusterUnavailable):
                    await self._release(self._directory.held[sid])
            raise NotOwner(sid, self.node)
        if op == "submit":
            return (await self.local.submit(sid, _frame_of(op, body))).to_wire()
        if op == "end":
            summary = await self._end_here(sid, str(body.get("reason") or "ended"))
            return summary_to_wire(summary)
        return info_to_wire(self._mine(await self.local.info(sid)))


def _frame_of(op: str, body: dict[str, Any]) -> FrameIn:
    """The frame a relayed ``op`` carries; a missing or unreadable one is refused."""
    frame = body.get("frame")
    if not isinstance(frame, dict):
        raise RelayRefused("relay_malformed", f"{op}: no frame")
    try:
        return FrameIn.from_wire(frame)
    except (KeyError, TypeError, ValueError) as e:
        raise RelayRefused("relay_malformed", f"{op}: a frame: {e!r:.200}") from None
