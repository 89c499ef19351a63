"""An ordered list of processors run on each frame, with timings and per-frame errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .frame import Frame
from .processor import ProcessContext, Processor

__all__ = ["FrameResult", "Pipeline"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FrameResult:
    """What one frame produced.

    ``outputs`` merges every processor's dict in pipeline order (later keys win);
    ``timings`` holds seconds per processor that ran, in order; ``errors`` one entry per
    processor that raised; ``ran`` the names of processors that ran on this frame;
    ``dropped`` is true when the frame was discarded unprocessed (``latest`` policy).
    """

    frame: Frame
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    dropped: bool = False


@dataclass(slots=True)
class _Slot:
    processor: Processor
    last_index: int = -(10**9)
    last_time: float = float("-inf")
    ready: bool = False

    def due(self, frame: Frame) -> bool:
        rate = self.processor.rate
        if frame.index - self.last_index < rate.every:
            return False
        return not (rate.interval > 0 and frame.timestamp - self.last_time < rate.interval)


class Pipeline:
    """Runs processors in order on one session's frames; never called concurrently.

    A processor that raises gets an ``errors`` entry for that frame and the pipeline goes on
    with the next processor. Names must be unique so timings and errors are unambiguous.
    """

    def __init__(self, processors: Sequence[Processor]) -> None:
        names = [p.name for p in processors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"processor names must be unique in a pipeline, repeated: {dupes}")
        self._slots = [_Slot(p) for p in processors]

    @property
    def processors(self) -> list[Processor]:
        return [s.processor for s in self._slots]

    @property
    def names(self) -> list[str]:
        return [s.processor.name for s in self._slots]

    @property
    def needs_image(self) -> bool:
        return any(s.processor.needs_image for s in self._slots)

    def run(self, frame: Frame, ctx: ProcessContext) -> FrameResult:
        result = FrameResult(frame, outputs=frame.results)
        for slot in self._slots:
            proc = slot.processor
            if not slot.due(frame):
                continue
            slot.last_index = frame.index
            slot.last_time = frame.timestamp
            start = time.perf_counter()
            try:
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
            result.timings[proc.name] = time.perf_counter() - start
            result.ran.append(proc.name)
            if out:
                result.outputs.update(out)
        return result

    def end(self, ctx: ProcessContext) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Run every processor's ``end`` and ``close``; returns merged outputs and errors."""
        merged: dict[str, Any] = {}
        errors: list[dict[str, str]] = []
        for slot in self._slots:
            proc = slot.processor
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
        """States of processors that keep one, by name."""
        out: dict[str, dict[str, Any]] = {}
        for slot in self._slots:
            state = slot.processor.snapshot()
            if state is not None:
                out[slot.processor.name] = state
        return out

    def restore(self, states: dict[str, dict[str, Any]]) -> None:
        by_name = {s.processor.name: s.processor for s in self._slots}
        unknown = sorted(set(states) - set(by_name))
        if unknown:
            raise ValueError(f"snapshot names processors not in this pipeline: {unknown}")
        for name, state in states.items():
            by_name[name].restore(state)
