"""An in-memory :class:`~framebroker.sessions.Sessions`, for testing what speaks to it.

What httpx's ``MockTransport`` is to a client, this is to a transport: the same interface as
the broker with none of its machinery. Sessions live in the core's own directory
(:class:`~framebroker.core.SessionManager`, so ids, limits and client shares behave as in
the server), frames run through their pipeline right away on the event loop, ended sessions
are remembered in a dict, and the bus is the core's. No worker pool, no watchdog, no store,
no idle sweep: a transport test that passes here and against the broker depends on nothing
but the interface.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from framebroker.core import Backpressure, Bus, Frame, Message, SessionManager, SessionPolicy
from framebroker.core.manager import ProcessorSpec
from framebroker.errors import FrameRateExceeded, SessionNotFound
from framebroker.plugins import ProcessorRegistry
from framebroker.runtime.metrics import Metrics
from framebroker.sessions import FrameIn, FrameOut, SessionInfo, SessionSummary

__all__ = ["FakeFeed", "FakeSessions", "inline"]

T = TypeVar("T")


class FakeFeed:
    """A bus subscription the event loop can wait on (publishers run on the loop here)."""

    def __init__(self, bus: Bus, pattern: str, maxlen: int | None, keep: Any) -> None:
        self._event = asyncio.Event()
        self._sub = bus.subscribe(pattern, maxlen=maxlen, wake=self._event.set, keep=keep)

    @property
    def dropped(self) -> int:
        return self._sub.dropped

    async def wait(self) -> None:
        while not len(self._sub):
            await self._event.wait()
            self._event.clear()

    def drain(self) -> list[Message]:
        return self._sub.drain()

    def close(self) -> None:
        self._sub.close()


def _out(session_id: str, frame: Frame, result: Any) -> FrameOut:
    return FrameOut(
        session_id=session_id,
        index=frame.index,
        outputs=result.outputs,
        timings=result.timings,
        errors=result.errors,
        ran=result.ran,
        skipped=dict(result.skipped),
        dropped=result.dropped,
        detections=frame.detections,
        timestamp=frame.timestamp,
        meta=frame.meta,
    )


class FakeSessions:
    """Sessions run inline; see the module docstring."""

    def __init__(
        self,
        registry: ProcessorRegistry,
        *,
        default_pipeline: Sequence[ProcessorSpec] = ("bytetrack",),
        policy: SessionPolicy | None = None,
        warm_up: Sequence[str] = (),
    ) -> None:
        self.registry = registry
        self.warm_up = list(warm_up)
        self.default = list(default_pipeline)
        self.manager = SessionManager(
            lambda specs: registry.pipeline(list(specs) if specs is not None else self.default),
            policy,
        )
        self.bus = Bus()
        self.ended: dict[str, SessionSummary] = {}
        self.submitted = 0
        # What a server process needs of its host besides the interface (see SessionHost).
        self.metrics = Metrics()
        self.closing = False
        self.stuck_threads = 0

    @property
    def session_count(self) -> int:
        return len(self.manager)

    async def start(self) -> None:
        # As the broker does: no first frame should wait for a kernel to compile.
        await self.run_blocking(self.registry.warm_up, self.warm_up)

    async def stop(self) -> None:
        self.closing = True
        for sid in self.manager.ids():
            await self.end(sid, reason="server_stopped")

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def _info(self, session_id: str) -> SessionInfo:
        session = self.manager.get(session_id)
        info = session.info()
        return SessionInfo(
            id=session.id,
            state="active",
            transport=session.transport,
            pipeline=info["pipeline"],
            created_at=info["created_at"],
            stats=info["stats"],
            backpressure=info["backpressure"],
            idle_s=info["idle_s"],
            stage_widths=(1,) * session.pipeline.stages,
            queue=1,
        )

    async def create(
        self,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        session_id: str | None = None,
        backpressure: Backpressure = Backpressure.WAIT,
        client: str | None = None,
    ) -> SessionInfo:
        session = self.manager.create(
            session_id=session_id,
            transport=transport,
            pipeline=pipeline,
            backpressure=backpressure,
            client=client,
        )
        return self._info(session.id)

    async def attach(
        self,
        session_id: str,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
        create: bool = True,
    ) -> SessionInfo:
        if session_id in self.manager:
            return self._info(session_id)
        if not create:
            raise SessionNotFound(session_id, field="session_id")
        session = self.manager.attach(
            session_id, transport=transport, pipeline=pipeline, client=client
        )
        return self._info(session.id)

    async def submit(self, session_id: str, frame: FrameIn) -> FrameOut:
        session = self.manager.get(session_id)
        if not frame.control:
            try:
                session.admit(frame.received_at)
            except FrameRateExceeded:
                self.metrics.frames_dropped(session.transport, reason="rate_limited")
                raise
        session.touch()
        core = Frame(
            source=frame.image,
            detections=frame.detections,
            meta=frame.meta,
            received_at=frame.received_at,
        )
        self.submitted += 1
        out = _out(session_id, core, session.process(core))
        self.bus.publish(f"session/{session_id}/result", out)
        return out

    async def attach_and_submit(
        self,
        session_id: str,
        frame: FrameIn,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
        create: bool = True,
    ) -> tuple[SessionInfo, FrameOut]:
        info = await self.attach(
            session_id, transport=transport, pipeline=pipeline, client=client, create=create
        )
        return info, await self.submit(info.id, frame)

    def offer(self, session_id: str, frame: FrameIn) -> bool:
        session = self.manager.get(session_id)
        try:
            session.admit(frame.received_at)
        except FrameRateExceeded:
            self.metrics.frames_dropped(session.transport, reason="rate_limited")
            return False
        core = Frame(source=frame.image, meta=frame.meta, received_at=frame.received_at)
        result = session.process(core)
        for name in result.ran:
            self.bus.publish(
                f"session/{session_id}/prediction",
                {
                    "model": name,
                    "frame": core.index,
                    "meta": core.meta,
                    "outputs": result.outputs,
                    "merged": result.outputs,
                    "error": next((e for e in result.errors if e["processor"] == name), None),
                    "latency_s": max(0.0, time.time() - core.received_at),
                    "disabled": [],
                },
            )
        return True

    async def end(self, session_id: str, *, reason: str = "ended") -> SessionSummary:
        session = self.manager.remove(session_id)
        summary = session.end(reason)
        self.ended[session_id] = summary
        self.bus.publish(f"session/{session_id}/ended", summary.to_dict())
        return summary

    async def info(self, session_id: str) -> SessionInfo:
        if session_id in self.manager:
            return self._info(session_id)
        summary = self.ended.get(session_id)
        if summary is None:
            raise SessionNotFound(session_id, field="session_id")
        return SessionInfo(
            id=session_id,
            state="ended",
            transport=summary.transport,
            pipeline=summary.pipeline,
            created_at=summary.created_at,
            stats=summary.stats,
            summary=summary.to_dict(),
        )

    async def live(self) -> list[SessionInfo]:
        return [self._info(sid) for sid in self.manager.ids()]

    def subscribe(
        self,
        pattern: str,
        *,
        maxlen: int | None = None,
        keep: Callable[[Message], bool] | None = None,
    ) -> FakeFeed:
        return FakeFeed(self.bus, pattern, maxlen, keep)

    def publish(self, topic: str, payload: Any) -> int:
        return self.bus.publish(topic, payload)

    def check_pipeline(self, specs: Sequence[ProcessorSpec], *, client: bool = False) -> None:
        if client:
            self.registry.check_request(specs)
        else:
            self.registry.pipeline(specs)

    def check_client(self, client: str | None) -> None:
        self.manager.check_client(client)

    async def prepare(self, specs: Sequence[ProcessorSpec]) -> None:
        names = [s if isinstance(s, str) else str(s.get("name")) for s in specs]
        for name in names:
            self.registry.resolve(name)
        self.registry.warm_up(names)


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    """An offload that runs ``fn`` on the spot."""
    return fn(*args)
