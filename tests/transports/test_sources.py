"""/v1/sources: a --source stopped (or its session ended from outside) and started again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from framebroker.config import load_settings
from framebroker.media.sources import demo_clip
from framebroker.server import Services, build_app


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        data_dir=tmp_path, sources=[f"demo={demo_clip()}"], loop=True, max_workers=2
    )
    services = Services.build(settings)
    await services.start()
    app = build_app(settings, services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://fb", timeout=30
        ) as c:
            yield c
    finally:
        await services.stop()


async def source(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/v1/sources/demo")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def frames_move(client: httpx.AsyncClient) -> None:
    before = (await source(client))["frames_submitted"]
    for _ in range(200):
        if (await source(client))["frames_submitted"] > before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the source sends no frames")


async def test_a_source_stopped_from_outside_starts_again(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/sources")).json()["sources"]
    assert [(s["name"], s["state"]) for s in listed] == [("demo", "running")]
    await frames_move(client)
    # Ending its session (the console's End button) stops the source, visibly.
    assert (await client.delete("/v1/sessions/demo")).status_code == 200
    for _ in range(100):
        if (await source(client))["state"] == "stopped":
            break
        await asyncio.sleep(0.05)
    stopped = await source(client)
    assert (stopped["state"], stopped["reason"]) == ("stopped", "session_ended")
    # ... and it can be started again, without a restart.
    r = await client.post("/v1/sources/demo/start")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "running"
    assert r.json()["session_id"] == "demo"
    await frames_move(client)
    assert (await client.get("/v1/sessions/demo")).json()["state"] == "active"


async def test_stop_and_start_by_name(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/sources/demo/stop")
    assert (r.json()["state"], r.json()["reason"]) == ("stopped", "stopped")
    assert (await client.get("/v1/sessions/demo")).json()["state"] == "ended"
    assert (await client.post("/v1/sources/demo/stop")).json()["state"] == "stopped"  # again
    assert (await client.post("/v1/sources/demo/start")).json()["state"] == "running"
    await frames_move(client)
    r = await client.post("/v1/sources/lobbby/start")
    assert r.status_code == 404
    assert r.json()["code"] == "source_not_found"
    assert "demo" in r.json()["error"]


async def test_ending_a_sources_session_from_outside_closes_its_event_with_its_count(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        sources=[f"demo={demo_clip()}"],
        loop=True,
        source_realtime=False,
        people={"event_threshold": 1, "event_cooldown_s": 600, "faces": False},
    )
    services = Services.build(settings)
    await services.start()
    app = build_app(settings, services)
    records = services.records
    assert records is not None
    feed = next(iter(services.feeds))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://fb", timeout=30
        ) as client:
            for _ in range(1200):  # one person in: an event starts, and runs (long cooldown)
                if feed.live is not None and feed.live.stats["event_active"]:
                    break
                await asyncio.sleep(0.05)
            assert feed.live is not None
            assert feed.live.stats["event_active"], "no event started"
            day = feed.live.day
            assert (await client.delete("/v1/sessions/demo")).status_code == 200
            for _ in range(100):
                events = records.events_on("demo", day)
                if events and events[-1]["end_time"] is not None:
                    break
                await asyncio.sleep(0.05)
            (event,) = records.events_on("demo", day)
            assert event["end_time"] is not None
            assert event["count_in"] is not None
            assert event["count_in"] >= 1
    finally:
        await services.stop()


class Lease:
    """A cluster's lease on the source, as the feed sees it (``SourceKeeper`` in a node)."""

    def __init__(self, held: bool, node: str | None, starting: bool = False) -> None:
        self.held, self.node, self.starting = held, node, starting


async def test_in_a_cluster_it_names_the_node_that_runs_it_and_a_standby_refuses_a_start(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path, sources=[f"demo={demo_clip()}"], loop=True)
    services = Services.build(settings)  # not started: nothing runs the source here
    feed = services.feeds.get("demo")
    app = build_app(settings, services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://fb", timeout=30
        ) as client:
            alone = await source(client)
            assert (alone["state"], alone["node"]) == ("stopped", None)  # no cluster: no node
            feed.gate = Lease(held=False, node="node-b")
            shown = await source(client)
            assert (shown["state"], shown["node"]) == ("standby", "node-b")
            assert shown["session_id"] is None
            r = await client.post("/v1/sources/demo/start")
            assert r.status_code == 409, r.text
            assert r.json()["code"] == "source_elsewhere"
            assert "node-b" in r.json()["error"]
            assert feed.video is None  # nothing was opened
            assert (await client.post("/v1/sources/demo/stop")).json()["state"] == "standby"
            feed.gate = Lease(held=True, node="node-a", starting=True)
            shown = await source(client)
            assert (shown["state"], shown["node"]) == ("starting", "node-a")
    finally:
        await services.broker.stop()  # closes its store
