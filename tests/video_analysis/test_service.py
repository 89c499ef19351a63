"""VideoAnalysis's connect rules when a stream's process died: real brokers on one SQLite store,
one of them "killed" (its tasks stopped, its store dropped, nothing ended), as a worker or node
is by ``kill -9``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from framebroker.config import AnalysisSettings
from framebroker.errors import ClusterUnavailable, SessionConflict, SessionNotFound
from framebroker.plugins import ProcessorRegistry
from framebroker.processors.video_window import VideoWindow
from framebroker.runtime import Broker, BrokerConfig
from framebroker.sessions import FrameIn
from framebroker.storage import SQLStore
from framebroker.video_analysis.service import VideoAnalysis
from framebroker.video_analysis.streams import VideoStream

from .test_streams import Recorder, image

SID = "cam-1"


class Processes:
    """Brokers ("processes") on one store; each is stopped at the end, the killed ones too."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started: list[Broker] = []
        self.killed: list[Broker] = []

    async def start(self, owner: str, *, checkpoint_every_s: float = 0.05) -> Broker:
        registry = ProcessorRegistry()
        registry.register("video_window", VideoWindow)
        broker = Broker(
            registry,
            store=SQLStore(self.url),
            config=BrokerConfig(
                max_workers=2, owner_id=owner, checkpoint_every_s=checkpoint_every_s
            ),
        )
        await broker.start()
        self.started.append(broker)
        return broker

    async def kill(self, broker: Broker) -> None:
        """As ``kill -9``: its tasks stop and nothing of it reaches the store any more."""
        for task in (broker._sweeper, broker._checkpointer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert broker.store is not None
        broker.store.close()
        self.started.remove(broker)
        self.killed.append(broker)

    async def close(self) -> None:
        for broker in self.started:
            await broker.stop()
        for broker in self.killed:
            broker.executor.shutdown(wait=True)


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    found = Processes(f"sqlite:///{tmp_path / 'shared.sqlite3'}")
    yield found
    await found.close()


def analysis(broker: Broker, **settings: Any) -> VideoAnalysis:
    config = AnalysisSettings(allowed_session_ids=[SID], window_frames=3, **settings)
    return VideoAnalysis(config, broker, broker.run_blocking)


async def connect(va: VideoAnalysis, connection: str, emit: Recorder) -> VideoStream:
    stream, _ = await va.open_stream(connection, SID, emit=emit)
    return stream


async def frames(stream: VideoStream, seeds: range) -> list[tuple[int, int]]:
    acks = [await stream.add(image(seed)) for seed in seeds]
    return [(ack["frame"], ack["window"]) for ack in acks]


async def result(emit: Recorder) -> dict[str, Any]:
    event, payload = await emit.next()
    assert event == "result", payload
    return payload


async def snapshotted(broker: Broker, at_least: int) -> None:
    for _ in range(100):
        if broker.checkpoints >= at_least:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no snapshot: {broker.checkpoints} taken")


async def a_stream_on_a_process_that_dies(
    processes: Processes, owner: str
) -> tuple[Broker, Recorder]:
    """A stream of 4 frames (window 0 answered, window 1 open) snapshotted, then its process
    killed."""
    first = await processes.start(owner)
    emit = Recorder()
    stream = await connect(analysis(first), "c1", emit)
    assert await frames(stream, range(4)) == [(0, 0), (1, 0), (2, 0), (3, 1)]
    assert (await result(emit))["window"] == 0
    await snapshotted(first, 1)
    await processes.kill(first)
    return first, emit


@pytest.mark.parametrize("lost", ["node_lost", "server_restarted"])
async def test_a_stream_whose_process_died_resumes_from_its_snapshot(
    processes: Processes, lost: str
) -> None:
    """Another node (``node_lost``) or the process's next life (``server_restarted``, a worker
    restarted by its supervisor): the id is not used up, its numbering goes on from the
    snapshot, and window 1, open at the snapshot, is lost rather than numbered again."""
    dead, _ = await a_stream_on_a_process_that_dies(processes, "a")
    if lost == "node_lost":
        survivor = await processes.start("b")
        assert dead.owner is not None
        assert await survivor.recover([dead.owner]) == 1
    else:
        survivor = await processes.start("a")  # its next life recovers its earlier one's
    info = await survivor.info(SID)
    assert (info.state, info.summary and info.summary["reason"]) == ("ended", lost)

    va = analysis(survivor)
    emit = Recorder()
    stream = await connect(va, "c2", emit)
    assert await frames(stream, range(10, 13)) == [(4, 2), (5, 2), (6, 2)]
    window = await result(emit)
    assert (window["window"], window["first_frame"], window["frames"]) == (2, 4, 3)

    # Running again: a second connection with the id is refused, here and elsewhere.
    with pytest.raises(SessionConflict):
        await va.open_stream("c3", SID, emit=Recorder())
    with pytest.raises(SessionConflict):
        await analysis(survivor).open_stream("c3", SID, emit=Recorder())
    # Ended by its client, the id is used up, as ever.
    await va.close_stream("c2")
    with pytest.raises(SessionNotFound):
        await analysis(survivor).open_stream("c4", SID, emit=Recorder())
    await va.stop()


async def test_a_stream_whose_process_died_before_a_snapshot_is_used_up(
    processes: Processes,
) -> None:
    """One server keeps no snapshots (``checkpoint_every_s`` is a cluster's): after a crash
    nothing can carry a stream's numbering on, so its id stays used up (``server_restarted``),
    and a server that makes ids on connect gives the client a new one."""
    crashed = await processes.start("a", checkpoint_every_s=0)
    emit = Recorder()
    stream = await connect(analysis(crashed), "c1", emit)
    await frames(stream, range(4))
    await processes.kill(crashed)
    again = await processes.start("a", checkpoint_every_s=0)
    info = await again.info(SID)
    assert (info.state, info.summary and info.summary["reason"]) == ("ended", "server_restarted")

    with pytest.raises(SessionNotFound):
        await connect(analysis(again), "c2", Recorder())
    made = analysis(again, generate_session_id_on_connect=True)
    renamed, generated = await made.open_stream("c3", SID, emit=Recorder())
    assert generated
    assert renamed.id != SID
    assert await frames(renamed, range(1)) == [(0, 0)]
    await made.stop()


async def test_only_a_stream_is_resumed_by_a_stream(processes: Processes) -> None:
    """An id another transport's session used (and died with) is used up for a stream: what
    would resume is not a stream's session."""
    first = await processes.start("a")
    await first.create(transport="rest", pipeline=[{"name": "video_window"}], session_id=SID)
    await first.submit(SID, FrameIn(image=image(0)()))
    await snapshotted(first, 1)  # it could be resumed, by the tracking API's attach
    await processes.kill(first)
    survivor = await processes.start("a")
    assert (await survivor.info(SID)).summary["reason"] == "server_restarted"  # type: ignore[index]
    with pytest.raises(SessionNotFound):
        await connect(analysis(survivor), "c1", Recorder())


async def test_a_connection_that_cannot_learn_where_its_id_runs_is_refused_soon(
    processes: Processes,
) -> None:
    """An owner that died holds its lease for seconds, and asking for it waits that long: the
    connection is refused (retry) within a python-socketio client's connect timeout, rather
    than resumed for a client that gave up, and its id stays good."""
    broker = await processes.start("a")

    class Waits:
        """The broker, with its owner lookups as slow as a dead owner's lease."""

        def __getattr__(self, name: str) -> Any:
            return getattr(broker, name)

        async def info(self, session_id: str) -> Any:
            await asyncio.sleep(5)
            return await broker.info(session_id)

    config = AnalysisSettings(allowed_session_ids=[SID], window_frames=3)
    slow = VideoAnalysis(config, Waits(), broker.run_blocking)  # type: ignore[arg-type]
    started = asyncio.get_running_loop().time()
    with pytest.raises(ClusterUnavailable):
        await slow.open_stream("c1", SID, emit=Recorder())
    assert asyncio.get_running_loop().time() - started < 1.0
    assert slow.ids.check(SID) == SID  # neither in use nor used up: as good as it was
    await slow.stop()
