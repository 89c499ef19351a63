"""What ``/metrics`` shows: Prometheus series for sessions, frames, processors and errors.

One :class:`Metrics` per server, on a registry of its own (not the library's global one), so
two servers in one process, as in the tests, never mix their counts. Counters are bumped where
things happen (the broker, the error handlers); gauges that describe the present (sessions
open, frames queued) are read from the broker when Prometheus scrapes, so they cannot drift.
A process that leaks memory shows in ``process_resident_memory_bytes``, which the process
collector adds; which processor leaks shows in ``framebroker_processor_memory_growth_bytes``
(see :mod:`framebroker.runtime.memory`). A processor stuck in a call shows in
``framebroker_processor_timeouts_total`` and ``framebroker_stuck_threads``.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..core.pipeline import FrameResult

__all__ = ["CONTENT_TYPE", "Metrics", "SessionCensus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Processor times run from tens of microseconds (a tracker) to seconds (a slow model).
_LATENCY_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0)  # fmt: skip

SessionCensus = Callable[[], Iterable[tuple[str, int]]]
"""Yields ``(transport, frames queued)`` for every open session, when a scrape asks."""


class _SessionCollector(Collector):
    def __init__(self, census: SessionCensus) -> None:
        self._census = census

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(
            "framebroker_sessions", "Sessions open now", labels=["transport"]
        )
        queued = GaugeMetricFamily(
            "framebroker_queued_frames",
            "Frames waiting for their session's pipeline now",
            labels=["transport"],
        )
        open_by: Tally[str] = Tally()
        queued_by: Tally[str] = Tally()
        for transport, waiting in self._census():
            open_by[transport] += 1
            queued_by[transport] += waiting
        for transport in sorted(open_by):
            sessions.add_metric([transport], open_by[transport])
            queued.add_metric([transport], queued_by[transport])
        yield sessions
        yield queued
        tasks = GaugeMetricFamily(
            "framebroker_event_loop_tasks", "Tasks alive on the server's event loop now"
        )
        try:
            tasks.add_metric([], len(asyncio.all_tasks()))
        except RuntimeError:  # scraped from outside the loop (a test's own registry read)
            return
        yield tasks


class Metrics:
    """The server's series. ``census`` is read at each scrape (see :data:`SessionCensus`)."""

    def __init__(self, census: SessionCensus | None = None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        if census is not None:
            self.registry.register(_SessionCollector(census))
        self.frames = Counter(
            "framebroker_frames",
            "Frames by transport and outcome: received, processed, dropped (overtaken by a "
            "newer frame or refused by a limit) or failed",
            ["transport", "outcome"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "framebroker_frames_dropped",
            "Frames dropped, by transport and reason: overtaken (a newer frame came first), "
            "queue_full (max_pending_frames), rate_limited (max_fps_per_session)",
            ["transport", "reason"],
            registry=self.registry,
        )
        self.processor_seconds = Histogram(
            "framebroker_processor_seconds",
            "Time one processor took on one frame",
            ["processor"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.processor_errors = Counter(
            "framebroker_processor_errors",
            "Frames on which a processor raised",
            ["processor"],
            registry=self.registry,
        )
        self.processor_timeouts = Counter(
            "framebroker_processor_timeouts",
            "Calls of a processor that ran past its time limit (limits.processor_timeout_s)",
            ["processor"],
            registry=self.registry,
        )
        self.stuck_threads = Gauge(
            "framebroker_stuck_threads",
            "Worker threads still inside a processor call that ran past its time limit",
            registry=self.registry,
        )
        self.processor_memory = Gauge(
            "framebroker_processor_memory_growth_bytes",
            "Resident memory the processor's calls added, net, estimated from every Nth call "
            "(processor_memory_sample_every); a steady climb is a leak",
            ["processor"],
            registry=self.registry,
        )
        self.errors = Counter(
            "framebroker_errors",
            "Requests and messages refused, by transport and error code",
            ["transport", "code"],
            registry=self.registry,
        )
        self.sessions_started = Counter(
            "framebroker_sessions_started",
            "Sessions started, by transport",
            ["transport"],
            registry=self.registry,
        )

    def session_started(self, transport: str) -> None:
        self.sessions_started.labels(transport).inc()

    def frame_received(self, transport: str) -> None:
        self.frames.labels(transport, "received").inc()

    def frames_dropped(self, transport: str, n: int = 1, reason: str = "overtaken") -> None:
        self.frames.labels(transport, "dropped").inc(n)
        self.dropped.labels(transport, reason).inc(n)

    def frame_failed(self, transport: str) -> None:
        self.frames.labels(transport, "failed").inc()

    def frame_processed(self, transport: str, result: FrameResult | None = None) -> None:
        """A frame went through processing; ``result``'s processor timings are recorded too
        (``None`` where a transport records them as each processor answers)."""
        self.frames.labels(transport, "processed").inc()
        if result is not None:
            self.processors_ran(result)

    def processors_ran(self, result: FrameResult) -> None:
        for name, seconds in result.timings.items():
            self.processor_seconds.labels(name).observe(seconds)
        for error in result.errors:
            failed = error.get("processor")
            if failed:
                self.processor_errors.labels(failed).inc()

    def processor_timed_out(self, processor: str) -> None:
        self.processor_timeouts.labels(processor).inc()

    def memory_grew(self, processor: str, nbytes: float) -> None:
        """``processor``'s calls changed resident memory by ``nbytes`` (may be negative)."""
        self.processor_memory.labels(processor).inc(nbytes)

    def error(self, transport: str, code: str) -> None:
        """A request or message refused: ``code`` is the error's wire code."""
        self.errors.labels(transport, code).inc()

    def render(self) -> bytes:
        """The text exposition format, for ``GET /metrics``."""
        return generate_latest(self.registry)
