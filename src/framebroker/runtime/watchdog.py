"""Time limits on processor calls, which a thread pool cannot enforce by itself.

A worker thread cannot be interrupted, so a processor that hangs is not stopped: it is
*noticed*. :meth:`Watchdog.call` runs a pipeline call in the :class:`WorkerPool` and watches
the processor the pipeline says is running (:meth:`~framebroker.core.Pipeline.running`). When
one has run past the limit, the watchdog counts it in ``framebroker_processor_timeouts_total``,
gives the pool a thread in place of the lost one, and tells its caller (``on_stuck``), who
answers the frames waiting on it; when the call finally returns, the pool gets its thread back
and the caller is told again (``on_return``). The awaiting caller itself keeps waiting for the
call, so a processor is still never called twice at once.

The clock runs per processor call, from when a worker thread starts it: time queued behind
other sessions' work is not the processor's fault, and a pipeline of several slow but
well-behaved processors is not cut short. Checking costs one timer per call while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ..core.pipeline import Pipeline, ProcessorCall
from .metrics import Metrics
from .workers import WorkerPool

__all__ = ["Watchdog"]

T = TypeVar("T")

OnStuck = Callable[[ProcessorCall], None]
OnReturn = Callable[[ProcessorCall, float], None]
"""Told the call that overran and how many seconds it had run when it returned."""


class Watchdog:
    """Runs pipeline calls in ``pool`` with a limit of ``timeout_s`` per processor call.

    Raises ``ValueError`` for a limit that is not a finite number > 0.
    """

    def __init__(self, pool: WorkerPool, timeout_s: float, metrics: Metrics) -> None:
        if not 0 < timeout_s < float("inf"):
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        self.pool = pool
        self.timeout_s = timeout_s
        self.metrics = metrics

    async def call(
        self,
        fn: Callable[[], T],
        pipeline: Pipeline,
        stage: int,
        *,
        frame: int | None = None,
        on_stuck: OnStuck,
        on_return: OnReturn,
    ) -> T:
        """``fn()`` in the pool, where it runs stage ``stage`` of ``pipeline`` (or the whole
        of a one-stage pipeline) on frame number ``frame``, which is needed only where a
        parallel stage runs several frames at once. Waits for it however long it takes;
        ``on_stuck`` and ``on_return`` are called on the event loop as described in the
        module docstring."""
        loop = asyncio.get_running_loop()
        work = self.pool.submit(fn)
        watch = _Watch(self, loop, pipeline, stage, frame, work, on_stuck, on_return)
        try:
            return await asyncio.wrap_future(work, loop=loop)
        finally:
            watch.disarm()


class _Watch:
    """One pool call under watch: a timer that re-arms until the call ends or overruns."""

    __slots__ = (
        "dog",
        "frame",
        "handle",
        "loop",
        "on_return",
        "on_stuck",
        "pipeline",
        "stage",
        "work",
    )

    def __init__(
        self,
        dog: Watchdog,
        loop: asyncio.AbstractEventLoop,
        pipeline: Pipeline,
        stage: int,
        frame: int | None,
        work: Future[Any],
        on_stuck: OnStuck,
        on_return: OnReturn,
    ) -> None:
        self.dog = dog
        self.loop = loop
        self.pipeline = pipeline
        self.stage = stage
        self.frame = frame
        self.work = work
        self.on_stuck = on_stuck
        self.on_return = on_return
        self.handle: asyncio.TimerHandle | None = loop.call_later(dog.timeout_s, self.check)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def check(self) -> None:
        self.handle = None
        if self.work.done():
            return
        limit = self.dog.timeout_s
        now = time.perf_counter()
        running = [
            c
            for c in self.pipeline.running()
            if c.stage == self.stage and self.frame in (None, c.frame)
        ]
        for call in running:
            if now - call.started >= limit:
                self._overran(call)
                return
        # Not started yet (queued for a worker) or between processors: look again a quarter
        # of the limit later; else when the processor running now would reach it.
        due = min((c.started + limit for c in running), default=now + limit / 4)
        self.handle = self.loop.call_later(max(due - now, 0.001), self.check)

    def _overran(self, call: ProcessorCall) -> None:
        dog = self.dog
        dog.pool.lose()
        dog.metrics.processor_timed_out(call.processor)
        self.on_stuck(call)
        self.work.add_done_callback(lambda _: self._returned(call))

    def _returned(self, call: ProcessorCall) -> None:
        """In the worker thread, as the stuck call returns (or at once if it just did)."""
        self.dog.pool.regain()
        seconds = time.perf_counter() - call.started
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody left to tell
            self.loop.call_soon_threadsafe(self.on_return, call, seconds)
