"""An event loop in a thread of its own, so that blocking code can drive an async client.

The live counter, video analysis and WebRTC clients speak their protocols once, in asyncio;
their sync twins (``SyncLiveClient``, ``SyncVideoAnalysisClient``, ``SyncWebRTCStream``) each
own one :class:`LoopThread` and hand it the async client's coroutines (:meth:`~LoopThread.run`)
and async iterators (:meth:`~LoopThread.iterate`)::

    loop = LoopThread("framebroker-live-client")
    try:
        loop.run(client.connect(), timeout=30)
        for message in loop.iterate(client, timeout=None):
            ...
    finally:
        loop.close()

Every wait is bounded. :meth:`~LoopThread.run` cancels the coroutine on the loop when its
``timeout`` passes, so the async client cleans up as it does for any cancellation, then
raises :class:`~.errors.Timeout`; ``timeout=None`` is for waits the async client bounds
itself (an iteration that ends by its own rules). The caller waits in short slices: it sees
a loop closed under it (:class:`~.errors.ConnectionLost`), and a ``KeyboardInterrupt``
cancels the coroutine it was waiting for. :meth:`~LoopThread.close` stops the loop; the
thread then cancels what is left, finishes async generators and the loop's thread pool,
closes the loop, and is joined. A loop thread dropped without :meth:`~LoopThread.close` is
stopped the same way when it is garbage-collected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, Generic, TypeVar

from .connection import Connection
from .errors import ConnectionLost, Timeout

__all__ = ["GRACE_S", "BlockingIterator", "LoopThread", "patience"]

T = TypeVar("T")

GRACE_S = 2.0
"""Added to the bound the async client keeps itself, so that its own, more precise error
wins the race against the loop thread's."""

_SLICE_S = 0.2  # how often a waiting caller checks that the loop is still there


def patience(connection: Connection, *, steps: int = 1, retried: bool = True) -> float:
    """How long a sync call may wait for an async one that makes ``steps`` waits in a row,
    each bounded by ``connection.timeout_s``, on every try when it is ``retried`` (with the
    longest pause :class:`~.connection.Backoff` allows between tries), plus :data:`GRACE_S`."""
    if steps < 1:
        raise ValueError(f"steps must be 1 or more, got {steps}")
    retries = connection.retries if retried else 0
    pause = max(connection.backoff.max_s, connection.backoff.max_retry_after_s)
    return (retries + 1) * steps * connection.timeout_s + retries * pause + GRACE_S


class LoopThread:
    """An asyncio event loop running in a daemon thread named ``name`` (see the module).
    Started at construction; :meth:`close` stops it within ``close_timeout`` seconds."""

    def __init__(self, name: str = "framebroker-client", *, close_timeout: float = 10.0) -> None:
        if not close_timeout > 0:
            raise ValueError(f"close_timeout must be above 0, got {close_timeout!r}")
        self.name = name
        self.close_timeout = close_timeout
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closing = False
        # The thread holds the loop but not this object, so that a dropped LoopThread is
        # collected and its finalizer stops the loop.
        self._thread = threading.Thread(
            target=_serve, args=(self._loop, close_timeout), name=name, daemon=True
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._loop)

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` was called (or the loop stopped otherwise)."""
        return self._closing or not self._thread.is_alive()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coroutine`` on the loop and return its result, or raise what it raised.

        Raises :class:`~.errors.Timeout` when it has not finished within ``timeout`` seconds
        (it is cancelled first), :class:`~.errors.ConnectionLost` when the loop is closed
        before or while it runs, and ``RuntimeError`` when called from the loop's own thread
        (it would wait for itself for ever).
        """
        if timeout is not None and not timeout > 0:
            coroutine.close()
            raise ValueError(f"timeout must be above 0 or None, got {timeout!r}")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError(
                f"{self.name}: a sync client was called from its own event loop; "
                "use the async client there"
            )
        call = _Call(coroutine, timeout)
        with self._lock:  # close() cannot slip between the check and the scheduling
            if self.closed:
                coroutine.close()
                raise ConnectionLost(f"{self.name}: the client is closed")
            self._loop.call_soon_threadsafe(call.start)
        return self._wait(call, None if timeout is None else timeout + GRACE_S)

    def iterate(self, items: AsyncIterator[T], timeout: float | None) -> BlockingIterator[T]:
        """A blocking iterator over ``items``, each item awaited on the loop as :meth:`run`
        does (``timeout``: for each item)."""
        return BlockingIterator(self, items, timeout)

    def close(self) -> None:
        """Stop the loop: what still runs on it is cancelled. Waits for the thread to end;
        raises :class:`~.errors.Timeout` if it has not within ``close_timeout`` seconds
        (plus :data:`GRACE_S`). Closing twice does nothing more."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"{self.name}: cannot close the loop from its own thread")
        with self._lock:
            self._closing = True
        self._finalizer()
        self._thread.join(self.close_timeout + GRACE_S)
        if self._thread.is_alive():
            raise Timeout(
                f"{self.name}: the event loop thread did not end within "
                f"{self.close_timeout + GRACE_S:g} s"
            )

    def _wait(self, call: _Call[T], backstop: float | None) -> T:
        deadline = None if backstop is None else time.monotonic() + backstop
        try:
            while True:
                concurrent.futures.wait([call.future], _SLICE_S)
                if call.future.done():
                    return call.future.result()
                if not self._thread.is_alive():
                    raise ConnectionLost(f"{self.name}: the client was closed")
                if deadline is not None and time.monotonic() > deadline:
                    # The loop did not even cancel it in time: something blocks the loop.
                    raise Timeout(f"{self.name}: no answer from the event loop in {backstop:g} s")
        finally:
            call.cancel(self._loop)  # nothing when it is done; a KeyboardInterrupt cancels it


class _Call(Generic[T]):
    """One coroutine run on the loop for a thread that waits on :attr:`future`.

    Not ``asyncio.run_coroutine_threadsafe``: a call that the loop's closing cancels before it
    started must still close its coroutine (else it is reported as never awaited), and one
    that ends cancelled must tell its waiter so.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> None:
        self.coroutine = coroutine
        self.timeout = timeout
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.task: asyncio.Task[T] | None = None

    def start(self) -> None:
        """On the loop: run the coroutine as a task, unless the waiter gave up already."""
        if not self.future.set_running_or_notify_cancel():
            self.coroutine.close()
            return
        self.task = asyncio.get_running_loop().create_task(_bounded(self.coroutine, self.timeout))
        self.task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task[T]) -> None:
        self.coroutine.close()  # finished already, or never started when cancelled first
        if task.cancelled():
            self.future.set_exception(ConnectionLost("the client was closed while waiting"))
        elif (error := task.exception()) is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(task.result())

    def cancel(self, loop: asyncio.AbstractEventLoop) -> None:
        """From the waiting thread: cancel the call, wherever it is."""
        if self.future.done() or self.future.cancel():
            return  # done, or not started (start() then closes the coroutine)
        with contextlib.suppress(RuntimeError):  # the loop is closed: so is the task
            loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()


class BlockingIterator(Generic[T]):
    """Blocking iteration over an async iterator on a :class:`LoopThread`; made by
    :meth:`LoopThread.iterate`. Each ``next`` is one :meth:`LoopThread.run` of the async
    iterator's ``__anext__``, so errors, timeouts and the end are the async iterator's; on a
    closed loop the iteration ends, as an async client's does once it is closed."""

    def __init__(
        self, loop: LoopThread, items: AsyncIterator[T], timeout: float | None = None
    ) -> None:
        self._loop = loop
        self._items = items
        self.timeout = timeout

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._loop.closed:
            raise StopIteration
        item = self._loop.run(_next_or_end(self._items), self.timeout)
        if isinstance(item, _End):
            raise StopIteration
        return item


class _End:
    """What :func:`_next_or_end` returns at the end (a task may not raise ``Stop*``)."""


_END = _End()


async def _next_or_end(items: AsyncIterator[T]) -> T | _End:
    try:
        return await anext(items)
    except StopAsyncIteration:
        return _END


async def _bounded(coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
    if timeout is None:
        return await coroutine
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await coroutine
    except TimeoutError:
        if scope.expired():
            raise Timeout(f"no answer within {timeout:g} s") from None
        raise


def _stop(loop: asyncio.AbstractEventLoop) -> None:
    with contextlib.suppress(RuntimeError):  # closed already
        loop.call_soon_threadsafe(loop.stop)


def _serve(loop: asyncio.AbstractEventLoop, cleanup_s: float) -> None:
    """The thread: run the loop until it is stopped, then clean up within ``cleanup_s`` and
    close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        loop.run_until_complete(_clean_up(loop, time.monotonic() + cleanup_s))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _clean_up(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """What ``asyncio.run`` does at its end, each step within what is left of ``deadline``."""
    this = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks(loop) if task is not this]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for task in tasks:  # retrieved, so that none is logged as never retrieved
            if task.done() and not task.cancelled():
                task.exception()
    for step in (loop.shutdown_asyncgens, loop.shutdown_default_executor):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(step(), max(0.0, deadline - time.monotonic()))
