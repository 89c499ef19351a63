"""The worker pool, which outlives a processor that never returns.

A Python thread cannot be killed: a processor stuck in a call keeps its worker thread until it
returns, if ever. With a plain pool, ``max_workers`` stuck calls would stop every session of
the server. :class:`WorkerPool` is told when a call has overrun its time (:meth:`lose`) and
starts a thread in its place, so the other sessions keep their share of workers; it is told
again when that call finally returns (:meth:`regain`).

Replacements are bounded: at most ``max_workers`` of them, so a processor that hangs on every
session cannot make the server start threads without end. Past that the pool shrinks, and
``framebroker_stuck_threads`` in ``/metrics`` shows why.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["WorkerPool"]


def _nothing() -> None:
    """Submitted to make the pool look at its thread count again."""


class WorkerPool(ThreadPoolExecutor):
    """A :class:`ThreadPoolExecutor` that replaces threads lost to calls that overran."""

    def __init__(self, max_workers: int, *, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._base_workers = max_workers
        self._stuck = 0
        self._count_lock = threading.Lock()

    @property
    def stuck(self) -> int:
        """Worker threads inside a call that overran its time and has not returned yet."""
        return self._stuck

    def lose(self) -> None:
        """A worker thread is stuck in a call: start one more in its place."""
        with self._count_lock:
            self._stuck += 1
            self._resize()
            # A submission starts a thread unless it can take a permit from _idle_semaphore,
            # which every worker releases after each call, busy again or not: the stuck one
            # may have left one. Without draining them the submission below would start no
            # thread, and the frames queued behind the stuck call would wait on it.
            while self._idle_semaphore.acquire(blocking=False):
                pass
        # Submitted now, so frames already queued need not wait for the next submission.
        with contextlib.suppress(RuntimeError):  # shut down: nothing left to run
            self.submit(_nothing)

    def regain(self) -> None:
        """A stuck call returned; its thread serves the pool again. Safe from any thread."""
        with self._count_lock:
            self._stuck = max(self._stuck - 1, 0)
            self._resize()

    def _resize(self) -> None:
        # ThreadPoolExecutor starts a thread on submission while it has fewer than
        # _max_workers; lowering it again stops nothing, idle extra threads just wait.
        self._max_workers = self._base_workers + min(self._stuck, self._base_workers)
