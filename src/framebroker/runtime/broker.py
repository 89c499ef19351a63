"""The async face of the core, shared by every transport of one server process.

The core is synchronous and knows nothing of event loops. The broker gives each session a
*lane*: the session's :class:`~framebroker.core.inbox.Inbox` plus at most one task pumping it
into a worker pool. So frames of one session run one at a time in arrival order, different
sessions run in parallel, and the event loop never runs decoding, tracking or drawing.
Blocking store calls go through the same pool.

A processor call that runs past ``processor_timeout_s`` (see :mod:`.watchdog`) cannot be
stopped, only given up on: the frames waiting on it, that one and those queued behind it, fail
with :class:`~framebroker.errors.ProcessorTimeout`, and the session refuses new frames with
the same error until the call returns (then it goes on) or the session is ended (then every
other processor's ``end`` runs, and the stuck one's is skipped and reported). It is not ended
on the spot, so its client sees why its frames are refused instead of a session that vanished.
The pool starts a thread in place of the lost one, so other sessions keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..core.bus import Bus, Message
from ..core.frame import Frame
from ..core.inbox import Backpressure, Inbox
from ..core.manager import ProcessorSpec, SessionManager, SessionPolicy
from ..core.pipeline import FrameResult, ProcessorCall
from ..core.session import Session, SessionSummary
from ..core.store import Owner, Store
from ..errors import CapacityExceeded, FrameRateExceeded, ProcessorTimeout, SessionNotFound
from ..logs import in_session, session_var
from ..plugins import ProcessorRegistry
from ..sessions import FrameIn, FrameOut, SessionInfo
from .feeds import BusFeed
from .lanes import Lane
from .memory import RssProbe
from .metrics import Metrics
from .model_lanes import LaneLimits, ModelLanes, Prediction, without
from .staged_pump import pump_staged
from .watchdog import Watchdog
from .workers import WorkerPool

__all__ = ["Broker", "BrokerConfig", "frame_out"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def frame_out(session_id: str, result: FrameResult) -> FrameOut:
    """The plain form of a core result; nothing is copied (the outputs are shared)."""
    frame = result.frame
    return FrameOut(
        session_id=session_id,
        index=frame.index,
        outputs=result.outputs,
        timings=result.timings,
        errors=result.errors,
        ran=result.ran,
        skipped=dict(result.skipped),
        dropped=result.dropped,
        detections=frame.detections,
        timestamp=frame.timestamp,
        meta=frame.meta,
    )


def _frame(frame: FrameIn) -> Frame:
    return Frame(
        source=frame.image,
        detections=frame.detections,
        meta=frame.meta,
        received_at=frame.received_at,
    )


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """``warm_up``: processor names whose ``warm_up`` runs before the broker serves.

    ``processor_timeout_s``: longest one processor call may take on a frame (see the module
    docstring). ``memory_sample_every``: measure resident-memory growth across every Nth call
    of each processor (see :mod:`.memory`); 0: never. ``parallel_frames``: how many frames
    of one session a :meth:`~framebroker.core.Pipeline.parallel` stage (a detector's) handles
    at once; two keeps both cores of a small machine busy with single-threaded inference.
    """

    max_workers: int = 4
    max_pending_frames: int = 64
    bus_queue: int = 64
    sweep_interval_s: float = 5.0
    default_pipeline: tuple[ProcessorSpec, ...] = ("bytetrack",)
    policy: SessionPolicy = field(default_factory=SessionPolicy)
    warm_up: tuple[str, ...] = ()
    processor_timeout_s: float = 10.0
    memory_sample_every: int = 16
    parallel_frames: int = 2
    lanes: LaneLimits = field(default_factory=LaneLimits)
    """Bounds on the per-processor lanes of ``newest`` sessions (see :mod:`.model_lanes`)."""
    owner_id: str = "local"
    """Who this process is to the store: its sessions carry this id and the epoch the store
    gives this start (see :mod:`framebroker.core.store`)."""
    checkpoint_every_s: float = 0.0
    """Snapshot every session that processed frames since its last snapshot this often
    (``wait`` and ``latest`` sessions), so that another process can resume it if this one
    dies; 0: only when the server stops (one process resumes its own sessions then)."""


class Broker:
    """Owns the session directory, the bus, the worker pool and the store of one process, and
    implements :class:`~framebroker.sessions.Sessions` over them.

    Methods that take a :class:`~framebroker.core.Session` or hand one out are the runtime's
    own; whatever serves clients uses the :class:`~framebroker.sessions.Sessions` ones.
    """

    def __init__(
        self,
        registry: ProcessorRegistry,
        store: Store | None = None,
        config: BrokerConfig | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self.metrics = Metrics(self._census)
        self.registry = registry
        self.store = store
        self.bus = Bus(self.config.bus_queue)
        self.manager = SessionManager(self._build_pipeline, self.config.policy)
        self.executor = WorkerPool(self.config.max_workers, thread_name_prefix="framebroker-worker")
        self.metrics.stuck_threads.set_function(lambda: self.executor.stuck)
        self._watchdog = Watchdog(self.executor, self.config.processor_timeout_s, self.metrics)
        self._probe = RssProbe.open(self.config.memory_sample_every, self.metrics.memory_grew)
        self._lanes: dict[str, Lane] = {}
        self._ending: dict[str, asyncio.Future[SessionSummary]] = {}
        """The ends under way, by session: a second end of a session waits for the first."""
        self._sweeper: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self.owner: Owner | None = None
        """This life of the process as the store names it, once :meth:`start` began it."""
        self.checkpoints = 0
        self.checkpoint_failures = 0
        self._closing = False
        self._attaching = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.warm_up:
            await self.run_blocking(self.registry.warm_up, self.config.warm_up)
        if self.store is not None:
            # A new life of this owner; its earlier lives are gone, and only their sessions
            # are ended (other owners sharing the database keep theirs).
            me = await self.run_blocking(self.store.begin, self.config.owner_id)
            self.owner = me
            n = await self.run_blocking(self.store.recover, [me.earlier])
            if n:
                log.info("marked %s sessions of a previous run as ended", n)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="framebroker-sweeper")
        if self.store is not None and self.config.checkpoint_every_s > 0:
            self._checkpointer = asyncio.create_task(
                self._checkpoint_forever(), name="framebroker-checkpoints"
            )

    async def recover(self, gone: Sequence[Owner], *, reason: str = "node_lost") -> int:
        """End, in the store, the sessions left active by owners that are gone (another
        process that died, whose sessions this one takes over); returns how many. Their
        snapshots stay, so each can still be resumed by :meth:`attach`."""
        if self.store is None or not gone:
            return 0
        store = self.store
        return await self.run_blocking(lambda: store.recover(list(gone), reason=reason))

    async def stop(self) -> None:
        """End every session, keeping each one's state so a client can resume it after a
        restart; then release the pool and the store."""
        self._closing = True
        for task in (self._sweeper, self._checkpointer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for sid in self.manager.ids():
            try:
                await self.end(sid, reason="server_stopped", keep_state=True)
            except Exception:
                log.exception("could not end session %s cleanly", sid)
        stuck = self.executor.stuck
        if stuck:
            log.warning(
                "%d worker thread(s) still inside a processor that timed out: not waiting",
                stuck,
            )
        self.executor.shutdown(wait=not stuck, cancel_futures=False)
        if self._probe is not None:
            self._probe.close()
        if self.store is not None:
            self.store.close()

    @property
    def closing(self) -> bool:
        """True once :meth:`stop` has begun."""
        return self._closing

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the worker pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    @property
    def stuck_threads(self) -> int:
        """Worker threads inside a processor call that timed out and has not returned."""
        return self.executor.stuck

    @property
    def busy_sessions(self) -> set[str]:
        """Sessions with frames to process; one stuck in a processor is not busy but blocked,
        and may expire when idle."""
        return {
            sid
            for sid, lane in self._lanes.items()
            if (lane.task is not None and not lane.stuck)
            or lane.inbox
            or (lane.models is not None and not lane.models.idle())
        }

    def _census(self) -> list[tuple[str, int]]:
        return [(lane.session.transport, len(lane.inbox)) for lane in list(self._lanes.values())]

    # -- sessions ------------------------------------------------------------------------------

    def _build_pipeline(self, specs: Sequence[ProcessorSpec] | None) -> Any:
        pipeline = self.registry.pipeline(
            list(specs) if specs is not None else list(self.config.default_pipeline)
        )
        pipeline.probe = self._probe
        return pipeline

    def _register(
        self, session: Session, specs: Sequence[ProcessorSpec] | None, *, record: bool = True
    ) -> Session:
        capacity = (
            self.config.max_pending_frames if session.backpressure is Backpressure.WAIT else 1
        )
        chosen = list(specs) if specs is not None else list(self.config.default_pipeline)
        lane = Lane(session, Inbox(session.backpressure, capacity), chosen)
        if session.backpressure is Backpressure.NEWEST:
            lane.models = ModelLanes(
                session,
                self._watchdog,
                self.config.lanes,
                on_prediction=functools.partial(self._predicted, session.id),
                metrics=self.metrics,
            )
            lane.models.start()
        self._lanes[session.id] = lane
        if record:
            self.metrics.session_started(session.transport)
        if record and self.store is not None:
            info = session.info()
            store = self.store
            self.executor.submit(store.session_started, session.id, info)
        return session

    async def create(
        self,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        session_id: str | None = None,
        backpressure: Backpressure = Backpressure.WAIT,
        client: str | None = None,
    ) -> SessionInfo:
        """A new session; building its pipeline (which may load models) runs in the pool.

        ``client`` (the creator's address) holds one of its ``max_sessions_per_client``
        slots until the session ends; see :meth:`SessionManager.create` for what it raises.
        """
        await self._store_answers()
        session = await self.run_blocking(
            lambda: self.manager.create(
                session_id=session_id,
                transport=transport,
                pipeline=pipeline,
                backpressure=backpressure,
                client=client,
            )
        )
        return self._info(self._register(session, pipeline))

    async def _store_answers(self) -> None:
        """Raise :class:`~framebroker.errors.StoreUnavailable` (503) while the store cannot
        be written: a session is created or ended only when its record can be kept."""
        if self.store is not None:
            await self.run_blocking(self.store.ping)

    async def attach(
        self,
        session_id: str,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
        create: bool = True,
    ) -> SessionInfo:
        """The live session with this id; else the suspended one resumed (then held by
        ``client``); else, with ``create``, a new one (held by ``client``, as with
        :meth:`create`); else :class:`~framebroker.errors.SessionNotFound`.

        This is the tracking API's "create or attach", extended across restarts: a session the
        server suspended when it stopped carries on with the same tracks.
        """
        lane = self._lanes.get(session_id)
        if lane is not None:
            return self._info(lane.session)
        if create:
            self.manager.check_id(session_id)
        async with self._attaching:
            lane = self._lanes.get(session_id)
            if lane is not None:
                return self._info(lane.session)
            resumed = await self._resume(session_id, client=client)
            if resumed is not None:
                return self._info(resumed)
            if not create:
                raise SessionNotFound(session_id, field="session_id")
            await self._store_answers()
            session = await self.run_blocking(
                lambda: self.manager.create(
                    session_id=session_id, transport=transport, pipeline=pipeline, client=client
                )
            )
            return self._info(self._register(session, pipeline))

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
        info = await self.attach(
            session_id, transport=transport, pipeline=pipeline, client=client, create=create
        )
        return info, await self.submit(info.id, frame)

    async def _resume(self, session_id: str, *, client: str | None = None) -> Session | None:
        """Bring back a session suspended by a server stop, exactly where it was; ``client``
        holds it from now on."""
        if self.store is None:
            return None
        self.manager.check_client(client)  # before the store hands the saved state over
        saved = await self.run_blocking(self.store.session_resumed, session_id)
        if saved is None:
            return None

        def rebuild() -> Session:
            session = self.manager.create(
                session_id=session_id,
                transport=str(saved["transport"]),
                pipeline=saved["pipeline"],
                backpressure=Backpressure(saved["backpressure"]),
                client=client,
            )
            session.restore(saved["state"])
            return session

        session = await self.run_blocking(rebuild)
        log.info("session %s resumed at frame %d", session_id, saved["state"]["next_index"])
        return self._register(session, saved["pipeline"], record=False)

    def get(self, session_id: str) -> Session:
        """The live :class:`~framebroker.core.Session` itself: for the runtime and tests,
        never for what serves clients (they use :meth:`info`)."""
        return self.manager.get(session_id)

    def _info(self, session: Session) -> SessionInfo:
        info = session.info()
        lane = self._lanes.get(session.id)
        return SessionInfo(
            id=session.id,
            state="active",
            transport=session.transport,
            pipeline=info["pipeline"],
            settings=info["settings"],
            created_at=info["created_at"],
            stats=info["stats"],
            backpressure=info["backpressure"],
            idle_s=info["idle_s"],
            stage_widths=tuple(self.stage_widths(session)),
            queue=lane.inbox.capacity if lane is not None else 0,
        )

    async def info(self, session_id: str) -> SessionInfo:
        """The live session, else the stored record of an ended one."""
        lane = self._lanes.get(session_id)
        if lane is not None:
            return self._info(lane.session)
        record = None
        if self.store is not None:
            record = await self.run_blocking(self.store.get_session, session_id)
        if record is None:
            raise SessionNotFound(session_id, field="session_id")
        summary = record.get("summary") or {}
        state = record.get("state", "ended")
        return SessionInfo(
            id=str(record["id"]),
            state="active" if state == "active" else "ended",
            transport=record.get("transport"),
            pipeline=list(record.get("pipeline") or []),
            settings=list((record.get("info") or {}).get("settings") or []),
            created_at=record.get("created_at"),
            stats=summary.get("stats", {}),
            summary=summary or None,
        )

    async def live(self) -> list[SessionInfo]:
        """The live sessions, oldest first."""
        return [self._info(session) for session in self.manager.sessions()]

    @property
    def session_count(self) -> int:
        return len(self.manager)

    def holds(self, session_id: str) -> bool:
        """Whether the session is live in this process (a cluster routes by it)."""
        lane = self._lanes.get(session_id)
        return lane is not None and not lane.session.ended

    def subscribe(
        self,
        pattern: str,
        *,
        maxlen: int | None = None,
        keep: Callable[[Message], bool] | None = None,
    ) -> BusFeed:
        return BusFeed(self.bus, pattern, maxlen=maxlen, keep=keep)

    def publish(self, topic: str, payload: Any) -> int:
        return self.bus.publish(topic, payload)

    def check_pipeline(self, specs: Sequence[ProcessorSpec], *, client: bool = False) -> None:
        """Raise ``ProcessorLoadError`` unless ``specs`` builds (the server's own pipelines,
        checked at start-up); with ``client``, unless a client may ask for it: registered
        names only, no configuration-only parameter (checked without building)."""
        if client:
            self.registry.check_request(specs)
        else:
            self.registry.pipeline(specs)

    def check_client(self, client: str | None) -> None:
        self.manager.check_client(client)

    async def prepare(self, specs: Sequence[ProcessorSpec]) -> None:
        names = [spec if isinstance(spec, str) else str(spec.get("name")) for spec in specs]
        registry = self.registry
        await self.run_blocking(lambda: [registry.resolve(n) for n in names])
        await self.run_blocking(registry.warm_up, names)

    async def end(
        self, session_id: str, *, reason: str = "ended", keep_state: bool = False
    ) -> SessionSummary:
        """Take the session out, let its queued frames finish, run ``end``, persist.

        With ``keep_state`` the session's state is stored too, so :meth:`attach` can bring it
        back (a server stop suspends sessions this way). A session stuck in a processor call
        is not waited for: it ends without that processor's ``end`` (reported in the
        summary's ``errors``), and without its state.

        Two ends of one session at once (a ``DELETE`` while its WebRTC peer notices it is
        going and ends it too) are one end: the second waits for the first and gets its
        summary (or its error).
        """
        ending = self._ending.get(session_id)
        if ending is not None:
            await asyncio.wait({ending})  # a cancel of this call leaves the first end be
            if not ending.cancelled():
                return ending.result()
            # The first end was cut short: this one ends the session.
            return await self.end(session_id, reason=reason, keep_state=keep_state)
        self.manager.get(session_id)  # SessionNotFound first
        ending = asyncio.get_running_loop().create_future()
        self._ending[session_id] = ending
        try:
            summary = await self._end_now(session_id, reason=reason, keep_state=keep_state)
        except Exception as exc:
            ending.set_exception(exc)
            ending.exception()  # retrieved: nobody else may be waiting for it
            raise
        except BaseException:
            ending.cancel()
            raise
        else:
            ending.set_result(summary)
            return summary
        finally:
            del self._ending[session_id]

    async def _end_now(self, session_id: str, *, reason: str, keep_state: bool) -> SessionSummary:
        loop = asyncio.get_running_loop()
        # While the database is away the session stays, and its client is told 503.
        await self._store_answers()
        lane = self._lanes.get(session_id)
        if lane is not None and lane.models is not None:
            # Live frames stop first; a model still busy after end_timeout_s is not waited
            # for, and its end() is not called (the summary's errors say so).
            hung = await lane.models.stop()
            if hung:
                lane.session.pipeline = without(lane.session.pipeline, hung)
        session = self.manager.remove(session_id)
        lane = self._lanes.pop(session_id, None)
        if lane is not None and lane.task is not None:
            await self._settle(lane)
        stuck = lane is not None and bool(lane.stuck)
        if stuck:
            # The stuck call may never return: end the others without it, and without a
            # snapshot (its processor's state is being changed by that call).
            hung = session.pipeline.abandon()
            log.warning(
                "session %s ends with %s still running: %s not called",
                session_id,
                ", ".join(hung),
                "its end() is" if len(hung) == 1 else "their end() are",
            )
        saved = None
        if keep_state and lane is not None and not stuck:
            saved = {
                "transport": session.transport,
                "pipeline": lane.specs,
                "backpressure": session.backpressure.value,
                "state": await loop.run_in_executor(
                    self.executor, in_session(session_id, session.snapshot)
                ),
            }
        summary = await loop.run_in_executor(
            self.executor, in_session(session_id, session.end, reason)
        )
        if self.store is not None:
            try:
                await self.run_blocking(self.store.session_ended, summary)
                if saved is not None:
                    await self.run_blocking(self.store.save_snapshot, session_id, saved)
            except Exception:
                log.exception("could not persist the end of session %s", session_id)
        self.bus.publish(f"session/{session_id}/ended", summary.to_dict())
        log.info("session %s ended (%s)", session_id, reason)
        return summary

    async def _settle(self, lane: Lane) -> None:
        """Until the lane's pump is done, or one of its calls is stuck (it may never be)."""
        task = lane.task
        if task is None or lane.stuck:
            return
        stalled = asyncio.ensure_future(lane.stalled.wait())
        try:
            await asyncio.wait({task, stalled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stalled.cancel()
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a pump that failed was logged by it already

    # -- frames ----------------------------------------------------------------------------

    async def submit(self, session_id: str, frame: FrameIn) -> FrameOut:
        """Queue ``frame`` on its session and wait for its result.

        Under ``latest`` backpressure a frame overtaken by a newer one resolves at once with
        ``dropped=True``. Raises :class:`~framebroker.errors.CapacityExceeded` when a ``wait``
        session already has its limit of frames queued, and
        :class:`~framebroker.errors.FrameRateExceeded` when the frame arrived over the
        session's ``max_fps_per_session``; both are counted as dropped. Raises
        :class:`~framebroker.errors.ProcessorTimeout` when a processor overran its time on
        this frame or on one before it, and for every frame sent while that call has not
        returned (counted as failed).
        """
        lane = self._lanes.get(session_id)
        if lane is None or lane.session.ended:
            raise SessionNotFound(session_id)
        session = lane.session
        if lane.stuck:
            self.metrics.frame_received(session.transport)
            self.metrics.frame_failed(session.transport)
            raise self._blocked(lane)
        session.touch()
        self.metrics.frame_received(session.transport)
        try:
            if not frame.control:
                session.admit(frame.received_at)
        except FrameRateExceeded:
            self.metrics.frames_dropped(session.transport, reason="rate_limited")
            raise
        fut: asyncio.Future[FrameResult] = asyncio.get_running_loop().create_future()
        try:
            overtaken = lane.inbox.offer((_frame(frame), fut))
        except CapacityExceeded:
            self.metrics.frames_dropped(session.transport, reason="queue_full")
            raise
        lane.arrived.set()
        for old_frame, old_fut in overtaken:
            session.count_dropped()
            self.metrics.frames_dropped(session.transport)
            if not old_fut.done():
                old_fut.set_result(FrameResult(old_frame, dropped=True))
        if lane.task is None:
            lane.task = asyncio.create_task(self._pump(lane), name=f"lane-{session.id}")
        return frame_out(session_id, await fut)

    def offer(self, session_id: str, frame: FrameIn) -> bool:
        """Hand a live frame to every processor of a ``newest`` session, each taking the newest
        frame it can keep up with; never waits. Each answer is published on
        ``session/<id>/prediction``. Returns ``False`` for a frame over the session's frame
        rate (dropped, counted). Raises :class:`~framebroker.errors.SessionNotFound`, and
        ``ValueError`` for a session of another policy."""
        lane = self._lanes.get(session_id)
        if lane is None or lane.session.ended:
            raise SessionNotFound(session_id)
        if lane.models is None:
            raise ValueError(f"session {session_id!r} takes frames by submit, not offer")
        if lane.models.closing:
            # Being ended (its live frames stop first, while its models finish): to the
            # caller it is gone, as it will be once the end is done.
            raise SessionNotFound(session_id)
        return lane.models.offer(_frame(frame))

    def _predicted(self, session_id: str, prediction: Prediction) -> None:
        lane = self._lanes.get(session_id)
        disabled = sorted(lane.models.disabled) if lane and lane.models else []
        frame = prediction.frame
        self.bus.publish(
            f"session/{session_id}/prediction",
            {
                "model": prediction.model,
                "frame": frame.index,
                "meta": frame.meta,
                "outputs": prediction.outputs,
                "merged": prediction.merged,
                "error": prediction.error,
                "latency_s": prediction.latency_s,
                "disabled": disabled,
            },
        )

    async def _pump(self, lane: Lane, *, checkpoint: bool = False) -> None:
        """Process what the lane's inbox holds; with ``checkpoint``, snapshot the session
        first (no frame is in the pipeline then: this task is the only one running it)."""
        session_var.set(lane.session.id)  # this task's context: its log lines name the session
        try:
            if checkpoint:
                await self._checkpoint(lane)
            if not lane.inbox:
                return
            if lane.session.pipeline.stages == 1:
                await self._pump_whole(lane)
            else:
                widths = self.stage_widths(lane.session)
                await pump_staged(
                    lane, widths, self.executor, self._watched, self._failed, self._deliver
                )
        finally:
            lane.task = None

    async def _pump_whole(self, lane: Lane) -> None:
        session = lane.session
        while (item := lane.inbox.take()) is not None:
            frame, fut = item
            lane.pending.add(fut)
            try:
                result = await self._watched(lane, 0, session.process, frame)
            except Exception as exc:
                self._failed(lane, fut, exc)
                continue
            self._deliver(lane, fut, result)

    def frames_in_flight(self, session: Session) -> int:
        """How many frames the session's pipeline works on at once: one per stage, and
        ``parallel_frames`` in a parallel stage (see :mod:`.staged_pump`)."""
        return sum(self.stage_widths(session))

    def stage_widths(self, session: Session) -> list[int]:
        """Per pipeline stage, how many frames it works on at once."""
        pipeline = session.pipeline
        if pipeline.stages == 1:
            return [1]
        wide = max(1, self.config.parallel_frames)
        return [wide if pipeline.parallel(k) else 1 for k in range(pipeline.stages)]

    async def _watched(
        self,
        lane: Lane,
        stage: int,
        fn: Callable[..., T],
        *args: Any,
        frame: FrameResult | None = None,
    ) -> T:
        """``fn(*args)`` in the pool, running ``stage`` of the lane's pipeline (on the frame of
        ``frame``, where a parallel stage may run several), timed."""
        session = lane.session
        return await self._watchdog.call(
            in_session(session.id, fn, *args),
            session.pipeline,
            stage,
            frame=None if frame is None else frame.frame.index,
            on_stuck=functools.partial(self._stuck, lane),
            on_return=functools.partial(self._unstuck, lane),
        )

    def _stuck(self, lane: Lane, call: ProcessorCall) -> None:
        session = lane.session
        lane.stuck[call.stage, call.frame] = call
        lane.stalled.set()
        limit = self._watchdog.timeout_s
        log.error(
            "session %s: processor %s has run for over %g s on frame %d; its worker thread is "
            "lost until it returns, and the session refuses frames meanwhile",
            session.id,
            call.processor,
            limit,
            call.frame,
        )
        waiting = [*lane.pending, *(fut for _, fut in lane.inbox.clear())]
        lane.pending.clear()
        for fut in waiting:
            if not fut.done():
                self.metrics.frame_failed(session.transport)
                fut.set_exception(
                    ProcessorTimeout(
                        f"processor {call.processor!r} took longer than {limit:g} s on frame "
                        f"{call.frame} of session {session.id!r}; the session refuses frames "
                        "until it returns or the session is ended",
                        processor=call.processor,
                        session_id=session.id,
                        timeout_s=limit,
                    )
                )

    def _unstuck(self, lane: Lane, call: ProcessorCall, seconds: float) -> None:
        lane.stuck.pop((call.stage, call.frame), None)
        if not lane.stuck:
            lane.stalled.clear()
        log.warning(
            "session %s: processor %s returned after %.1f s on frame %d; %s",
            lane.session.id,
            call.processor,
            seconds,
            call.frame,
            "the session had ended" if lane.session.ended else "the session takes frames again",
        )

    def _blocked(self, lane: Lane) -> ProcessorTimeout:
        """The error for a frame sent to a session with a stuck processor call."""
        call = min(lane.stuck.values(), key=lambda c: c.started)
        limit = self._watchdog.timeout_s
        return ProcessorTimeout(
            f"session {lane.session.id!r} is blocked: processor {call.processor!r} has been "
            f"running for {time.perf_counter() - call.started:.1f} s on frame {call.frame} "
            f"(limit {limit:g} s); frames are refused until it returns or the session is ended",
            processor=call.processor,
            session_id=lane.session.id,
            timeout_s=limit,
        )

    def _failed(self, lane: Lane, fut: asyncio.Future[FrameResult], exc: Exception) -> None:
        lane.pending.discard(fut)
        if fut.done() and not fut.cancelled():
            return  # answered already: it timed out
        session = lane.session
        log.error("session %s failed on a frame", session.id, exc_info=exc)
        self.metrics.frame_failed(session.transport)
        if not fut.done():
            fut.set_exception(exc)

    def _deliver(self, lane: Lane, fut: asyncio.Future[FrameResult], result: FrameResult) -> None:
        lane.pending.discard(fut)
        if fut.done() and not fut.cancelled():
            return  # a late answer to a frame that timed out: its client was told already
        session = lane.session
        self.metrics.frame_processed(session.transport, result)
        if not fut.done():
            fut.set_result(result)
        topic = f"session/{session.id}/result"
        if self.bus.has_subscribers(topic):
            self.bus.publish(topic, frame_out(session.id, result))

    # -- checkpoints -----------------------------------------------------------------------

    async def _checkpoint(self, lane: Lane) -> None:
        """Store the session's state as its snapshot, for another process to resume it from
        should this one die. Called only from the lane's own task, between frames."""
        session, store = lane.session, self.store
        done = session.stats.frames_processed
        if store is None or session.ended or lane.stuck or done == lane.checkpointed:
            return
        try:
            state = await self.run_blocking(in_session(session.id, session.snapshot))
            saved = {
                "transport": session.transport,
                "pipeline": lane.specs,
                "backpressure": session.backpressure.value,
                "state": state,
            }
            await self.run_blocking(store.save_snapshot, session.id, saved)
        except Exception as exc:
            # The session goes on; a store that is away, or a session another owner holds
            # now (StaleOwner), is logged once per session.
            self.checkpoint_failures += 1
            if lane.checkpointed >= 0:
                log.warning("session %s: snapshot not stored: %s", session.id, exc)
            lane.checkpointed = -1
            return
        lane.checkpointed = done
        self.checkpoints += 1

    def _checkpoint_due(self) -> list[Lane]:
        return [
            lane
            for lane in self._lanes.values()
            if lane.task is None
            and lane.models is None
            and not lane.stuck
            and lane.session.stats.frames_processed != lane.checkpointed
        ]

    async def _checkpoint_forever(self) -> None:
        """Every ``checkpoint_every_s``, snapshot each idle session that processed frames
        since its last snapshot, as its lane's task (frames that arrive meanwhile wait for
        it, then are pumped by the same task)."""
        while True:
            await asyncio.sleep(self.config.checkpoint_every_s)
            for lane in self._checkpoint_due():
                if lane.task is None and lane.session.id in self._lanes:
                    lane.task = asyncio.create_task(
                        self._pump(lane, checkpoint=True), name=f"checkpoint-{lane.session.id}"
                    )

    # -- housekeeping ----------------------------------------------------------------------

    async def expire_idle(self) -> list[str]:
        """End sessions idle past the policy's timeout; returns their ids."""
        ended = []
        for sid in self.manager.idle(busy=self.busy_sessions):
            with contextlib.suppress(SessionNotFound):  # ended meanwhile by its client
                await self.end(sid, reason="idle")
                ended.append(sid)
        return ended

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.expire_idle()
            except Exception:
                log.exception("idle-session sweep failed")
