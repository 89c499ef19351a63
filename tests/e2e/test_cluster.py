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
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import websockets

from framebroker.media.sources import demo_clip
from tests.redis_server import RedisServer, running_redis

from ..transports.images import scene
from ..transports.socketio_harness import Client, connected, jpeg, polling, stream_windows
from ..transports.test_box_tracking import SEED_BOXES, SEED_TRACKED, walking
from ..transports.webrtc_client import ColourTrack, client_peer, negotiate, recv_type
from .server import RunningServer, running_server
from .test_frame_server import files, seed_frame

CONFIG = """
[analysis]
secret_key = "a-cluster-secret-of-32-characters!"

[cluster]
# 2 s: a node starved of CPU (two test processes on two cores) still heartbeats in time.
ttl_s = 2.0
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
    url = new_postgres_database()
    with contextlib.ExitStack() as stack:

        def node(name: str, *extra: str, analysis: str = "", toml: str = "") -> RunningServer:
            """Node ``name``; ``analysis``: more lines of its ``[analysis]`` table, ``toml``:
            more tables of its configuration file."""
            config = tmp_path / f"{name}.toml"
            config.write_text(CONFIG.replace("[cluster]", f"{analysis}\n[cluster]") + toml)
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
        assert 'framebroker_cluster_relays_served_total{op="attach_submit"}' in metrics


def test_three_nodes_serve_every_transport_wherever_its_requests_land(
    cluster: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three nodes, a real client of each transport, each session fed or read through nodes
    that do not run it: seed 001 (a listener on c follows the source a runs), seed 002 (a
    stream handed out by b runs on c, observed from a), seed 003 (one source's frames
    posted to b and c in turn), seed 004 (a peer on b, read and ended through c)."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    extra = ("--model", "tests.e2e.webrtc_models:FrameNumber")
    frames_pipeline = '[frames]\npipeline = ["tests.transports.test_frame_upload:FrameCounter"]\n'
    toml = PIPELINES + frames_pipeline
    node_a = cluster(
        "a", *extra, "--source", f"demo={demo_clip()}", "--loop", analysis=ANALYSIS, toml=toml
    )
    node_b = cluster("b", *extra, analysis=ANALYSIS, toml=toml)
    node_c = cluster("c", *extra, analysis=ANALYSIS, toml=toml)

    # Seed 003: the frames of one source, posted to b and c in turn, are one session.
    image = scene(1920, 1080)  # the seed's raw frames: 1920x1080 unless the frame says
    for i in range(4):
        node = (node_b, node_c)[i % 2]
        r = httpx.post(f"{node.url}/", files=files(image, seed_frame(i)), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["counter"] == {"frames": i + 1}

    async def scenario() -> None:
        # Seed 001: a listener on c follows the source that a runs.
        seen = await follow(node_c.url.replace("http://", "ws://"), "demo")
        assert seen["frame"] >= 3
        async with httpx.AsyncClient(timeout=30) as http:
            # Seed 002: an id handed out by b, its stream on c, observed from a.
            sid = (await http.get(f"{node_b.url}/get_session_id")).json()["session_id"]
            async with (
                connected(node_c.url, f"session_id={sid}") as runs,
                connected(node_a.url, f"session_id={sid}&observe=1") as watches,
            ):
                for i in range(3):
                    assert (await runs.frame(scene(96, 64, seed=i)))["frame"] == i
                assert await runs.next("result", 30) == await watches.next("result", 30)
            # Seed 004: a peer on b; its session read and ended through c.
            peer = client_peer(ColourTrack(size=(160, 120)))
            try:
                url = node_b.url.replace("http://", "ws://") + "/webrtc/ws"
                async with websockets.connect(url) as ws:
                    rtc = (await negotiate(peer, ws))["session_id"]
                    await recv_type(ws, "prediction", timeout=30)
                    info = (await http.get(f"{node_c.url}/v1/sessions/{rtc}")).json()
                    assert (info["node"], info["transport"]) == ("b", "webrtc")
                    r = await http.delete(f"{node_c.url}/v1/sessions/{rtc}")
                    assert r.status_code == 200, r.text
                    result, _ = await recv_type(ws, "result", timeout=30)
                    assert result["session_id"] == rtc
            finally:
                await peer.close()

    asyncio.run(scenario())
    for node in (node_a, node_b, node_c):
        assert node.proc.poll() is None, node.output()


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


ANALYSIS = "window_frames = 3\nreconnect_grace_s = 0\n"
PIPELINES = '[analysis.pipelines]\ntracks = ["bytetrack"]\n'


async def refusal(url: str, query: str) -> str:
    """The code a Socket.IO connection with ``query`` is refused with."""
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(url, query)
    await client.close()
    code: str = client.refusal["data"]["code"]
    return code


def test_socket_io_clients_on_two_nodes_share_a_stream_and_its_id(
    cluster: Callable[..., RunningServer],
) -> None:
    """Seed 002 across nodes: an id handed out by one node is good on the other and serves
    one connection in the whole cluster; an observer on the other node gets the stream's
    results through Socket.IO's Redis manager; bad input is an error event, and both nodes
    and the other sessions go on."""
    node_a = cluster("a", analysis=ANALYSIS, toml=PIPELINES)
    node_b = cluster("b", analysis=ANALYSIS, toml=PIPELINES)

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            sid = (await http.get(f"{node_a.url}/get_session_id")).json()["session_id"]
            other = (await http.get(f"{node_a.url}/get_session_id")).json()["session_id"]
        assert sid.startswith("a.")  # the proxy's route to the node that handed it out
        async with (
            connected(node_b.url, f"session_id={sid}") as runs,  # handed out by a, on b
            connected(node_a.url, f"session_id={sid}&observe=1") as watches,
            connected(node_a.url, f"session_id={other}") as neighbour,
        ):
            # One connection per id in the whole cluster.
            assert await refusal(node_a.url, f"session_id={sid}") == "session_conflict"
            assert await refusal(node_b.url, f"session_id={sid}") == "session_conflict"
            assert await refusal(node_b.url, "session_id=guessed&observe=1") == (
                "session_not_found"
            )
            for i in range(3):
                reply = await runs.frame(scene(96, 64, seed=i))
                assert reply["frame"] == i
                assert (await neighbour.frame(scene(64, 48, seed=i)))["size"] == [64, 48]
            mine, seen = await runs.next("result", 30), await watches.next("result", 30)
            assert mine == seen
            assert seen["session_id"] == sid
            assert seen["window"] == 0
            assert seen["result"]["tracks"]["frames"] == 3
            assert (await neighbour.next("result", 30))["session_id"] == other
            assert watches.pending("result") == []  # not the neighbour's

            # Bad input on b: an error, the stream goes on; a goes on.
            err = await runs.sio.call("process", b"not an image", timeout=10)
            assert err["code"] == "unsupported_media_type"
            await runs.sio.emit("process", 12345)
            assert (await runs.next("error"))["code"] == "invalid_input"
            err = await watches.sio.call("process", jpeg(scene(64, 48)), timeout=10)
            assert err["code"] == "invalid_input"
            assert err["field"] == "observe"
            for i in range(3, 6):
                await runs.frame(scene(96, 64, seed=i))
                await neighbour.frame(scene(64, 48, seed=i))
            assert (await watches.next("result", 30))["window"] == 1
            assert (await neighbour.next("result", 30))["window"] == 1

            ended = await runs.sio.call("end", timeout=10)
            assert ended == {"session_id": sid, "ended": True}
            assert await watches.next("ended", 10) == {"session_id": sid, "reason": "ended"}
            # Used up on every node, and no longer observable.
            assert await refusal(node_a.url, f"session_id={sid}") == "session_not_found"
            assert await refusal(node_b.url, f"session_id={sid}&observe=1") == ("session_not_found")
            assert (await neighbour.frame(scene(64, 48, seed=9)))["frame"] == 6

    asyncio.run(scenario())
    for node in (node_a, node_b):
        assert node.proc.poll() is None, node.output()


def test_a_socket_io_stream_of_a_killed_node_resumes_on_another_where_it_left_off(
    cluster: Callable[..., RunningServer],
) -> None:
    """kill -9 of the node that runs a Socket.IO stream: a connection with its id to another
    node is told to retry while the dead node's lease runs (never left waiting past a
    client's connect timeout), then resumes the stream from its last snapshot: frames and
    windows numbered on, the window open at the snapshot lost."""
    node_a = cluster("a", analysis=ANALYSIS, toml=PIPELINES)
    node_b = cluster("b", analysis=ANALYSIS, toml=PIPELINES)

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            sid = (await http.get(f"{node_a.url}/get_session_id")).json()["session_id"]
        async with connected(node_a.url, f"session_id={sid}") as runs:
            acks = [await runs.frame(scene(96, 64, seed=i)) for i in range(7)]
            assert [(a["frame"], a["window"]) for a in acks] == [(i, i // 3) for i in range(7)]
            assert [(await runs.next("result", 30))["window"] for _ in range(2)] == [0, 1]
            await asyncio.sleep(0.6)  # past a snapshot (every 0.2 s) of frame 6
            node_a.stop(signal.SIGKILL)
        killed, refusals = time.monotonic(), set()
        while True:
            client = Client()
            asked = time.monotonic()
            try:
                await client.connect(node_b.url, f"session_id={sid}")
                break
            except socketio.exceptions.ConnectionError:
                assert time.monotonic() - asked < 2.5  # refused, not left waiting
                refusals.add(client.refusal["data"]["code"])
                await client.close()
                assert time.monotonic() - killed < 20, refusals
                await asyncio.sleep(0.3)
        assert refusals <= {"cluster_unavailable"}, refusals
        try:
            acks = [await client.frame(scene(96, 64, seed=i)) for i in range(7, 10)]
            assert [(a["frame"], a["window"]) for a in acks] == [(7, 3), (8, 3), (9, 3)]
            window = await client.next("result", 30)
            assert (window["window"], window["first_frame"], window["frames"]) == (3, 7, 3)
        finally:
            await client.close()
        async with httpx.AsyncClient(timeout=30) as http:
            info = (await http.get(f"{node_b.url}/v1/sessions/{sid}")).json()
        assert info["state"] == "ended", info  # ended by its client, on b

    asyncio.run(scenario())
    assert node_b.proc.poll() is None, node_b.output()


def test_socket_io_streams_go_on_while_redis_is_away_and_observers_come_back_after(
    cluster: Callable[..., RunningServer], redis: RedisServer
) -> None:
    """Redis killed for 10 s under a running Socket.IO stream: its client keeps getting
    every reply and result (python-socketio delivers to the stream's own node before it
    publishes); a new stream is refused with a named code; once Redis is back, new
    streams are taken again and the observer on the other node gets results again."""
    node_a = cluster("a", analysis=ANALYSIS, toml=PIPELINES)
    node_b = cluster("b", analysis=ANALYSIS, toml=PIPELINES)

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            sid, later = [
                (await http.get(f"{url}/get_session_id")).json()["session_id"]
                for url in (node_a.url, node_b.url)
            ]
        async with (
            connected(node_a.url, f"session_id={sid}") as runs,
            connected(node_b.url, f"session_id={sid}&observe=1") as watches,
        ):
            for i in range(3):
                assert (await runs.frame(scene(96, 64, seed=i)))["frame"] == i
            assert (await watches.next("result", 30))["window"] == 0
            assert (await runs.next("result", 30))["window"] == 0

            redis.kill()
            away = time.monotonic()
            frame = 3
            while time.monotonic() - away < 10:
                for _ in range(3):
                    assert (await runs.frame(scene(96, 64, seed=frame)))["frame"] == frame
                    frame += 1
                assert (await runs.next("result", 30))["window"] == frame // 3 - 1
            assert await refusal(node_b.url, f"session_id={later}") == "cluster_unavailable"
            redis.start()

            deadline = time.monotonic() + 20
            while True:  # the cluster heals by itself: new streams are taken again
                client = Client()
                try:
                    # The id refused while Redis was away is as good as it was.
                    await client.connect(node_b.url, f"session_id={later}")
                    break
                except socketio.exceptions.ConnectionError:
                    assert time.monotonic() < deadline, client.refusal
                    await asyncio.sleep(0.5)
                finally:
                    await client.close()
            watches.pending("result")  # what reached it before the outage, or none
            deadline = time.monotonic() + 20
            while True:  # the observer's Redis subscription is back
                for _ in range(3):
                    await runs.frame(scene(96, 64, seed=frame))
                    frame += 1
                window = (await runs.next("result", 30))["window"]
                with contextlib.suppress(TimeoutError):
                    if (await watches.next("result", 2))["window"] == window:
                        break
                assert time.monotonic() < deadline, "the observer got no result after Redis"

    asyncio.run(scenario())
    for node in (node_a, node_b):
        assert node.proc.poll() is None, node.output()


class RoundRobin:
    """A TCP balancer on a free loopback port that hands each new connection to the next of
    ``upstreams`` (``http://host:port``) in turn and pipes its bytes, sticky to nothing: what
    a client's requests meet behind a plain round-robin L4 balancer. ``accepted`` counts the
    connections each upstream was given."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = [u.removeprefix("http://").rsplit(":", 1) for u in upstreams]
        self.accepted = [0] * len(upstreams)
        self.url = ""
        self._server: asyncio.Server | None = None
        self._next = 0

    async def __aenter__(self) -> RoundRobin:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i, self._next = self._next, (self._next + 1) % len(self.upstreams)
        self.accepted[i] += 1
        host, port = self.upstreams[i]
        up_reader, up_writer = await asyncio.open_connection(host, int(port))

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


def test_a_long_polling_client_whose_requests_alternate_between_two_nodes_gets_every_result(
    cluster: Callable[..., RunningServer],
) -> None:
    """Seed 002 on long-polling alone behind a round-robin balancer, each request on a new
    connection, so a client's requests alternate between the nodes: the node that did not
    make its Engine.IO session forwards them to the one that did, and every frame and window
    is answered."""
    node_a = cluster("a", analysis=ANALYSIS, toml=PIPELINES)
    node_b = cluster("b", analysis=ANALYSIS, toml=PIPELINES)

    async def scenario() -> list[int]:
        async with RoundRobin([node_a.url, node_b.url]) as balancer:
            async with httpx.AsyncClient(timeout=30) as http:
                for node in (node_a, node_b):
                    sid = (await http.get(f"{node.url}/get_session_id")).json()["session_id"]
                    async with polling(balancer.url, f"session_id={sid}") as client:
                        assert client.sio.transport() == "polling"
                        await stream_windows(client, sid, windows=2, size=3)
            return balancer.accepted

    accepted = asyncio.run(scenario())
    assert min(accepted) >= 5, accepted
    forwarded = 0
    for node in (node_a, node_b):
        metrics = httpx.get(f"{node.url}/metrics").text
        line = 'framebroker_cluster_relays_total{op="engineio",outcome="ok"} '
        forwarded += sum(
            int(float(r[len(line) :])) for r in metrics.splitlines() if r.startswith(line)
        )
        assert node.proc.poll() is None, node.output()
    assert forwarded >= 5, forwarded


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def webrtc_nodes(
    cluster: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> tuple[RunningServer, RunningServer]:
    """Nodes a and b with a WebRTC model."""
    # The nodes import the test models by module:attr, as they would a user's models.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    model = ("--model", "tests.e2e.webrtc_models:FrameNumber")
    return cluster("a", *model), cluster("b", *model)


def test_webrtc_media_goes_to_the_node_of_the_offer_and_its_session_is_reached_from_any(
    webrtc_nodes: tuple[RunningServer, RunningServer],
) -> None:
    """Seed 004 in a cluster: the node that answers an offer owns its session, and the
    peer's media flows to that node's UDP ports; what the seed keys by session (nothing in
    its signaling, which stays on the socket of the offer) and framebroker's /v1 calls by
    session id reach the owner from any node."""
    node_a, node_b = webrtc_nodes

    async def scenario() -> None:
        peer = client_peer(ColourTrack(size=(160, 120)))
        try:
            url = node_a.url.replace("http://", "ws://") + "/webrtc/ws"
            async with websockets.connect(url) as ws, httpx.AsyncClient(timeout=30) as http:
                answer = await negotiate(peer, ws)
                sid = answer["session_id"]
                assert sid.startswith("a.")
                await recv_type(ws, "prediction", timeout=30)
                # From the node that does not run it: info, then the end.
                info = (await http.get(f"{node_b.url}/v1/sessions/{sid}")).json()
                assert (info["state"], info["node"], info["transport"]) == (
                    "active",
                    "a",
                    "webrtc",
                )
                r = await http.delete(f"{node_b.url}/v1/sessions/{sid}")
                assert r.status_code == 200, r.text
                result, _ = await recv_type(ws, "result", timeout=30)
                assert result["session_id"] == sid
                assert result["reason"] == "ended"
                stored = (await http.get(f"{node_b.url}/v1/sessions/{sid}")).json()
                assert stored["state"] == "ended"
                assert stored["summary"]["stats"]["frames_processed"] >= 1
        finally:
            await peer.close()

    asyncio.run(scenario())
    for node in (node_a, node_b):
        assert node.proc.poll() is None, node.output()


def test_a_webrtc_peer_of_a_killed_node_sees_its_end_and_any_node_reports_it(
    webrtc_nodes: tuple[RunningServer, RunningServer],
) -> None:
    """kill -9 of the node that runs a WebRTC session: the peer's signaling socket closes at
    once (no hang), and the session, which cannot move (its media went to the dead node),
    reads as ended with reason ``node_lost`` from the survivor once the node's lease ran
    out, never as running."""
    node_a, node_b = webrtc_nodes

    async def scenario() -> None:
        peer = client_peer(ColourTrack(size=(160, 120)))
        try:
            url = node_a.url.replace("http://", "ws://") + "/webrtc/ws"
            async with websockets.connect(url) as ws, httpx.AsyncClient(timeout=30) as http:
                sid = (await negotiate(peer, ws))["session_id"]
                await recv_type(ws, "prediction", timeout=30)
                await asyncio.sleep(0.5)  # past a checkpoint of the session
                node_a.stop(signal.SIGKILL)
                killed = time.monotonic()
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:  # a silence of 10 s (no close) raises TimeoutError
                        await asyncio.wait_for(ws.recv(), timeout=10)
                assert time.monotonic() - killed < 5
                while True:
                    info = (await http.get(f"{node_b.url}/v1/sessions/{sid}")).json()
                    if info["state"] != "active":
                        break
                    assert info["node"] == "a"
                    assert time.monotonic() - killed < 15, info
                    await asyncio.sleep(0.2)
                assert info["state"] == "ended", info
                assert info["summary"]["reason"] == "node_lost"
                listed = (await http.get(f"{node_b.url}/v1/sessions")).json()["sessions"]
                assert sid not in {s["id"] for s in listed}
        finally:
            await peer.close()

    asyncio.run(scenario())
    assert node_b.proc.poll() is None, node_b.output()
    assert "Traceback" not in node_b.output(), node_b.output()


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
