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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..core.bus import Bus
from ..core.frame import Frame
from ..core.inbox import Backpressure, Inbox
from ..core.manager import ProcessorSpec, SessionManager, SessionPolicy
from ..core.pipeline import FrameResult, ProcessorCall
from ..core.session import Session, SessionSummary
from ..core.store import Store
from ..errors import CapacityExceeded, FrameRateExceeded, ProcessorTimeout, SessionNotFound
from ..logs import in_session, session_var
from ..plugins import ProcessorRegistry
from .memory import RssProbe
from .metrics import Metrics
from .watchdog import Watchdog
from .workers import WorkerPool

__all__ = ["Broker", "BrokerConfig"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_Item = tuple[Frame, "asyncio.Future[FrameResult]"]


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


@dataclass(eq=False)
class _Lane:
    """``pending``: frames taken from the inbox and not answered yet; ``stuck``: per stage,
    the processor call that overran and has not returned; ``stalled`` is set meanwhile."""

    session: Session
    inbox: Inbox[_Item]
    specs: list[ProcessorSpec]
    task: asyncio.Task[None] | None = None
    pending: set[asyncio.Future[FrameResult]] = field(default_factory=set)
    stuck: dict[tuple[int, int], ProcessorCall] = field(default_factory=dict)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


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
        self.executor = WorkerPool(self.config.max_workers, thread_name_prefix="framebroker-worker")
        self.metrics.stuck_threads.set_function(lambda: self.executor.stuck)
        self._watchdog = Watchdog(self.executor, self.config.processor_timeout_s, self.metrics)
        self._probe = RssProbe.open(self.config.memory_sample_every, self.metrics.memory_grew)
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
            if (lane.task is not None and not lane.stuck) or lane.inbox
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
        client: str | None = None,
    ) -> Session:
        """A new session; building its pipeline (which may load models) runs in the pool.

        ``client`` (the creator's address) holds one of its ``max_sessions_per_client``
        slots until the session ends; see :meth:`SessionManager.create` for what it raises.
        """
        session = await self.run_blocking(
            lambda: self.manager.create(
                session_id=session_id,
                transport=transport,
                pipeline=pipeline,
                backpressure=backpressure,
                client=client,
            )
        )
        return self._register(session, pipeline)

    async def attach(
        self,
        session_id: str,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
    ) -> Session:
        """The live session with this id; else the suspended one resumed; else a new one
        (held by ``client``, as with :meth:`create_session`).

        This is the tracking API's "create or attach", extended across restarts: a session the
        server suspended when it stopped carries on with the same tracks.
        """
        lane = self._lanes.get(session_id)
        if lane is not None:
            return lane.session
        self.manager.check_id(session_id)
        async with self._attaching:
            lane = self._lanes.get(session_id)
            if lane is not None:
                return lane.session
            resumed = await self.resume(session_id, client=client)
            if resumed is not None:
                return resumed
            session = await self.run_blocking(
                lambda: self.manager.create(
                    session_id=session_id, transport=transport, pipeline=pipeline, client=client
                )
            )
            return self._register(session, pipeline)

    async def live_or_resumed(self, session_id: str, *, client: str | None = None) -> Session:
        """The live session with this id, or the suspended one resumed (then held by
        ``client``); else :class:`~framebroker.errors.SessionNotFound`."""
        lane = self._lanes.get(session_id)
        if lane is not None:
            return lane.session
        async with self._attaching:
            lane = self._lanes.get(session_id)
            if lane is not None:
                return lane.session
            resumed = await self.resume(session_id, client=client)
        if resumed is None:
            raise SessionNotFound(session_id, field="session_id")
        return resumed

    async def resume(self, session_id: str, *, client: str | None = None) -> Session | None:
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
        return self.manager.get(session_id)

    async def end_session(
        self, session_id: str, *, reason: str = "ended", keep_state: bool = False
    ) -> SessionSummary:
        """Take the session out, let its queued frames finish, run ``end``, persist.

        With ``keep_state`` the session's state is stored too, so :meth:`resume` can bring it
        back (a server stop suspends sessions this way). A session stuck in a processor call
        is not waited for: it ends without that processor's ``end`` (reported in the
        summary's ``errors``), and without its state.
        """
        loop = asyncio.get_running_loop()
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

    async def _settle(self, lane: _Lane) -> None:
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

    async def submit(self, session: Session, frame: Frame) -> FrameResult:
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
        lane = self._lanes.get(session.id)
        if lane is None or session.ended:
            raise SessionNotFound(session.id)
        if lane.stuck:
            self.metrics.frame_received(session.transport)
            self.metrics.frame_failed(session.transport)
            raise self._blocked(lane)
        session.touch()
        self.metrics.frame_received(session.transport)
        try:
            session.admit(frame.received_at)
        except FrameRateExceeded:
            self.metrics.frames_dropped(session.transport, reason="rate_limited")
            raise
        fut: asyncio.Future[FrameResult] = asyncio.get_running_loop().create_future()
        try:
            overtaken = lane.inbox.offer((frame, fut))
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
        ``parallel_frames`` in a parallel stage (see :meth:`_pump_staged`)."""
        return sum(self.stage_widths(session))

    def stage_widths(self, session: Session) -> list[int]:
        """Per pipeline stage, how many frames it works on at once."""
        pipeline = session.pipeline
        if pipeline.stages == 1:
            return [1]
        wide = max(1, self.config.parallel_frames)
        return [wide if pipeline.parallel(k) else 1 for k in range(pipeline.stages)]

    async def _pump_staged(self, lane: _Lane) -> None:
        """Stage *k + 1* of frame *n* runs while stage *k* takes frame *n + 1*.

        One task per later stage, fed through a one-place queue, so frames stay in order and
        a slow later stage holds back the earlier ones instead of piling frames up. A parallel
        stage takes up to ``parallel_frames`` frames at once and hands them on in the order
        they came. The pump ends only once every stage is idle and the inbox is still empty,
        with no ``await`` between that check and the end (a frame submitted meanwhile starts
        a new pump).
        """
        loop = asyncio.get_running_loop()
        session = lane.session
        pipeline = session.pipeline
        n = pipeline.stages
        widths = self.stage_widths(session)
        hand: list[asyncio.Queue[tuple[FrameResult, asyncio.Future[FrameResult]]]] = [
            asyncio.Queue(maxsize=1) for _ in range(n - 1)
        ]
        Call = tuple[asyncio.Future[Any], FrameResult, asyncio.Future[FrameResult]]

        def start(stage: int, result: FrameResult, fut: asyncio.Future[FrameResult]) -> Call:
            # Switches and rates of a parallel stage are read here, in frame order.
            chosen = pipeline.enter_stage(stage, result) if widths[stage] > 1 else None
            call = self._watched(
                lane, stage, session.process_stage, stage, result, chosen, frame=result
            )
            return asyncio.ensure_future(call), result, fut

        async def hand_on(stage: int, window: deque[Call]) -> None:
            task, result, fut = window.popleft()
            try:
                await task
            except Exception as exc:
                self._failed(lane, fut, exc)
                return
            if stage < n - 1:
                await hand[stage].put((result, fut))
            else:
                self._deliver(lane, fut, result)

        async def first_done(*waits: asyncio.Future[Any]) -> None:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)

        async def later(stage: int) -> None:
            source = hand[stage - 1]
            window: deque[Call] = deque()
            getter: asyncio.Future[Any] | None = None
            try:
                while True:
                    if not window:
                        result, fut = await source.get()
                        window.append(start(stage, result, fut))
                        continue
                    if len(window) < widths[stage]:
                        # Room for another frame: take one if it comes before the oldest is done.
                        if getter is None:
                            getter = asyncio.ensure_future(source.get())
                        await first_done(getter, window[0][0])
                        if getter.done():
                            result, fut = getter.result()
                            getter = None
                            window.append(start(stage, result, fut))
                        if not window[0][0].done():
                            continue
                    try:
                        await hand_on(stage, window)
                    finally:
                        source.task_done()
            finally:
                if getter is not None:
                    getter.cancel()
                for task, _, _ in window:
                    task.cancel()

        workers = [asyncio.create_task(later(k)) for k in range(1, n)]
        window: deque[Call] = deque()
        try:
            while True:
                item = lane.inbox.take()
                if item is not None:
                    frame, fut = item
                    lane.pending.add(fut)
                    try:
                        result = await loop.run_in_executor(
                            self.executor, in_session(session.id, session.begin, frame)
                        )
                    except Exception as exc:
                        self._failed(lane, fut, exc)
                        continue
                    window.append(start(0, result, fut))
                    if len(window) >= widths[0]:
                        await hand_on(0, window)
                    continue
                if window:
                    # Hand on the oldest frame once it is done, unless a new one comes first.
                    lane.arrived.clear()
                    waiter = asyncio.ensure_future(lane.arrived.wait())
                    try:
                        await first_done(window[0][0], waiter)
                    finally:
                        waiter.cancel()
                    if window[0][0].done():
                        await hand_on(0, window)
                    continue
                for queue in hand:
                    await queue.join()
                if not lane.inbox:
                    return
        finally:
            for task, _, _ in window:
                task.cancel()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _watched(
        self,
        lane: _Lane,
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

    def _stuck(self, lane: _Lane, call: ProcessorCall) -> None:
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

    def _unstuck(self, lane: _Lane, call: ProcessorCall, seconds: float) -> None:
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

    def _blocked(self, lane: _Lane) -> ProcessorTimeout:
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

    def _failed(self, lane: _Lane, fut: asyncio.Future[FrameResult], exc: Exception) -> None:
        lane.pending.discard(fut)
        if fut.done() and not fut.cancelled():
            return  # answered already: it timed out
        session = lane.session
        log.error("session %s failed on a frame", session.id, exc_info=exc)
        self.metrics.frame_failed(session.transport)
        if not fut.done():
            fut.set_exception(exc)

    def _deliver(self, lane: _Lane, fut: asyncio.Future[FrameResult], result: FrameResult) -> None:
        lane.pending.discard(fut)
        if fut.done() and not fut.cancelled():
            return  # a late answer to a frame that timed out: its client was told already
        session = lane.session
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
