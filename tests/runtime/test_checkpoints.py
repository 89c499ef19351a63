"""Checkpoints: a broker that snapshots its sessions while they run, so that another process
can resume one if this one dies (what a cluster's takeover resumes from)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from framebroker.config import Settings
from framebroker.runtime import Broker, BrokerConfig
from framebroker.server.app import build_registry
from framebroker.storage import SQLStore

from ..cluster.frames import frame, track_ids
from ..cluster.helpers import eventually


def broker(url: str, owner: str, every_s: float) -> Broker:
    return Broker(
        build_registry(Settings()),
        store=SQLStore(url),
        config=BrokerConfig(owner_id=owner, checkpoint_every_s=every_s, max_workers=2),
    )


async def test_a_session_that_processed_frames_is_snapshotted_while_it_runs(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    a = broker(url, "a", 0.05)
    await a.start()
    try:
        info = await a.create(transport="test", pipeline=["bytetrack"])
        for k in range(6):
            await a.submit(info.id, frame(k))
        assert a.store is not None
        store = a.store

        def saved_frames() -> int:
            snapshot = store.load_snapshot(info.id)
            return -1 if snapshot is None else int(snapshot["state"]["next_index"])

        await eventually(lambda: saved_frames() == 6, what="a snapshot after frame 5")
        taken = a.checkpoints
        await asyncio.sleep(0.2)
        assert a.checkpoints == taken  # nothing new processed: nothing written again
        assert a.holds(info.id)
    finally:
        await a.stop()


async def test_another_owner_resumes_a_dead_owners_session_from_its_checkpoint(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    a = broker(url, "a", 0.05)
    await a.start()
    info = await a.create(transport="test", pipeline=["bytetrack"])
    got = [track_ids(await a.submit(info.id, frame(k))) for k in range(10)]
    await eventually(lambda: a.checkpoints >= 1, what="a checkpoint")
    await asyncio.sleep(0.15)
    # a dies: nothing ends, its store is dropped, its loops stop.
    assert a.store is not None
    a.store.close()
    for task in (a._sweeper, a._checkpointer):
        assert task is not None
        task.cancel()
    b = broker(url, "b", 0)
    await b.start()
    try:
        assert a.owner is not None
        assert await b.recover([a.owner]) == 1
        resumed = await b.attach(info.id, transport="test", create=False)
        assert resumed.id == info.id
        got += [track_ids(await b.submit(info.id, frame(k))) for k in range(10, 20)]
        ref = broker(f"sqlite:///{tmp_path / 'ref.sqlite3'}", "ref", 0)
        await ref.start()
        try:
            one = await ref.create(transport="test", pipeline=["bytetrack"])
            assert got == [track_ids(await ref.submit(one.id, frame(k))) for k in range(20)]
        finally:
            await ref.stop()
    finally:
        await b.stop()
        a.executor.shutdown(wait=True)
