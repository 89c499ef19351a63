"""The loop thread the sync clients drive their async twins with: results and errors cross
over, every wait ends, and closing leaves no thread, loop, task or generator behind (pytest
turns a ResourceWarning, a never-awaited coroutine or an unraisable error into a failure)."""

from __future__ import annotations

import _thread
import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from framebroker.client import Backoff, Connection, ConnectionLost, NotFound, Timeout
from framebroker.client.loop_thread import GRACE_S, LoopThread, patience


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("test-loop", close_timeout=5)
    try:
        yield thread
    finally:
        thread.close()


async def where() -> tuple[str, asyncio.AbstractEventLoop]:
    return threading.current_thread().name, asyncio.get_running_loop()


def test_a_coroutine_runs_on_the_loop_thread_and_its_result_comes_back(loop: LoopThread) -> None:
    name, first = loop.run(where(), timeout=5)
    assert name == "test-loop"
    assert loop.run(where(), timeout=None)[1] is first  # one loop for the client's life


def test_an_error_is_raised_in_the_caller_as_it_was(loop: LoopThread) -> None:
    async def refused() -> None:
        raise NotFound("no such face", status=404, code="face_not_found", field="face_id")

    with pytest.raises(NotFound) as missing:
        loop.run(refused(), timeout=5)
    assert (missing.value.code, missing.value.field) == ("face_not_found", "face_id")


def test_a_timeout_cancels_the_coroutine_and_lets_it_clean_up(loop: LoopThread) -> None:
    cleaned = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    started = time.monotonic()
    with pytest.raises(Timeout, match=r"no answer within 0\.2 s"):
        loop.run(slow(), timeout=0.2)
    assert time.monotonic() - started < 0.2 + GRACE_S
    assert cleaned.wait(2)
    assert loop.run(where(), timeout=5)[0] == "test-loop"  # the loop goes on


def test_the_coroutines_own_timeout_error_is_not_taken_for_the_loops(loop: LoopThread) -> None:
    async def times_out() -> None:
        raise TimeoutError("its own")

    with pytest.raises(TimeoutError, match="its own"):
        loop.run(times_out(), timeout=5)
    with pytest.raises(TimeoutError, match="its own"):
        loop.run(times_out(), timeout=None)


def test_a_blocked_loop_is_given_up_on_after_the_grace(loop: LoopThread) -> None:
    async def blocks() -> None:
        time.sleep(0.1 + GRACE_S + 0.5)  # holds the loop: the timeout cannot fire in it

    started = time.monotonic()
    with pytest.raises(Timeout, match="no answer from the event loop"):
        loop.run(blocks(), timeout=0.1)
    assert time.monotonic() - started < 0.1 + GRACE_S + 0.45


def test_ctrl_c_in_the_caller_cancels_the_call(loop: LoopThread) -> None:
    cleaned = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        loop.run(slow(), timeout=None)
    assert cleaned.wait(2)


def test_a_call_from_the_loop_thread_is_refused_rather_than_deadlocked(loop: LoopThread) -> None:
    async def calls_back() -> None:
        loop.run(where(), timeout=1)

    with pytest.raises(RuntimeError, match="from its own event loop"):
        loop.run(calls_back(), timeout=5)


def test_iteration_blocks_for_each_item_and_ends_with_the_async_iterator(
    loop: LoopThread,
) -> None:
    async def counted() -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield i

    assert list(loop.iterate(counted(), timeout=5)) == [0, 1, 2]


def test_iteration_on_a_closed_loop_ends() -> None:
    async def one() -> AsyncIterator[int]:
        yield 1

    loop = LoopThread("test-loop")
    items = loop.iterate(one(), timeout=5)
    loop.close()
    assert list(items) == []


def test_an_item_that_does_not_come_in_time_is_a_timeout(loop: LoopThread) -> None:
    class Ticks:
        """An async iterator, not a generator: a cancelled ``__anext__`` leaves it usable."""

        def __init__(self) -> None:
            self.n = 0

        def __aiter__(self) -> Ticks:
            return self

        async def __anext__(self) -> int:
            self.n += 1
            if self.n == 2:
                await asyncio.sleep(60)
            return self.n

    items = loop.iterate(Ticks(), timeout=0.2)
    assert next(items) == 1
    with pytest.raises(Timeout):
        next(items)
    assert next(items) == 3


def test_an_async_generator_left_half_read_is_finished_at_close() -> None:
    finished = threading.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            while True:
                yield 1
                await asyncio.sleep(0)
        finally:
            finished.set()

    loop = LoopThread("test-loop")
    for item in loop.iterate(endless(), timeout=5):
        assert item == 1
        break
    loop.close()
    assert finished.is_set()


def test_close_cancels_what_runs_joins_the_thread_and_closes_the_loop() -> None:
    loop = LoopThread("test-loop-close")
    _, inner = loop.run(where(), timeout=5)
    cleaned = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    def waiter() -> None:
        try:
            loop.run(forever(), timeout=None)
        except BaseException as exc:  # kept for the assertion below
            outcome.append(exc)

    other = threading.Thread(target=waiter)
    other.start()
    time.sleep(0.3)
    loop.close()
    other.join(5)
    assert cleaned.is_set()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ConnectionLost)
    assert loop.closed
    assert inner.is_closed()
    assert "test-loop-close" not in {t.name for t in threading.enumerate()}
    loop.close()  # twice: nothing more


def test_a_call_after_close_is_connection_lost_and_its_coroutine_is_closed() -> None:
    loop = LoopThread("test-loop")
    loop.close()
    coroutine = where()
    with pytest.raises(ConnectionLost, match="closed"):
        loop.run(coroutine, timeout=5)
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning when collected


def test_calls_racing_close_end_as_connection_lost_never_hanging() -> None:
    for _ in range(20):
        loop = LoopThread("test-loop-race")
        errors: list[BaseException] = []

        def caller(thread: LoopThread = loop, errors: list[BaseException] = errors) -> None:
            for _ in range(50):
                try:
                    thread.run(asyncio.sleep(0.001), timeout=5)
                except ConnectionLost as exc:
                    errors.append(exc)
                    return

        other = threading.Thread(target=caller)
        other.start()
        time.sleep(0.005)
        loop.close()
        other.join(5)
        assert not other.is_alive()
        gc.collect()  # a coroutine left unawaited would warn here


def test_a_dropped_loop_thread_stops_by_itself() -> None:
    loop = LoopThread("test-loop-dropped")
    _, inner = loop.run(where(), timeout=5)
    thread = next(t for t in threading.enumerate() if t.name == "test-loop-dropped")
    del loop
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    assert inner.is_closed()


def test_bad_timeouts_are_refused(loop: LoopThread) -> None:
    coroutine = where()
    with pytest.raises(ValueError, match="timeout must be above 0"):
        loop.run(coroutine, timeout=0)
    with pytest.raises(ValueError, match="close_timeout"):
        LoopThread(close_timeout=0)


def test_patience_covers_every_try_and_pause() -> None:
    connection = Connection(
        "http://h", timeout_s=2, retries=3, backoff=Backoff(max_s=1, max_retry_after_s=5)
    )
    assert patience(connection) == 4 * 2 + 3 * 5 + GRACE_S
    assert patience(connection, steps=2) == 4 * 2 * 2 + 3 * 5 + GRACE_S
    assert patience(connection, retried=False) == 2 + GRACE_S
    with pytest.raises(ValueError, match="steps"):
        patience(connection, steps=0)
