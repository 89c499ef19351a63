"""The async face of the core, shared by every transport of one server process.

The core is synchronous and knows nothing of event loops. The broker gives each session a
*lane*: the session's :class:`~framebroker.core.inbox.Inbox` plus at most one task pumping it
into a worker pool. So frames of one session run one at a time in arrival order, different
sessions run in parallel, and the event loop never runs decoding, tracking or drawing.
Blocking store calls go through the same pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..core.bus import Bus
from ..core.frame import Frame
from ..core.inbox import Backpressure, Inbox
from ..core.manager import ProcessorSpec, SessionManager, SessionPolicy
from ..core.pipeline import FrameResult
from ..core.session import Session, SessionSummary
from ..core.store import Store
from ..errors import CapacityExceeded, SessionNotFound
from ..logs import in_session, session_var
from ..plugins import ProcessorRegistry
from .metrics import Metrics

__all__ = ["Broker", "BrokerConfig"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_Item = tuple[Frame, "asyncio.Future[FrameResult]"]


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """``warm_up``: processor names whose ``warm_up`` runs before the broker serves."""

    max_workers: int = 4
    max_pending_frames: int = 64
    bus_queue: int = 64
    sweep_interval_s: float = 5.0
    default_pipeline: tuple[ProcessorSpec, ...] = ("bytetrack",)
    policy: SessionPolicy = field(default_factory=SessionPolicy)
    warm_up: tuple[str, ...] = ()


@dataclass(eq=False)
class _Lane:
    session: Session
    inbox: Inbox[_Item]
    specs: list[ProcessorSpec]
    task: asyncio.Task[None] | None = None


class Broker:
    """Owns the session directory, the bus, the worker pool and the store of one process."""

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
        self.executor = ThreadPoolExecutor(
            max_workers=self.config.max_workers, thread_name_prefix="framebroker-worker"
        )
        self._lanes: dict[str, _Lane] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._attaching = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.warm_up:
            await self.run_blocking(self.registry.warm_up, self.config.warm_up)
        if self.store is not None:
            recover = getattr(self.store, "recover", None)
            if callable(recover):
                n = await self.run_blocking(recover)
                if n:
                    log.info("marked %s sessions of a previous run as ended", n)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="framebroker-sweeper")

    async def stop(self) -> None:
        """End every session, keeping each one's state so a client can resume it after a
        restart; then release the pool and the store."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for sid in self.manager.ids():
            try:
                await self.end_session(sid, reason="server_stopped", keep_state=True)
            except Exception:
                log.exception("could not end session %s cleanly", sid)
        self.executor.shutdown(wait=True, cancel_futures=False)
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
    def busy_sessions(self) -> set[str]:
        return {sid for sid, lane in self._lanes.items() if lane.task is not None or lane.inbox}

    def _census(self) -> list[tuple[str, int]]:
        return [(lane.session.transport, len(lane.inbox)) for lane in list(self._lanes.values())]

    # -- sessions ------------------------------------------------------------------------------

    def _build_pipeline(self, specs: Sequence[ProcessorSpec] | None) -> Any:
        return self.registry.pipeline(
            list(specs) if specs is not None else list(self.config.default_pipeline)
        )

    def _register(
        self, session: Session, specs: Sequence[ProcessorSpec] | None, *, record: bool = True
    ) -> Session:
        capacity = (
            self.config.max_pending_frames if session.backpressure is Backpressure.WAIT else 1
        )
        chosen = list(specs) if specs is not None else list(self.config.default_pipeline)
        self._lanes[session.id] = _Lane(session, Inbox(session.backpressure, capacity), chosen)
        if record:
            self.metrics.session_started(session.transport)
        if record and self.store is not None:
            info = session.info()
            store = self.store
            self.executor.submit(store.session_started, session.id, info)
        return session

    async def create_session(
        self,
        *,
        session_id: str | None = None,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        backpressure: Backpressure = Backpressure.WAIT,
    ) -> Session:
        """A new session; building its pipeline (which may load models) runs in the pool."""
        session = await self.run_blocking(
            lambda: self.manager.create(
                session_id=session_id,
                transport=transport,
                pipeline=pipeline,
                backpressure=backpressure,
            )
        )
        return self._register(session, pipeline)

    async def attach(
        self,
        session_id: str,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
    ) -> Session:
        """The live session with this id; else the suspended one resumed; else a new one.

        This is seed 000's "create or attach", extended across restarts: a session the server
        suspended when it stopped carries on with the same tracks.
        """
        lane = self._lanes.get(session_id)
        if lane is not None:
            return lane.session
        self.manager.check_id(session_id)
        async with self._attaching:
            lane = self._lanes.get(session_id)
            if lane is not None:
                return lane.session
            resumed = await self.resume(session_id)
            if resumed is not None:
                return resumed
            session = await self.run_blocking(
                lambda: self.manager.create(
                    session_id=session_id, transport=transport, pipeline=pipeline
                )
            )
            return self._register(session, pipeline)

    async def live_or_resumed(self, session_id: str) -> Session:
        """The live session with this id, or the suspended one resumed; else
        :class:`~framebroker.errors.SessionNotFound`."""
        lane = self._lanes.get(session_id)
        if lane is not None:
            return lane.session
        async with self._attaching:
            lane = self._lanes.get(session_id)
            if lane is not None:
                return lane.session
            resumed = await self.resume(session_id)
        if resumed is None:
            raise SessionNotFound(session_id, field="session_id")
        return resumed

    async def resume(self, session_id: str) -> Session | None:
        """Bring back a session suspended by a server stop, exactly where it was."""
        if self.store is None:
            return None
        saved = await self.run_blocking(self.store.session_resumed, session_id)
        if saved is None:
            return None

        def rebuild() -> Session:
            session = self.manager.create(
                session_id=session_id,
                transport=str(saved["transport"]),
                pipeline=saved["pipeline"],
                backpressure=Backpressure(saved["backpressure"]),
            )
            session.restore(saved["state"])
            return session

        session = await self.run_blocking(rebuild)
        log.info("session %s resumed at frame %d", session_id, saved["state"]["next_index"])
        return self._register(session, saved["pipeline"], record=False)

    def get(self, session_id: str) -> Session:
        return self.manager.get(session_id)

    async def end_session(
        self, session_id: str, *, reason: str = "ended", keep_state: bool = False
    ) -> SessionSummary:
        """Take the session out, let its queued frames finish, run ``end``, persist.

        With ``keep_state`` the session's state is stored too, so :meth:`resume` can bring it
        back (a server stop suspends sessions this way).
        """
        loop = asyncio.get_running_loop()
        session = self.manager.remove(session_id)
        lane = self._lanes.pop(session_id, None)
        if lane is not None and lane.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(lane.task)
        saved = None
        if keep_state and lane is not None:
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

    # -- frames ----------------------------------------------------------------------------

    async def submit(self, session: Session, frame: Frame) -> FrameResult:
        """Queue ``frame`` on its session and wait for its result.

        Under ``latest`` backpressure a frame overtaken by a newer one resolves at once with
        ``dropped=True``. Raises :class:`~framebroker.errors.CapacityExceeded` when a ``wait``
        session already has its limit of frames queued.
        """
        lane = self._lanes.get(session.id)
        if lane is None or session.ended:
            raise SessionNotFound(session.id)
        session.touch()
        self.metrics.frame_received(session.transport)
        fut: asyncio.Future[FrameResult] = asyncio.get_running_loop().create_future()
        try:
            overtaken = lane.inbox.offer((frame, fut))
        except CapacityExceeded:
            self.metrics.frames_dropped(session.transport)
            raise
        for old_frame, old_fut in overtaken:
            session.count_dropped()
            self.metrics.frames_dropped(session.transport)
            if not old_fut.done():
                old_fut.set_result(FrameResult(old_frame, dropped=True))
        if lane.task is None:
            lane.task = asyncio.create_task(self._pump(lane), name=f"lane-{session.id}")
        return await fut

    async def _pump(self, lane: _Lane) -> None:
        session_var.set(lane.session.id)  # this task's context: its log lines name the session
        try:
            if lane.session.pipeline.stages == 1:
                await self._pump_whole(lane)
            else:
                await self._pump_staged(lane)
        finally:
            lane.task = None

    async def _pump_whole(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        session = lane.session
        while (item := lane.inbox.take()) is not None:
            frame, fut = item
            try:
                result = await loop.run_in_executor(
                    self.executor, in_session(session.id, session.process, frame)
                )
            except Exception as exc:
                self._failed(session, fut, exc)
                continue
            self._deliver(session, fut, result)

    async def _pump_staged(self, lane: _Lane) -> None:
        """Stage *k + 1* of frame *n* runs while stage *k* takes frame *n + 1*.

        One task per later stage, fed through a one-place queue, so frames stay in order and
        a slow later stage holds back the earlier ones instead of piling frames up. The pump
        ends only once every stage is idle and the inbox is still empty, with no ``await``
        between that check and the end (a frame submitted meanwhile starts a new pump).
        """
        loop = asyncio.get_running_loop()
        session = lane.session
        n = session.pipeline.stages
        hand: list[asyncio.Queue[tuple[FrameResult, asyncio.Future[FrameResult]]]] = [
            asyncio.Queue(maxsize=1) for _ in range(n - 1)
        ]

        async def later(stage: int) -> None:
            source = hand[stage - 1]
            while True:
                result, fut = await source.get()
                try:
                    await loop.run_in_executor(
                        self.executor, in_session(session.id, session.process_stage, stage, result)
                    )
                    if stage < n - 1:
                        await hand[stage].put((result, fut))
                    else:
                        self._deliver(session, fut, result)
                except Exception as exc:
                    self._failed(session, fut, exc)
                finally:
                    source.task_done()

        workers = [asyncio.create_task(later(k)) for k in range(1, n)]
        try:
            while True:
                item = lane.inbox.take()
                if item is None:
                    for queue in hand:
                        await queue.join()
                    item = lane.inbox.take()
                    if item is None:
                        return
                frame, fut = item
                try:
                    result = await loop.run_in_executor(
                        self.executor, in_session(session.id, session.begin, frame)
                    )
                    await loop.run_in_executor(
                        self.executor, in_session(session.id, session.process_stage, 0, result)
                    )
                except Exception as exc:
                    self._failed(session, fut, exc)
                    continue
                await hand[0].put((result, fut))
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _failed(self, session: Session, fut: asyncio.Future[FrameResult], exc: Exception) -> None:
        log.error("session %s failed on a frame", session.id, exc_info=exc)
        self.metrics.frame_failed(session.transport)
        if not fut.done():
            fut.set_exception(exc)

    def _deliver(
        self, session: Session, fut: asyncio.Future[FrameResult], result: FrameResult
    ) -> None:
        self.metrics.frame_processed(session.transport, result)
        if not fut.done():
            fut.set_result(result)
        topic = f"session/{session.id}/result"
        if self.bus.has_subscribers(topic):
            self.bus.publish(topic, result)

    # -- housekeeping ----------------------------------------------------------------------

    async def expire_idle(self) -> list[str]:
        """End sessions idle past the policy's timeout; returns their ids."""
        ended = []
        for sid in self.manager.idle(busy=self.busy_sessions):
            with contextlib.suppress(SessionNotFound):  # ended meanwhile by its client
                await self.end_session(sid, reason="idle")
                ended.append(sid)
        return ended

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.expire_idle()
            except Exception:
                log.exception("idle-session sweep failed")
