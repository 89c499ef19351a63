"""An ordered list of processors run on each frame, with timings and per-frame errors."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal, NamedTuple, Protocol

from .frame import Frame
from .processor import ProcessContext, Processor
from .switches import Switches

__all__ = ["CallProbe", "FrameResult", "Pipeline", "ProcessorCall", "SkipReason"]

log = logging.getLogger(__name__)

SkipReason = Literal["disabled", "not_due"]
"""Why a processor did not run on a frame: switched off, or its :class:`Rate` said not yet."""

# Frame timestamps are epoch seconds (1.5e9): their float differences are off by ~1e-7 s, so
# a frame that lands exactly on a due time must not be missed by a rounding error.
_SLACK = 1e-3


@dataclass(slots=True)
class FrameResult:
    """What one frame produced.

    ``outputs`` merges every processor's dict in pipeline order (later keys win);
    ``timings`` holds seconds per processor that ran, in order; ``errors`` one entry per
    processor that raised; ``ran`` the names of processors that ran on this frame, in order;
    ``skipped`` the others, each with its :data:`SkipReason` (``"disabled"`` wins over
    ``"not_due"``); ``dropped`` is true when the frame was discarded unprocessed (``latest``
    policy), and then neither ``ran`` nor ``skipped`` names anything.
    """

    frame: Frame
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: dict[str, SkipReason] = field(default_factory=dict)
    dropped: bool = False
    seq: int = -1
    """The pipeline's own count of this frame (from 0), which rates with ``every`` follow."""


class ProcessorCall(NamedTuple):
    """A processor running now: in which stage, on which frame, since when
    (:func:`time.perf_counter` seconds)."""

    processor: str
    stage: int
    frame: int
    started: float


class CallProbe(Protocol):
    """What a host measures around processor calls (resident memory, say).

    The pipeline calls :meth:`before` and :meth:`after` around every ``every``-th call of each
    processor (``setup`` included), in the worker thread that runs it, so both must be cheap
    and thread-safe.
    """

    @property
    def every(self) -> int: ...

    def before(self) -> int: ...

    def after(self, processor: str, before: int) -> None: ...


@dataclass(slots=True)
class _Slot:
    """A processor and its rate clock: the frame count and frame time of its last run."""

    processor: Processor
    last_seq: int | None = None
    last_time: float = float("-inf")
    next_time: float = float("-inf")
    ready: bool = False
    calls: int = 0
    setup_lock: threading.Lock = field(default_factory=threading.Lock)

    def due(self, seq: int, ts: float) -> bool:
        rate = self.processor.rate
        if self.last_seq is not None and seq - self.last_seq < rate.every:
            return False
        if rate.interval <= 0 or ts < self.last_time:  # a clock that went back starts over
            return True
        return ts >= self.next_time - _SLACK * rate.interval

    def mark_run(self, seq: int, ts: float) -> None:
        interval = self.processor.rate.interval
        on_grid = self.last_time <= ts < self.next_time + interval * (1 - _SLACK)
        # Keep the due times on a grid so the average rate is one run per interval; after a
        # gap or a clock reset, start a new grid from this frame instead of catching up.
        self.next_time = self.next_time + interval if on_grid else ts + interval
        self.last_seq = seq
        self.last_time = ts


class Pipeline:
    """Runs processors in order on one session's frames, one frame at a time per stage
    (several only in a :meth:`parallel` stage).

    A processor that raises gets an ``errors`` entry for that frame and the pipeline goes on
    with the next processor. Names must be unique so timings, errors and switches are
    unambiguous. ``disabled`` names processors that start switched off (another processor may
    switch them on, see :class:`ProcessContext`); an unknown name raises ``ValueError``.

    A host that runs pipelines in threads can see which processor is running
    (:meth:`running`), give up on a pipeline stuck in one (:meth:`abandon`) and measure calls
    through a :class:`CallProbe` set as ``probe``.
    """

    probe: CallProbe | None

    def __init__(
        self,
        processors: Sequence[Processor],
        *,
        disabled: Iterable[str] = (),
        settings: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        names = [p.name for p in processors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"processor names must be unique in a pipeline, repeated: {dupes}")
        self._slots = [_Slot(p) for p in processors]
        self.settings: list[dict[str, Any]] = (
            [dict(entry) for entry in settings]
            if settings is not None
            else [{"name": name} for name in names]
        )
        """What each processor runs with (the registry fills in every option's value)."""
        self._switches = Switches(names, disabled)
        self._seq = 0
        cuts = [i + 1 for i, p in enumerate(processors[:-1]) if p.ends_stage]
        edges = [0, *cuts, len(processors)]
        self._stages = list(pairwise(edges))
        self.probe = None
        # Per stage, by frame index, the processor running now as (name, started); each entry
        # written only by the thread running that frame's stage.
        self._running: list[dict[int, tuple[str, float]]] = [{} for _ in self._stages]
        self._abandoned = False

    @property
    def processors(self) -> list[Processor]:
        return [s.processor for s in self._slots]

    @property
    def names(self) -> list[str]:
        return [s.processor.name for s in self._slots]

    @property
    def needs_image(self) -> bool:
        return any(s.processor.needs_image for s in self._slots)

    @property
    def disabled(self) -> frozenset[str]:
        """Names of the processors switched off now."""
        return self._switches.disabled

    def enable(self, name: str) -> None:
        """Switch ``name`` on from outside (an operator); raises ``ValueError`` if unknown."""
        self._switches.enable(name)

    def disable(self, name: str) -> None:
        """Switch ``name`` off from outside (an operator); raises ``ValueError`` if unknown."""
        self._switches.disable(name)

    @property
    def stages(self) -> int:
        """How many stages the processors form: a processor with ``ends_stage`` closes one.

        A host may run stage *k + 1* of frame *n* while stage *k* handles frame *n + 1*
        (the broker does, on separate threads), so a heavy detector overlaps with the drawing
        and encoding after it. Each processor still sees every frame in order, one at a time.
        """
        return len(self._stages)

    def parallel(self, stage: int) -> bool:
        """True when ``stage`` may handle several frames at once (see :meth:`enter_stage`).

        That is when every processor in it is ``reentrant`` and it is not the last stage: the
        last one counts frames as done, which happens in order.
        """
        lo, hi = self._stages[stage]
        return stage < len(self._stages) - 1 and all(
            s.processor.reentrant for s in self._slots[lo:hi]
        )

    def running(self) -> list[ProcessorCall]:
        """The processors running now, at most one per stage and frame; safe to call from any
        thread."""
        return [
            ProcessorCall(name, stage, index, started)
            for stage, calls in enumerate(self._running)
            for index, (name, started) in list(calls.items())
        ]

    def abandon(self) -> list[str]:
        """Start no processor any more, and return those still running (stuck, say).

        For a host giving up on a pipeline whose call it cannot interrupt: once this returns,
        only the processors it names may still be inside a call, so :meth:`end` can safely run
        the others' ``end``; it skips those still running then, reporting an error for each.
        """
        # Set the flag before reading what runs; run_stage records a processor before it
        # reads the flag. Under the GIL one of the two sees the other's write, so a processor
        # either shows up here or is never called.
        self._abandoned = True
        return sorted({call.processor for call in self.running()})

    @property
    def abandoned(self) -> bool:
        """True once :meth:`abandon` was called."""
        return self._abandoned

    def run(self, frame: Frame, ctx: ProcessContext) -> FrameResult:
        """Run every processor that is on and due, in order; see :class:`FrameResult`."""
        result = self.start(frame)
        for stage in range(len(self._stages)):
            self.run_stage(stage, result, ctx)
        return result

    def start(self, frame: Frame) -> FrameResult:
        """Number ``frame`` for this pipeline; :meth:`run_stage` then takes the result."""
        result = FrameResult(frame, outputs=frame.results, seq=self._seq)
        self._seq += 1
        return result

    def enter_stage(self, stage: int, result: FrameResult) -> list[int]:
        """Decide which processors of ``stage`` run on the frame of ``result``; for
        :meth:`run_stage` of a :meth:`parallel` stage, called in frame order.

        Switches and rates are read here for the whole stage at once, so frames that then run
        side by side still see them in order. (In a sequential stage they are read per
        processor as it comes up, so one processor may switch the next on the same frame.)
        """
        lo, hi = self._stages[stage]
        chosen: list[int] = []
        seq, ts = result.seq, result.frame.timestamp
        for i in range(lo, hi):
            slot = self._slots[i]
            if self._decide(slot, seq, ts, result):
                chosen.append(i)
        return chosen

    def _decide(self, slot: _Slot, seq: int, ts: float, result: FrameResult) -> bool:
        name = slot.processor.name
        if not self._switches.is_enabled(name):
            result.skipped[name] = "disabled"
            return False
        if not slot.due(seq, ts):
            result.skipped[name] = "not_due"
            return False
        slot.mark_run(seq, ts)
        return True

    def run_stage(
        self,
        stage: int,
        result: FrameResult,
        ctx: ProcessContext,
        chosen: list[int] | None = None,
    ) -> FrameResult:
        """Run the processors of ``stage`` on the frame of ``result`` (from :meth:`start`).

        Stages of one frame must run in order, and a stage must see frames in the order
        :meth:`start` numbered them; stages of different frames may run at the same time.
        A :meth:`parallel` stage may also run on several frames at once when ``chosen`` comes
        from :meth:`enter_stage`, called in frame order.
        """
        lo, hi = self._stages[stage]
        frame = result.frame
        running = self._running[stage]
        with ctx._bound(self._switches):
            for i in range(lo, hi) if chosen is None else chosen:
                slot = self._slots[i]
                proc = slot.processor
                # Read per processor: one earlier on this frame may have switched this one.
                if chosen is None and not self._decide(slot, result.seq, frame.timestamp, result):
                    continue
                start = time.perf_counter()
                running[frame.index] = (proc.name, start)
                if self._abandoned:  # read after recording the call: see abandon()
                    running.pop(frame.index, None)
                    break
                probe, before = self.probe, 0
                if probe is not None:
                    slot.calls += 1
                    if slot.calls % probe.every:
                        probe = None  # not a sampled call
                    else:
                        before = probe.before()
                try:
                    if not slot.ready:
                        with slot.setup_lock:  # frames of a parallel stage may get here together
                            if not slot.ready:
                                proc.setup(ctx)
                                slot.ready = True
                    out = proc.process(frame, ctx)
                except Exception as exc:  # a processor's failure is reported, never fatal
                    log.warning("processor %s failed on frame %d: %r", proc.name, frame.index, exc)
                    result.errors.append(
                        {"processor": proc.name, "error": f"{type(exc).__name__}: {exc}"}
                    )
                    out = None
                finally:
                    running.pop(frame.index, None)
                if probe is not None:
                    probe.after(proc.name, before)
                result.timings[proc.name] = time.perf_counter() - start
                result.ran.append(proc.name)
                if out:
                    result.outputs.update(out)
        return result

    def end(self, ctx: ProcessContext) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Run every processor's ``end`` and ``close``, switched off or not (what it saw before
        still counts); returns merged outputs and errors. Processors :meth:`abandon` found
        still running are skipped (never called concurrently), with an error each."""
        merged: dict[str, Any] = {}
        errors: list[dict[str, str]] = []
        # Once abandoned no processor starts, so what runs now is all that may still run.
        hung = {call.processor for call in self.running()} if self._abandoned else set()
        with ctx._bound(self._switches):
            for slot in self._slots:
                proc = slot.processor
                if proc.name in hung:
                    errors.append(
                        {
                            "processor": proc.name,
                            "error": "TimeoutError: still processing a frame when the session "
                            "ended; its end() and close() were not called",
                        }
                    )
                    continue
                try:
                    out = proc.end(ctx)
                    if out:
                        merged.update(out)
                except Exception as exc:
                    log.warning("processor %s failed in end(): %r", proc.name, exc)
                    errors.append({"processor": proc.name, "error": f"{type(exc).__name__}: {exc}"})
                try:
                    proc.close()
                except Exception as exc:
                    log.warning("processor %s failed in close(): %r", proc.name, exc)
        return merged, errors

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """States of processors that keep one, by name; :attr:`disabled` is saved beside it."""
        out: dict[str, dict[str, Any]] = {}
        for slot in self._slots:
            state = slot.processor.snapshot()
            if state is not None:
                out[slot.processor.name] = state
        return out

    def restore(
        self, states: dict[str, dict[str, Any]], *, disabled: Iterable[str] | None = None
    ) -> None:
        """Resume processor states from :meth:`snapshot` and, when given, the switches.

        The switches are saved because the processor that set them may never see the same
        thing again (a menu left before the restart). Raises ``ValueError`` for names not in
        this pipeline; rate clocks start over, so each processor is due on the next frame.
        """
        by_name = {s.processor.name: s.processor for s in self._slots}
        unknown = sorted(set(states) - set(by_name))
        if unknown:
            raise ValueError(f"snapshot names processors not in this pipeline: {unknown}")
        if disabled is not None:
            if isinstance(disabled, str):
                raise ValueError(f"disabled must be a list of names, got {disabled!r}")
            self._switches.set_disabled(disabled)
        for name, state in states.items():
            by_name[name].restore(state)
