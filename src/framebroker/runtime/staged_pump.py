"""Frames of one session through a pipeline of several stages, stages overlapping.

Stage *k + 1* of frame *n* runs while stage *k* takes frame *n + 1*: one task per later
stage, fed through a one-place queue, so frames stay in order and a slow later stage holds
back the earlier ones instead of piling frames up. A parallel stage (a detector's, see
:meth:`~framebroker.core.Pipeline.parallel`) takes up to its width of frames at once and
hands them on in the order they came. The pump ends only once every stage is idle and the
inbox is still empty, with no ``await`` between that check and the end (a frame submitted
meanwhile starts a new pump).

The broker owns the lane; this module only moves its frames. Every call goes through
``watched`` (the broker's watchdog) and every answer through ``failed`` or ``delivered``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..core.pipeline import FrameResult
from ..logs import in_session

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from .lanes import Lane

__all__ = ["pump_staged"]

Answer = asyncio.Future[FrameResult]
Watched = Callable[..., Awaitable[Any]]
"""``watched(lane, stage, fn, *args, frame=result)``: ``fn(*args)`` under the watchdog."""
Settle = Callable[["Lane", Answer, Any], None]


async def pump_staged(
    lane: Lane,
    widths: Sequence[int],
    executor: Executor,
    watched: Watched,
    failed: Settle,
    delivered: Settle,
) -> None:
    """Run the lane's inbox through its pipeline's stages until it is empty and every stage
    idle; ``widths`` says how many frames each stage takes at once."""
    loop = asyncio.get_running_loop()
    session = lane.session
    pipeline = session.pipeline
    n = pipeline.stages
    hand: list[asyncio.Queue[tuple[FrameResult, Answer]]] = [
        asyncio.Queue(maxsize=1) for _ in range(n - 1)
    ]
    Call = tuple[asyncio.Future[Any], FrameResult, Answer]

    def start(stage: int, result: FrameResult, fut: Answer) -> Call:
        # Switches and rates of a parallel stage are read here, in frame order.
        chosen = pipeline.enter_stage(stage, result) if widths[stage] > 1 else None
        call = watched(lane, stage, session.process_stage, stage, result, chosen, frame=result)
        return asyncio.ensure_future(call), result, fut

    async def hand_on(stage: int, window: deque[Call]) -> None:
        task, result, fut = window.popleft()
        try:
            await task
        except Exception as exc:
            failed(lane, fut, exc)
            return
        if stage < n - 1:
            await hand[stage].put((result, fut))
        else:
            delivered(lane, fut, result)

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
                        executor, in_session(session.id, session.begin, frame)
                    )
                except Exception as exc:
                    failed(lane, fut, exc)
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
