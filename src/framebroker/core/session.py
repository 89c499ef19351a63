"""A stream of frames from one client, its pipeline, its counters and its end summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import FrameRateExceeded
from .frame import Frame
from .inbox import Backpressure
from .pipeline import FrameResult, Pipeline
from .processor import ProcessContext
from .rate import FrameRate

__all__ = ["Session", "SessionStats", "SessionSummary"]


@dataclass(slots=True)
class SessionStats:
    """Counters of a session; ``latency_s`` sums each processor's time over the frames it ran."""

    frames_in: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frame_errors: int = 0
    latency_s: dict[str, float] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)

    def mean_latency_ms(self) -> dict[str, float]:
        return {k: 1000.0 * v / max(self.runs.get(k, 1), 1) for k, v in self.latency_s.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frame_errors": self.frame_errors,
            "mean_latency_ms": self.mean_latency_ms(),
        }


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What remains of a session once it has ended; persisted by the store."""

    id: str
    transport: str
    pipeline: list[str]
    created_at: float
    ended_at: float
    reason: str
    stats: dict[str, Any]
    results: dict[str, Any]
    errors: list[dict[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "pipeline": self.pipeline,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "reason": self.reason,
            "stats": self.stats,
            "results": self.results,
            "errors": self.errors,
        }


class Session:
    """One client's stream. ``process`` must not be called concurrently on one session.

    ``last_active`` is on the monotonic clock given at construction and drives idle expiry.
    ``client`` is the key of the client that holds the session (its address), ``None`` for a
    session the server feeds itself; ``max_fps`` > 0 bounds the frames :meth:`admit` lets in.
    """

    def __init__(
        self,
        session_id: str,
        pipeline: Pipeline,
        *,
        transport: str = "library",
        backpressure: Backpressure = Backpressure.WAIT,
        clock: Any = time.monotonic,
        client: str | None = None,
        max_fps: float = 0.0,
    ) -> None:
        self.id = session_id
        self.pipeline = pipeline
        self.transport = transport
        self.backpressure = backpressure
        self.client = client
        self.rate = FrameRate(max_fps) if max_fps > 0 else None
        self.created_at = time.time()
        self._clock = clock
        self.last_active: float = clock()
        self.stats = SessionStats()
        self.ctx = ProcessContext(session_id=session_id, transport=transport)
        self._next_index = 0
        self.ended = False

    def touch(self) -> None:
        self.last_active = self._clock()

    def process(self, frame: Frame) -> FrameResult:
        """Run the pipeline on ``frame``, numbering it in arrival order."""
        result = self.begin(frame)
        for stage in range(self.pipeline.stages):
            self.process_stage(stage, result)
        return result

    def begin(self, frame: Frame) -> FrameResult:
        """Number ``frame`` in arrival order; its stages then go to :meth:`process_stage`."""
        if self.ended:
            raise RuntimeError(f"session {self.id} has ended")
        frame.index = self._next_index
        self._next_index += 1
        self.stats.frames_in += 1
        return self.pipeline.start(frame)

    def process_stage(
        self, stage: int, result: FrameResult, chosen: list[int] | None = None
    ) -> FrameResult:
        """Run one stage of the pipeline (see :attr:`Pipeline.stages`); the last one counts
        the frame as processed. Stages of different frames may run at the same time, and
        frames of a parallel stage too, given ``chosen`` from
        :meth:`Pipeline.enter_stage`."""
        self.pipeline.run_stage(stage, result, self.ctx, chosen)
        if stage == self.pipeline.stages - 1:
            self._finish(result)
        return result

    def _finish(self, result: FrameResult) -> None:
        self.stats.frames_processed += 1
        if result.errors:
            self.stats.frame_errors += 1
        for name, seconds in result.timings.items():
            self.stats.latency_s[name] = self.stats.latency_s.get(name, 0.0) + seconds
            self.stats.runs[name] = self.stats.runs.get(name, 0) + 1
        self.touch()

    def admit(self, arrived_at: float) -> None:
        """Let a frame that arrived at ``arrived_at`` (seconds) in, or refuse it with
        :class:`~framebroker.errors.FrameRateExceeded` (counted as dropped) when the session
        is over its frame rate. The session itself goes on."""
        if self.rate is None:
            return
        try:
            self.rate.admit(arrived_at, self.id)
        except FrameRateExceeded:
            self.count_dropped()
            raise

    def count_dropped(self, n: int = 1) -> None:
        """Record frames discarded before reaching the pipeline."""
        self.stats.frames_in += n
        self.stats.frames_dropped += n

    def end(self, reason: str = "ended") -> SessionSummary:
        """Run every processor's ``end`` once and return the summary."""
        if self.ended:
            raise RuntimeError(f"session {self.id} has already ended")
        self.ended = True
        results, errors = self.pipeline.end(self.ctx)
        return SessionSummary(
            id=self.id,
            transport=self.transport,
            pipeline=self.pipeline.names,
            created_at=self.created_at,
            ended_at=time.time(),
            reason=reason,
            stats=self.stats.to_dict(),
            results=results,
            errors=errors,
        )

    def snapshot(self) -> dict[str, Any]:
        """State to resume this session elsewhere or after a restart."""
        return {
            "id": self.id,
            "next_index": self._next_index,
            "processors": self.pipeline.snapshot(),
            "disabled": sorted(self.pipeline.disabled),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._next_index = int(state.get("next_index", 0))
        # A snapshot saved before processors could be switched has no "disabled": keep the
        # pipeline's configured switches then.
        self.pipeline.restore(state.get("processors", {}), disabled=state.get("disabled"))

    def info(self) -> dict[str, Any]:
        """A JSON-ready description for listings."""
        return {
            "id": self.id,
            "transport": self.transport,
            "pipeline": self.pipeline.names,
            "settings": self.pipeline.settings,
            "backpressure": self.backpressure.value,
            "created_at": self.created_at,
            "idle_s": round(self._clock() - self.last_active, 3),
            "stats": self.stats.to_dict(),
        }
