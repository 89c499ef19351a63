"""Nodes of a cluster as the user runs them: separate `framebroker serve --cluster` processes on
free loopback ports, one real redis-server, one real PostgreSQL database, driven by httpx as
the seed's clients drive one server.

A ``--source`` configured on two nodes runs on one; kill -9 of that node and the other takes
it over within seconds, its listeners get frames again and the day's counts carry on.
A session is answered the same whichever node a request lands on; listings and DELETE span
the cluster; a node killed with kill -9 has its sessions taken over by a survivor, resumed
with the same track ids; Redis restarted leaves running sessions answering, new ones 503
``cluster_unavailable`` until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from framebroker.media.sources import demo_clip
from tests.redis_server import RedisServer, running_redis

from ..transports.test_box_tracking import SEED_BOXES, SEED_TRACKED, walking
from .server import RunningServer, running_server

CONFIG = """
[analysis]
secret_key = "a-cluster-secret-of-32-characters!"

[cluster]
ttl_s = 1.0
source_ttl_s = 1.0
checkpoint_every_s = 0.2
"""


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def cluster(
    tmp_path: Path, redis: RedisServer, new_postgres_database: Callable[[], str]
) -> Iterator[Callable[..., RunningServer]]:
    """Starts nodes of one cluster by name; every one is stopped at the end."""
    config = tmp_path / "cluster.toml"
    config.write_text(CONFIG)
    url = new_postgres_database()
    with contextlib.ExitStack() as stack:

        def node(name: str, *extra: str) -> RunningServer:
            args = (
                "--config", str(config), "--cluster", redis.url, "--database-url", url,
                "--node-id", name, "--max-workers", "2", *extra,
            )  # fmt: skip
            return stack.enter_context(running_server(tmp_path / name, *args))

        yield node


def tracked(client: httpx.Client, sid: str, step: int) -> Any:
    r = client.post("/", json={"boxes": walking(step)}, headers={"Session-Id": sid})
    assert r.status_code == 200, r.text
    return r.json()["tracked_boxes"]


def frames(client: httpx.Client, sid: str, step: int) -> Any:
    r = client.post(f"/v1/sessions/{sid}/frames", json={"boxes": walking(step)})
    assert r.status_code == 200, r.text
    return [t["track_id"] for t in r.json()["tracks"]]


def test_three_nodes_answer_as_one_server(cluster: Callable[..., RunningServer]) -> None:
    nodes = [cluster(name) for name in ("a", "b", "c")]
    a, b, c = (httpx.Client(base_url=n.url, timeout=30) for n in nodes)
    with a, b, c:
        # Seed 000: the session starts on a (client-chosen id), goes on through b and c.
        r = a.post("/", json={"boxes": SEED_BOXES}, headers={"Session-Id": "72d6be50"})
        assert r.json()["tracked_boxes"] == SEED_TRACKED
        r = b.post("/", json={"boxes": SEED_BOXES}, headers={"Session-Id": "72d6be50"})
        assert r.json()["tracked_boxes"] == SEED_TRACKED
        # The same walk on one node and spread over three: the same answers.
        alone = [tracked(a, "alone", k) for k in range(12)]
        spread = [tracked((a, b, c)[k % 3], "spread", k) for k in range(12)]
        assert spread == alone
        assert alone[-1]  # tracks were confirmed: the comparison says something

        # /v1: made on b, fed through a and c.
        sid = b.post("/v1/sessions").json()["id"]
        assert sid.startswith("b.")
        ref = c.post("/v1/sessions").json()["id"]
        got = [frames((a, c)[k % 2], sid, k) for k in range(8)]
        assert got == [frames(c, ref, k) for k in range(8)]

        # Every node lists every session, each with its node.
        expected = {"72d6be50": "a", "alone": "a", "spread": "a", sid: "b", ref: "c"}
        for client in (a, b, c):
            listed = client.get("/v1/sessions").json()["sessions"]
            assert {s["id"]: s.get("node") for s in listed} == expected
            assert sorted(client.get("/").json()["sessions"]) == sorted(expected)

        # DELETE from a node that does not run the session.
        r = c.delete("/", headers={"Session-Id": "72d6be50"})
        assert r.status_code == 200, r.text
        assert "72d6be50" not in r.json()["sessions"]
        r = a.delete(f"/v1/sessions/{sid}")
        assert r.status_code == 200, r.text
        assert r.json()["summary"]["stats"]["frames_processed"] == 8
        assert b.get(f"/v1/sessions/{sid}").json()["state"] == "ended"
        assert a.post(f"/v1/sessions/{sid}/frames", json={"boxes": walking(0)}).status_code == 404

        metrics = b.get("/metrics").text
        assert 'framebroker_cluster_relays_served_total{op="submit"}' in metrics


def test_kill_9_of_a_node_its_session_continues_on_a_survivor(
    cluster: Callable[..., RunningServer],
) -> None:
    node_a, node_b = cluster("a"), cluster("b")
    a = httpx.Client(base_url=node_a.url, timeout=30)
    b = httpx.Client(base_url=node_b.url, timeout=30)
    with a, b:
        reference = [tracked(b, "reference", k) for k in range(20)]
        mine = b.post("/", json={"boxes": walking(0)}).headers["Session-Id"]
        got = [tracked(a, "walker", 0)]  # made on a
        got += [tracked(b, "walker", k) for k in range(1, 10)]  # relayed to a
        time.sleep(0.6)  # past a checkpoint: a's snapshot holds frame 9
        node_a.stop(signal.SIGKILL)
        # b's own session never notices.
        assert tracked(b, mine, 1) is not None
        started = time.monotonic()
        got.append(tracked(b, "walker", 10))  # waits out a's lease, takes over, resumes
        took = time.monotonic() - started
        got += [tracked(b, "walker", k) for k in range(11, 20)]
        assert got == reference
        assert took < 5, took
        listed = {s["id"]: s["node"] for s in b.get("/v1/sessions").json()["sessions"]}
        assert listed["walker"] == "b"
        metrics = b.get("/metrics").text
        assert "framebroker_cluster_takeovers_total 1.0" in metrics
        assert "framebroker_cluster_resumed_total 1.0" in metrics


def test_redis_restarted_running_sessions_answer_new_ones_wait(
    cluster: Callable[..., RunningServer], redis: RedisServer
) -> None:
    node_a, node_b = cluster("a"), cluster("b")
    a = httpx.Client(base_url=node_a.url, timeout=30)
    b = httpx.Client(base_url=node_b.url, timeout=30)
    with a, b:
        tracked(a, "steady", 0)
        redis.kill()
        try:
            for k in range(1, 6):
                assert tracked(a, "steady", k) is not None
            refused = b.post("/v1/sessions")
            assert refused.status_code == 503
            assert refused.json()["code"] == "cluster_unavailable"
            # The session's own node still lists it.
            assert [s["id"] for s in a.get("/v1/sessions").json()["sessions"]] == ["steady"]
        finally:
            redis.start()
        deadline = time.monotonic() + 15
        while b.post("/v1/sessions").status_code != 201:
            assert time.monotonic() < deadline, "new sessions did not come back"
            time.sleep(0.2)
        # Healed: the session is reachable from the other node again.
        deadline = time.monotonic() + 15
        while True:
            r = b.post("/", json={"boxes": walking(6)}, headers={"Session-Id": "steady"})
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert "steady" in b.get("/").json()["sessions"]


async def follow(url: str, source: str, timeout_s: float = 90) -> dict[str, int]:
    """Listen to ``source`` on the node at ``url`` until it has pushed frames and stats; the
    node learns of another node's sources at its next heartbeat, so an early refusal is
    retried."""
    deadline = time.monotonic() + timeout_s
    seen = {"frame": 0, "stats": 0}
    while time.monotonic() < deadline:
        async with websockets.connect(f"{url}/ws/live?source={source}", max_size=None) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                while time.monotonic() < deadline:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if msg.get("type") in seen:
                        seen[msg["type"]] += 1
                    if seen["frame"] >= 3 and seen["stats"] >= 1:
                        return seen
        await asyncio.sleep(0.5)
    raise AssertionError(f"{source}: {seen} within {timeout_s} s")


def test_a_live_listener_on_any_node_follows_a_source_another_node_runs(
    cluster: Callable[..., RunningServer],
) -> None:
    runs = cluster("a", "--source", f"demo={demo_clip()}", "--loop")
    listens = cluster("b")
    seen = asyncio.run(follow(listens.url.replace("http://", "ws://"), "demo"))
    assert seen["frame"] >= 3
    refused = asyncio.run(unknown_source(listens.url.replace("http://", "ws://")))
    assert "Unknown source 'nosuch'" in refused
    assert runs.proc.poll() is None


async def unknown_source(url: str) -> str:
    async with websockets.connect(f"{url}/ws/live?source=nosuch") as ws:
        return str(await asyncio.wait_for(ws.recv(), 10))


async def source_on(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/v1/sources/demo")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def one_runs_it(clients: dict[str, httpx.AsyncClient], timeout_s: float) -> str:
    """The node that runs ``demo``, once the other stands by naming it."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = {name: await source_on(c) for name, c in clients.items()}
        running = [name for name, s in shown.items() if s["state"] == "running"]
        if len(running) == 1:
            [holder] = running
            if all(s["state"] == "standby" and s["node"] == holder
                   for name, s in shown.items() if name != holder):  # fmt: skip
                return holder
        assert len(running) <= 1, shown  # never two at once
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.2)


async def counts(ws: Any, *, frames: int, at_least: int, timeout_s: float) -> dict[str, int]:
    """Read pushed messages until ``frames`` frames came and a stats message shows at least
    ``at_least`` crossings; the last stats' counts."""
    deadline = time.monotonic() + timeout_s
    seen, last = 0, {"count_in": -1, "count_out": -1}
    while time.monotonic() < deadline:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if msg.get("type") == "frame":
            seen += 1
        elif msg.get("type") == "stats":
            last = {k: int(msg["data"][k]) for k in ("count_in", "count_out")}
            if seen >= frames and last["count_in"] + last["count_out"] >= at_least:
                return last
    raise AssertionError(f"{seen} frames, counts {last} within {timeout_s} s")


async def kill_the_holder(nodes: dict[str, RunningServer]) -> dict[str, Any]:
    clients = {name: httpx.AsyncClient(base_url=n.url, timeout=30) for name, n in nodes.items()}
    try:
        holder = await one_runs_it(clients, timeout_s=60)
        [survivor] = [name for name in nodes if name != holder]
        url = nodes[survivor].url.replace("http://", "ws://")
        async with websockets.connect(f"{url}/ws/live?source=demo", max_size=None) as ws:
            # Followed on the survivor while the holder runs it (its frames come by Redis).
            before = await counts(ws, frames=3, at_least=1, timeout_s=60)
            nodes[holder].stop(signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), time.time()
            deadline = killed_at + 30
            while (await source_on(clients[survivor]))["state"] != "running":
                assert time.monotonic() < deadline, await source_on(clients[survivor])
                await asyncio.sleep(0.1)
            took = time.monotonic() - killed_at
            shown = await source_on(clients[survivor])
            # The same listener gets frames again, from the survivor now; before them, what
            # the holder sent before it died (its last counts shown count too).
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if sent_at(msg) > killed_wall:
                    if msg.get("type") == "frame":
                        break
                elif msg.get("type") == "stats":
                    before = {k: max(before[k], int(msg["data"][k])) for k in before}
            after = await counts(ws, frames=3, at_least=0, timeout_s=30)
        metrics = (await clients[survivor].get("/metrics")).text
        return {"before": before, "after": after, "took": took, "shown": shown,
                "survivor": survivor, "metrics": metrics}  # fmt: skip
    finally:
        for client in clients.values():
            await client.aclose()


def sent_at(msg: dict[str, Any]) -> float:
    """When a pushed message was made (its ``timestamp``, in the counter's zone: UTC)."""
    stamp = datetime.strptime(str(msg["timestamp"]), "%Y-%m-%d %H:%M:%S.%f")
    return stamp.replace(tzinfo=UTC).timestamp()


def test_a_source_on_two_nodes_runs_once_and_a_survivor_takes_it_over_with_its_counts(
    cluster: Callable[..., RunningServer],
) -> None:
    args = ("--source", f"demo={demo_clip()}", "--loop")
    with ThreadPoolExecutor(2) as pool:  # side by side: the first to start runs the detector
        nodes = dict(zip("ab", pool.map(lambda name: cluster(name, *args), "ab"), strict=True))
    got = asyncio.run(kill_the_holder(nodes))
    assert got["took"] < 10, got["took"]  # its leases (1 s each) run out; its detector loads
    assert (got["shown"]["node"], got["shown"]["session_id"]) == (got["survivor"], "demo")
    # The day's counts carry on from the store: not reset, nothing shown taken back.
    assert got["after"]["count_in"] >= got["before"]["count_in"], got
    assert got["after"]["count_out"] >= got["before"]["count_out"], got
    assert 'framebroker_cluster_source_takeovers_total{source="demo"} 1.0' in got["metrics"]
    assert 'framebroker_cluster_source_held{source="demo"} 1.0' in got["metrics"]
