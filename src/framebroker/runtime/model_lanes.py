"""Each model of a live session in its own lane, so a slow model slows only itself.

The WebRTC model broker's rule: *each model sees the newest frame it can keep up with*. A live track
delivers frames at its own pace; :class:`ModelLanes` gives every processor of a session's
pipeline a one-slot mailbox and a worker task. :meth:`ModelLanes.offer` puts the new frame in
every mailbox, replacing a frame the model has not taken yet (counted as skipped for that
model); each worker takes the newest frame and runs its processor in the broker's worker
pool. A model that takes a second per frame thus processes about one frame a second while a
fast model beside it processes all of them, and the track is never waited on.

Faults stay inside their lane. A model that raises gets the error reported with its frame and
goes on with the next one. Calls run under the broker's one
:class:`~framebroker.runtime.watchdog.Watchdog`, with the one processor time limit
(``limits.processor_timeout_s``): a model that runs past it on one frame is reported as timed
out (and counted in ``framebroker_processor_timeouts_total``); its late answer is discarded,
and it is given no new frame until the call returns (a processor is never called
concurrently, and a worker thread cannot be interrupted). Meanwhile the
:class:`~framebroker.runtime.workers.WorkerPool` runs another thread in place of the stuck one.
After ``max_failures`` failures in a row (errors or timeouts) the model is disabled for the
rest of the session, which is reported too.

Outputs are merged in pipeline order, later keys winning, as :class:`~framebroker.core.Pipeline`
does: every :class:`Prediction` carries the newest output of each model merged that way.
The broker hosts these lanes for every session of the ``newest`` policy and ends them
through :meth:`ModelLanes.stop` before the session, so every model's ``end`` runs once (a
model still busy is swapped :func:`without` its ``end``), the merged final result is
persisted, and per-model counters land in the session's stats (``stats["models"]``).

Processors in lanes run concurrently with each other, each with its own
:class:`~framebroker.core.ProcessContext` sharing the session's ``shared`` dict; one may
switch only itself, not the other models (they run in other lanes).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.frame import Frame
from ..core.pipeline import FrameResult, Pipeline, ProcessorCall
from ..core.processor import ProcessContext, Processor
from ..core.session import Session, SessionStats
from ..errors import FrameRateExceeded
from .watchdog import Watchdog

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = [
    "LaneLimits",
    "LaneSessionStats",
    "ModelLanes",
    "ModelStats",
    "Prediction",
    "without",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LaneLimits:
    """Bounds on one session's model lanes (how long one call may take is the watchdog's).

    ``max_failures``: failures in a row (errors or timeouts) that disable a model; 0 never
    disables. ``end_timeout_s``: how long ending waits for frames still being processed.
    Raises ``ValueError`` for a value out of range.
    """

    max_failures: int = 3
    end_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("end_timeout_s",):
            value: object = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        failures: object = self.max_failures
        if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
            raise ValueError(f"max_failures must be an integer >= 0, got {failures!r}")


@dataclass(slots=True)
class ModelStats:
    """What one model did in a session.

    ``frames_offered``: frames handed to it (none once disabled); ``frames_skipped``: frames
    replaced in its mailbox by a newer one before it could take them (it was busy), or left
    there when it stopped; ``frames_not_due``: frames its rate (or its switch) let pass;
    ``timeouts``: frames it took too long on. Every offered frame is counted once in
    ``frames_run``, ``frames_skipped``, ``frames_not_due`` or ``timeouts``. ``errors``
    counts runs that raised; ``disabled`` says why it was disabled, or is ``None``.
    """

    frames_offered: int = 0
    frames_run: int = 0
    frames_skipped: int = 0
    frames_not_due: int = 0
    errors: int = 0
    timeouts: int = 0
    consecutive_failures: int = 0
    busy_s: float = 0.0
    disabled: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames_offered": self.frames_offered,
            "frames_run": self.frames_run,
            "frames_skipped": self.frames_skipped,
            "frames_not_due": self.frames_not_due,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "mean_ms": round(1000.0 * self.busy_s / self.frames_run, 3)
            if self.frames_run
            else None,
            "disabled": self.disabled,
        }


@dataclass(slots=True)
class LaneSessionStats(SessionStats):
    """A session's counters plus one :class:`ModelStats` per model, saved with its summary.

    ``frames_processed`` counts frames at least one model ran on, ``frames_dropped`` frames no
    model took, ``frame_errors`` model failures (errors and timeouts).
    """

    models: dict[str, ModelStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = SessionStats.to_dict(self)
        out["models"] = {name: m.to_dict() for name, m in self.models.items()}
        return out


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model's answer on one frame, and the newest answers of all models merged.

    ``outputs`` is what the model returned (``{}`` after a failure);
    ``merged`` the newest non-empty output of every model merged in pipeline order;
    ``error`` describes a failure of this model on this frame (``{"processor", "error"}``,
    plus ``"disabled": True`` when it was the last one allowed); ``latency_s`` runs from the
    frame's arrival to this answer.
    """

    model: str
    frame: Frame
    outputs: dict[str, Any]
    merged: dict[str, Any]
    error: dict[str, Any] | None
    latency_s: float


@dataclass(eq=False, slots=True)
class _Offer:
    """A frame as offered to the lanes: who still holds it, and whether any model took it."""

    frame: Frame
    holders: int = 0
    taken: bool = False


@dataclass(eq=False)
class _ModelLane:
    processor: Processor
    pipeline: Pipeline
    ctx: ProcessContext
    stats: ModelStats
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    slot: _Offer | None = None
    running: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.processor.name


class _Abandoned(Processor):
    """Stands in for a model still busy with a frame when its session ends.

    Its ``end`` and ``close`` are not called (a processor is never called concurrently), and
    the stand-in's failing ``end`` puts that in the session's summary errors.
    """

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        return None

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        raise TimeoutError(
            "still processing a frame when the session ended; its end() was not called"
        )


def _stand_in(name: str) -> Processor:
    cls = type(f"Abandoned[{name}]", (_Abandoned,), {"name": name})
    proc: Processor = cls()
    return proc


class ModelLanes:
    """Runs the processors of ``session`` side by side on the newest frames offered.

    Create and use it on the event loop: :meth:`start`, then :meth:`offer` each frame as it arrives
    (never blocks), then :meth:`stop` and end the session. ``on_prediction`` is called on the event
    loop for every frame a model answered (returned outputs) or failed on; it must not block. The
    session's ``stats`` is replaced by a :class:`LaneSessionStats` so per-model counters are saved
    with its summary.
    """

    def __init__(
        self,
        session: Session,
        watchdog: Watchdog,
        limits: LaneLimits | None = None,
        *,
        on_prediction: Callable[[Prediction], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.session = session
        self.metrics = metrics
        self.watchdog = watchdog
        self.limits = limits or LaneLimits()
        self.on_prediction = on_prediction
        old = session.stats
        self.stats = LaneSessionStats(
            frames_in=old.frames_in,
            frames_processed=old.frames_processed,
            frames_dropped=old.frames_dropped,
            frame_errors=old.frame_errors,
            latency_s=dict(old.latency_s),
            runs=dict(old.runs),
        )
        session.stats = self.stats
        switched_off = session.pipeline.disabled
        self._lanes: list[_ModelLane] = []
        for proc in session.pipeline.processors:
            stats = ModelStats()
            self.stats.models[proc.name] = stats
            ctx = ProcessContext(
                session_id=session.id, transport=session.transport, shared=session.ctx.shared
            )
            lane_pipeline = Pipeline(
                [proc], disabled=[proc.name] if proc.name in switched_off else []
            )
            lane_pipeline.probe = session.pipeline.probe
            self._lanes.append(_ModelLane(proc, lane_pipeline, ctx, stats))
        self._latest: dict[str, dict[str, Any]] = {}
        self._next_index = 0
        self._started = False
        self._closing = False

    # -- state -----------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """Whether :meth:`stop` began: no frame is taken any more."""
        return self._closing

    @property
    def names(self) -> list[str]:
        """The models, in pipeline (merge) order."""
        return [lane.name for lane in self._lanes]

    @property
    def disabled(self) -> dict[str, str]:
        """Models disabled for failing, with the reason."""
        return {lane.name: lane.stats.disabled for lane in self._lanes if lane.stats.disabled}

    @property
    def needs_image(self) -> bool:
        """Whether a model still running reads pixels."""
        return any(
            lane.processor.needs_image and lane.stats.disabled is None for lane in self._lanes
        )

    def merged(self) -> dict[str, Any]:
        """The newest output of every model, merged in pipeline order (later keys win)."""
        out: dict[str, Any] = {}
        for lane in self._lanes:
            latest = self._latest.get(lane.name)
            if latest:
                out.update(latest)
        return out

    def report(self) -> dict[str, dict[str, Any]]:
        """Per-model counters, as saved in ``stats["models"]``."""
        return {lane.name: lane.stats.to_dict() for lane in self._lanes}

    def idle(self) -> bool:
        """No frame waiting in a mailbox and no model running."""
        return all(lane.slot is None and not lane.running for lane in self._lanes)

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start one worker task per model; call on the event loop."""
        if self._started:
            raise RuntimeError("model lanes already started")
        self._started = True
        for lane in self._lanes:
            lane.task = asyncio.create_task(
                self._work(lane), name=f"model-lane-{self.session.id}-{lane.name}"
            )

    def offer(self, frame: Frame) -> bool:
        """Hand ``frame`` to every model that is not disabled; numbers it in arrival order.

        A frame still waiting in a model's mailbox is replaced (skipped for that model). A
        frame over the session's ``max_fps_per_session`` goes to no model: it is counted as
        dropped and ``False`` is returned. Never blocks; raises ``RuntimeError`` after
        :meth:`stop` or before :meth:`start`.
        """
        if not self._started or self._closing:
            raise RuntimeError("model lanes are not running")
        if self.metrics is not None:
            self.metrics.frame_received(self.session.transport)
        self.session.touch()
        try:
            self.session.admit(frame.received_at)  # counts a refused frame in and dropped
        except FrameRateExceeded:
            if self.metrics is not None:
                self.metrics.frames_dropped(self.session.transport, reason="rate_limited")
            return False
        frame.index = self._next_index
        self._next_index += 1
        self.stats.frames_in += 1
        offer = _Offer(frame)
        for lane in self._lanes:
            if lane.stats.disabled is not None:
                continue
            old = lane.slot
            if old is not None:
                lane.stats.frames_skipped += 1
                self._release(old)
            lane.stats.frames_offered += 1
            offer.holders += 1
            lane.slot = offer
            lane.wake.set()
        if offer.holders == 0:
            self._dropped()
        return True

    def _release(self, offer: _Offer) -> None:
        offer.holders -= 1
        if offer.holders == 0 and not offer.taken:
            self._dropped()

    def _dropped(self) -> None:
        self.stats.frames_dropped += 1
        if self.metrics is not None:
            self.metrics.frames_dropped(self.session.transport)

    async def _work(self, lane: _ModelLane) -> None:
        while not self._closing and lane.stats.disabled is None:
            await lane.wake.wait()
            lane.wake.clear()
            offer, lane.slot = lane.slot, None
            if offer is None:
                continue
            if self._closing or self.session.ended:
                lane.stats.frames_skipped += 1
                self._release(offer)
                return
            if not offer.taken:
                offer.taken = True
                self.stats.frames_processed += 1
                if self.metrics is not None:
                    self.metrics.frame_processed(self.session.transport)
            offer.holders -= 1
            lane.running = True
            try:
                await self._run_one(lane, offer.frame)
            except Exception as exc:  # the pool is gone (server stopping): not the model's fault
                log.warning("session %s: model %s not run: %r", self.session.id, lane.name, exc)
                self._failed(lane, offer.frame, {"processor": lane.name, "error": repr(exc)})
            finally:
                lane.running = False
        self._clear(lane)

    def _clear(self, lane: _ModelLane) -> None:
        if lane.slot is not None:
            lane.stats.frames_skipped += 1
            self._release(lane.slot)
            lane.slot = None

    async def _run_one(self, lane: _ModelLane, shared: Frame) -> None:
        # Each lane gets its own Frame (its own meta and results) over the shared image
        # source, so models running at the same time never write to one object.
        frame = Frame(
            source=shared.source,
            detections=shared.detections,
            meta=dict(shared.meta),
            received_at=shared.received_at,
            index=shared.index,
        )
        overran = False

        def stuck(call: ProcessorCall) -> None:
            nonlocal overran
            overran = True
            self._timed_out(lane, shared)

        try:
            # The watchdog waits for the call however long it takes: the model gets no new
            # frame until it returns; stop() bounds that wait.
            result = await self.watchdog.call(
                lambda: lane.pipeline.run(frame, lane.ctx),
                lane.pipeline,
                0,
                on_stuck=stuck,
                on_return=_ignore,
            )
        except Exception as exc:  # Pipeline.run catches processors' errors; this is a bug
            log.exception("model lane %s failed outside its processor", lane.name)
            self._failed(lane, shared, {"processor": lane.name, "error": repr(exc)})
            return
        if not overran:  # else its answer is stale, and the failure was reported
            self._record(lane, shared, result)

    def _timed_out(self, lane: _ModelLane, frame: Frame) -> None:
        limit = self.watchdog.timeout_s
        lane.stats.timeouts += 1
        log.warning(
            "session %s: model %s has run for over %g s on frame %d; its answer will be dropped",
            self.session.id,
            lane.name,
            limit,
            frame.index,
        )
        self._failed(
            lane,
            frame,
            {"processor": lane.name, "error": f"timed out: no answer within {limit:g} s"},
        )

    def _record(self, lane: _ModelLane, frame: Frame, result: FrameResult) -> None:
        name = lane.name
        if name not in result.ran:
            lane.stats.frames_not_due += 1
            return
        if self.metrics is not None:
            self.metrics.processors_ran(result)
        seconds = result.timings.get(name, 0.0)
        lane.stats.frames_run += 1
        lane.stats.busy_s += seconds
        self.stats.latency_s[name] = self.stats.latency_s.get(name, 0.0) + seconds
        self.stats.runs[name] = self.stats.runs.get(name, 0) + 1
        if result.errors:
            lane.stats.errors += 1
            self._failed(lane, frame, dict(result.errors[0]))
            return
        lane.stats.consecutive_failures = 0
        outputs = dict(result.outputs)
        if outputs:  # a model that has nothing to say yet (None) sends nothing
            self._latest[name] = outputs
            self._publish(lane, frame, outputs, None)

    def _failed(self, lane: _ModelLane, frame: Frame, error: dict[str, Any]) -> None:
        stats = lane.stats
        stats.consecutive_failures += 1
        self.stats.frame_errors += 1
        limit = self.limits.max_failures
        if limit and stats.consecutive_failures >= limit and stats.disabled is None:
            stats.disabled = (
                f"{stats.consecutive_failures} failures in a row; last: {error['error']}"
            )
            error = {**error, "disabled": True}
            log.warning(
                "session %s: model %s disabled: %s", self.session.id, lane.name, stats.disabled
            )
            self._clear(lane)
            lane.wake.set()  # let its worker see it is disabled and finish
        self._publish(lane, frame, {}, error)

    def _publish(
        self, lane: _ModelLane, frame: Frame, outputs: dict[str, Any], error: dict[str, Any] | None
    ) -> None:
        if self.on_prediction is None:
            return
        prediction = Prediction(
            model=lane.name,
            frame=frame,
            outputs=outputs,
            merged=self.merged(),
            error=error,
            latency_s=max(0.0, time.time() - frame.received_at),
        )
        try:
            self.on_prediction(prediction)
        except Exception:
            log.exception("session %s: prediction callback failed", self.session.id)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no frame is waiting or running (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def stop(self) -> list[str]:
        """Take no more frames and wait, up to ``end_timeout_s``, for frames in progress.

        Frames still waiting in mailboxes are dropped. Returns the models still busy after
        the wait (their calls go on in their worker threads; end the session :func:`without`
        them).
        """
        if self._closing:
            return [lane.name for lane in self._lanes if lane.running]
        self._closing = True
        tasks = []
        for lane in self._lanes:
            self._clear(lane)
            lane.wake.set()
            if lane.task is not None:
                tasks.append(lane.task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.limits.end_timeout_s)
        hung = [lane.name for lane in self._lanes if lane.running]
        for task in tasks:
            if not task.done():
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return hung


def without(pipeline: Pipeline, names: Sequence[str]) -> Pipeline:
    """``pipeline`` with the processors ``names`` swapped for stand-ins whose ``end`` says
    they were still busy with a frame (so it is not called)."""
    procs = [_stand_in(p.name) if p.name in names else p for p in pipeline.processors]
    return Pipeline(procs, disabled=pipeline.disabled)


def _ignore(call: ProcessorCall, seconds: float) -> None:
    """A late return needs nothing more: the lane was waiting for it anyway."""
