"""Every transport of `framebroker serve --workers 2`, as real clients use it, with requests and
sockets landing on both workers: one server for the module (each start costs seconds), with
every compatibility listener on, a ``--source`` (the bundled clip) and a WebRTC model.

Which worker holds a connection is read from ``/proc`` (the worker process that has the
server end of the client's TCP connection), or from the node a session names; clients open
fresh connections until both workers serve some. Seed 001 listeners on the main port and on
its compat port follow the source whichever worker runs it; seed 002 streams run on both
workers and ``/batch`` answers on any; seed 004 peers (WebSocket and HTTP signaling, main
and compat ports) get predictions from the worker that answered their offer, and are ended
through any; the console lists the sessions of both workers and ends one of the other's.
Last, the worker that runs the source is killed with kill -9: the other takes it over (the
restarted one may, too), a listener on the survivor gets frames again, the day's counts
carry on, and ``/v1/sources`` tells one story on every worker before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import playwright.sync_api as playwright_api
import pytest
import websockets

from framebroker.client import VideoAnalysisClient
from framebroker.media.encode import encode_mp4
from framebroker.media.sources import demo_clip

from ..transports.images import scene
from ..transports.webrtc_client import ClientPeer, ColourTrack, client_peer, negotiate, recv_type
from ..transports.webrtc_client import wait_for as wait_peer
from .browser import CHROMIUM, chromium
from .server import RunningServer, compat_flags, free_port, running_server
from .test_cluster import counts, sent_at
from .test_workers import fresh, roster, wait_until

ROOT = Path(__file__).resolve().parents[2]
expect = playwright_api.expect

CONFIG = """
[analysis]
window_frames = 3
reconnect_grace_s = 0

[analysis.pipelines]
tracks = ["bytetrack"]

[webrtc]
media_timeout_s = 5.0

[cluster]
# 2 s: a worker starved of CPU (the browser, the peers, the source on two cores) still
# heartbeats in time.
ttl_s = 2.0
source_ttl_s = 1.0
checkpoint_every_s = 0.2
"""


@dataclass
class Workers:
    server: RunningServer
    data: Path
    ports: dict[str, int]
    nodes: list[str]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def compat(self, name: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[name]}"

    def pids(self) -> dict[int, int]:
        return {w["index"]: w["pid"] for w in roster(self.data)}

    def index(self, node: str) -> int:
        return self.nodes.index(node)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    folder = tmp_path_factory.mktemp("workers")
    config = folder / "workers.toml"
    config.write_text(CONFIG)
    ports = {name: free_port() for name in ("people_ws", "frames", "webrtc_http", "webrtc_ws")}
    args = (
        "--config", str(config), "--workers", "2", "--max-workers", "2",
        "--source", f"demo={demo_clip()}", "--loop",
        "--model", "tests.e2e.webrtc_models:FrameNumber",
        *compat_flags(**ports),
    )  # fmt: skip
    # The workers import the test model by module:attr, as they would a user's model.
    with pytest.MonkeyPatch.context() as env:
        env.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        with running_server(folder / "data", *args, timeout=120) as server:
            data = folder / "data"
            wait_until("both workers in the roster", lambda: len(roster(data)) == 2)
            nodes = [w["node"] for w in roster(data)]
            yield Workers(server, data, ports, nodes)
            assert "Traceback" not in server.output(), server.output()[-6000:]


@contextlib.contextmanager
def server_log_on_failure(server: RunningServer) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        tail = server.output()[-6000:]
        raise AssertionError(f"{exc}\n--- the server's log, last lines ---\n{tail}") from exc


def serving_worker(workers: Workers, server_port: int, client_port: int) -> int | None:
    """The index of the worker that holds the server end of the loopback connection from
    ``client_port`` to ``server_port`` (read from ``/proc``), or ``None``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if (int(local, 16), int(remote, 16)) == (server_port, client_port):
                inodes.add(f"socket:[{fields[9]}]")
    for index, pid in workers.pids().items():
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return index
    return None


async def live_socket_on(
    workers: Workers, url: str, port: int, want: set[int], stack: contextlib.AsyncExitStack
) -> dict[int, Any]:
    """Live listeners at ``url``, opened until one is on each worker in ``want``: each such
    listener by worker (the others are closed)."""
    found: dict[int, Any] = {}
    for _ in range(40):
        ws = await websockets.connect(url, max_size=None)
        index = None
        deadline = time.monotonic() + 5
        while index is None and time.monotonic() < deadline:
            index = serving_worker(workers, port, ws.local_address[1])
            if index is None:
                await asyncio.sleep(0.05)
        if index in want and index not in found:
            found[index] = await stack.enter_async_context(ws)
            if set(found) == want:
                return found
        else:
            await ws.close()
    raise AssertionError(f"no listener landed on worker(s) {want - set(found)} of 40")


async def frames_and_stats(ws: Any, timeout_s: float = 60) -> dict[str, int]:
    seen = {"frame": 0, "stats": 0}
    deadline = time.monotonic() + timeout_s
    while seen["frame"] < 2 or seen["stats"] < 1:
        assert time.monotonic() < deadline, f"{seen} within {timeout_s} s"
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if msg.get("type") in seen:
            seen[msg["type"]] += 1
    return seen


def test_seed_001_listeners_on_both_workers_and_the_compat_port_follow_the_source(
    workers: Workers,
) -> None:
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            main = workers.url.replace("http://", "ws://") + "/ws/live?source=demo"
            on_main = await live_socket_on(workers, main, workers.port, {0, 1}, stack)
            compat = workers.compat("people_ws", "ws") + "/"
            port = workers.ports["people_ws"]
            on_compat = await live_socket_on(workers, compat, port, {0, 1}, stack)
            listeners = [*on_main.values(), *on_compat.values()]
            seen = await asyncio.gather(*(frames_and_stats(ws) for ws in listeners))
            assert all(s["frame"] >= 2 and s["stats"] >= 1 for s in seen), seen

    with server_log_on_failure(workers.server):
        asyncio.run(scenario())


def node_of(workers: Workers, session_id: str) -> str:
    r = fresh("GET", f"{workers.url}/v1/sessions/{session_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["node"])


@contextlib.asynccontextmanager
async def streams_on_both(workers: Workers) -> AsyncIterator[dict[str, VideoAnalysisClient]]:
    """Seed 002 clients, each connecting with a fresh id over a fresh connection, until a
    stream runs on each worker: one client by node."""
    found: dict[str, VideoAnalysisClient] = {}
    try:
        for _ in range(20):
            client = VideoAnalysisClient(workers.url, timeout=30)
            await client.connect()
            assert client.session_id is not None
            node = await asyncio.to_thread(node_of, workers, client.session_id)
            if node in found:
                await client.close()
                continue
            found[node] = client
            if len(found) == 2:
                break
        assert len(found) == 2, f"every stream went to {list(found)}"
        yield found
    finally:
        for client in found.values():
            await client.close()


def test_seed_002_socket_io_streams_on_both_workers_and_batch_on_any(workers: Workers) -> None:
    async def scenario() -> None:
        async with streams_on_both(workers) as streams:
            for i in range(3):
                for k, client in enumerate(streams.values()):
                    ack = await client.process(scene(96 + 32 * k, 64, seed=i))
                    assert (ack.frame, ack.window) == (i, 0)
            for k, (node, client) in enumerate(streams.items()):
                result = await client.next_result(timeout=30)
                assert (result.session_id, result.window) == (client.session_id, 0)
                assert result.result["tracks"]["frames"] == 3
                assert client.session_id is not None
                path = f"{workers.url}/v1/sessions/{client.session_id}"
                info = (await asyncio.to_thread(fresh, "GET", path)).json()
                assert (info["node"], info["transport"]) == (node, "socketio"), k

        video = encode_mp4([scene(96, 64, seed=i) for i in range(6)])
        for _ in range(3):  # fresh clients: fresh connections, on either worker
            async with VideoAnalysisClient(workers.url, timeout=30) as http:
                result = await http.batch(video)
            assert result["tracks"]["summary"]["tracker"]["frames"] == 6

    with server_log_on_failure(workers.server):
        asyncio.run(scenario())


@dataclass
class Peer:
    peer: ClientPeer
    session_id: str
    ws: Any = None


async def ws_peer(url: str, stack: contextlib.AsyncExitStack) -> Peer:
    peer = client_peer(ColourTrack(size=(160, 120)))
    stack.push_async_callback(peer.close)
    ws = await stack.enter_async_context(websockets.connect(url))
    answer = await negotiate(peer, ws)
    return Peer(peer, str(answer["session_id"]), ws)


async def http_peer(url: str, stack: contextlib.AsyncExitStack) -> Peer:
    peer = client_peer(ColourTrack(size=(160, 120)))
    stack.push_async_callback(peer.close)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{url}/offer", json=await peer.offer())
    assert r.status_code == 200, r.text
    answer = r.json()
    await peer.accept(answer)
    return Peer(peer, str(answer["session_id"]))


def test_seed_004_peers_are_answered_by_both_workers_and_ended_through_either(
    workers: Workers,
) -> None:
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            peers: list[Peer] = []
            # The seed's HTTP signaling on its compat port, then its WebSocket one there and
            # on the main port, until peers were answered by both workers.
            peers.append(await http_peer(workers.compat("webrtc_http"), stack))
            peers.append(await ws_peer(workers.compat("webrtc_ws", "ws") + "/", stack))
            main = workers.url.replace("http://", "ws://") + "/webrtc/ws"
            for _ in range(8):
                if {p.session_id.split(".")[0] for p in peers} == set(workers.nodes):
                    break
                peers.append(await ws_peer(main, stack))
            on = {p.session_id.split(".")[0] for p in peers}
            assert on == set(workers.nodes), f"every offer went to {on}"
            for p in peers:  # media reaches the worker that made the session
                if p.ws is not None:
                    await recv_type(p.ws, "prediction", timeout=30)
                else:
                    await wait_peer(lambda p=p: bool(p.peer.channel_messages), timeout=30)
            # Ended over fresh connections: half of them land on the other worker.
            for p in peers:
                r = await asyncio.to_thread(
                    fresh, "DELETE", f"{workers.url}/v1/sessions/{p.session_id}"
                )
                assert r.status_code == 200, r.text
                if p.ws is not None:
                    result, _ = await recv_type(p.ws, "result", timeout=30)
                    assert (result["session_id"], result["reason"]) == (p.session_id, "ended")
            for p in peers:
                stored = await asyncio.to_thread(ended_record, workers, p.session_id)
                assert stored["summary"]["stats"]["frames_processed"] >= 1

    with server_log_on_failure(workers.server):
        asyncio.run(scenario())


def ended_record(workers: Workers, session_id: str) -> dict[str, Any]:
    r = fresh("GET", f"{workers.url}/v1/sessions/{session_id}")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "ended", r.text
    return dict(r.json())


def v1_sessions_on_both(workers: Workers) -> dict[str, str]:
    """``/v1`` sessions made over fresh connections until each worker made one: id by node."""
    made: dict[str, str] = {}
    for _ in range(100):
        sid = fresh("POST", f"{workers.url}/v1/sessions", json={"pipeline": ["bytetrack"]})
        made.setdefault(sid.json()["id"].split(".")[0], sid.json()["id"])
        if len(made) == 2:
            return made
    raise AssertionError(f"every new session went to {list(made)}")


def test_the_console_lists_both_workers_sessions_and_ends_one_of_the_other(
    workers: Workers,
) -> None:
    if CHROMIUM is None and os.environ.get("FRAMEBROKER_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("FRAMEBROKER_SKIP_BROWSER_TESTS=1")
    assert CHROMIUM is not None, "needs Debian's chromium: run scripts/install_browser.sh as root"
    made = v1_sessions_on_both(workers)
    errors: list[str] = []
    with chromium() as browser, server_log_on_failure(workers.server):
        page = browser.new_page()
        page.set_default_timeout(20_000)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        page.goto(f"{workers.url}/ui/")
        for node, sid in made.items():
            row = page.locator(f'tr[data-session="{sid}"]')
            expect(row).to_contain_text(f"on {node}")
        demo = page.locator('tr[data-session="demo"]')
        expect(demo).to_contain_text("on ")
        # Two presses of the same button (the first arms it), for each worker's session:
        # whichever worker the page talks to, one of them is relayed.
        for sid in made.values():
            button = page.locator(f'tr[data-session="{sid}"] button')
            button.click()
            expect(button).to_have_text("Confirm end")
            button.click()
            expect(page.locator(f'tr[data-session="{sid}"]')).to_have_count(0)
            assert ended_record(workers, sid)["state"] == "ended"
        # The live page follows the source, wherever it runs.
        page.goto(f"{workers.url}/ui/live.html?source=demo")
        # On the worker that does not run it, the page says which does.
        expect(page.locator("#status")).to_have_text(
            re.compile(rf"^Connected to demo( \(it runs on node ({'|'.join(workers.nodes)})\))?$")
        )
        frame = page.locator("#frame")
        expect(frame).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
        page.close()
    assert errors == [], errors


def sources_story(workers: Workers, tries: int = 12) -> tuple[str, set[str]]:
    """``/v1/sources/demo`` over ``tries`` fresh connections: the holder they all name, and the
    states they gave (``running`` from the holder, ``standby`` from the other)."""
    holders, states = set(), set()
    for _ in range(tries):
        r = fresh("GET", f"{workers.url}/v1/sources/demo")
        assert r.status_code == 200, r.text
        shown = r.json()
        holders.add(shown["node"])
        states.add(shown["state"])
        listed = fresh("GET", f"{workers.url}/v1/sources").json()["sources"]
        assert [(s["name"], s["node"]) for s in listed] == [("demo", shown["node"])]
    assert len(holders) == 1, holders
    [holder] = holders
    assert holder in workers.nodes, holder
    return holder, states


def one_story(workers: Workers, timeout_s: float = 30) -> str:
    """The worker that runs the source, once every worker says so (running here, standby
    naming it there) over fresh connections."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            holder, states = sources_story(workers)
            if states == {"running", "standby"}:
                return holder
            assert states <= {"running", "standby", "starting"}, states
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, "no consistent story"
        time.sleep(0.3)


def test_the_source_is_stopped_and_started_on_its_worker_whichever_gets_the_request(
    workers: Workers,
) -> None:
    """A client cannot choose its worker: every stop and start, over fresh connections, is
    done by the worker that runs the source (a standby relays it there) and says so."""
    holder = one_story(workers)
    for _ in range(5):
        for action, state in (("stop", "stopped"), ("start", "running")):
            r = fresh("POST", f"{workers.url}/v1/sources/demo/{action}")
            assert r.status_code == 200, r.text
            assert (r.json()["state"], r.json()["node"]) == (state, holder), r.json()
    assert one_story(workers) == holder


def test_kill_9_of_the_worker_running_the_source_another_takes_it_over_with_its_counts(
    workers: Workers,
) -> None:
    holder = one_story(workers)
    victim = workers.index(holder)
    [survivor] = [i for i in (0, 1) if i != victim]
    killed_pid = workers.pids()[victim]

    async def scenario() -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            url = workers.url.replace("http://", "ws://") + "/ws/live?source=demo"
            found = await live_socket_on(workers, url, workers.port, {survivor}, stack)
            ws = found[survivor]
            # Followed on the survivor while the victim runs it (its frames come by Redis).
            before = await counts(ws, frames=3, at_least=1, timeout_s=60)
            os.kill(killed_pid, signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), time.time()
            # The same listener gets frames again, from whichever worker runs it now; before
            # them, what the victim sent before it died (its last counts shown count too).
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 40))
                if sent_at(msg) > killed_wall:
                    if msg.get("type") == "frame":
                        break
                elif msg.get("type") == "stats":
                    before = {k: max(before[k], int(msg["data"][k])) for k in before}
            took = time.monotonic() - killed_at
            after = await counts(ws, frames=3, at_least=0, timeout_s=30)
            return {"before": before, "after": after, "took": took}

    with server_log_on_failure(workers.server):
        got = asyncio.run(scenario())
        assert got["took"] < 15, got["took"]  # the leases (1 s, 2 s) run out; a detector loads
        # The day's counts carry on from the store: not reset, nothing shown taken back.
        assert got["after"]["count_in"] >= got["before"]["count_in"], got
        assert got["after"]["count_out"] >= got["before"]["count_out"], got
        assert got["before"]["count_in"] + got["before"]["count_out"] >= 1, got
        wait_until(
            "the killed worker started again",
            lambda: workers.pids()[victim] not in (0, killed_pid),
        )
        # One story again on every worker, the restarted one included.
        one_story(workers, timeout_s=60)
