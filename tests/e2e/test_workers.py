"""`framebroker serve --workers N` as the user runs it: one supervisor process, N workers sharing
its listening sockets, a private redis-server, the SQLite store in the data directory.

Every request goes over a fresh connection, so requests land on whichever worker accepts
them: a session is answered the same wherever they land (seed 000, /v1, the frame server on
its compat port); a worker killed with kill -9 is started again by the supervisor, the other
worker's sessions never notice, and the killed one's session continues with the same track
ids; /metrics shows the restart; a Socket.IO stream of a killed worker resumes where its
client reconnects; a stop (or the supervisor's own kill -9) leaves no process behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from ..transports.images import scene
from ..transports.socketio_harness import jpeg, polling, stream_windows
from ..transports.test_box_tracking import SEED_BOXES, SEED_TRACKED, walking
from .server import RunningServer, compat_flags, free_port, running_server
from .test_frame_server import files, seed_frame

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[frames]
pipeline = ["tests.transports.test_frame_upload:FrameCounter"]

[cluster]
ttl_s = 1.0
checkpoint_every_s = 0.2
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The workers import the test processor by module:attr, as a user's plugin would be.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    path = tmp_path / "workers.toml"
    path.write_text(CONFIG)
    return path


def fresh(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own: it lands on any worker."""
    with httpx.Client(timeout=30) as client:
        return client.request(method, url, **kwargs)


def frames(url: str, sid: str, step: int) -> list[int]:
    r = fresh("POST", f"{url}/v1/sessions/{sid}/frames", json={"boxes": walking(step)})
    assert r.status_code == 200, r.text
    return [t["track_id"] for t in r.json()["tracks"]]


def roster(data: Path) -> list[dict[str, Any]]:
    return list(json.loads((data / "workers.json").read_text())["workers"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with_state = stat.read_text().rsplit(")", 1)[1].split() if stat.exists() else ["X"]
    return with_state[0] != "Z"  # a zombie has ended; its parent has not reaped it yet


def wait_until(what: str, ok: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.1)


def redis_dir(server: RunningServer) -> Path:
    found = re.search(r"at unix://(\S+)/redis\.sock", server.output())
    assert found, server.output()
    return Path(found.group(1))


def holders(path: Path) -> list[int]:
    """Processes whose command line names ``path`` (the private redis-server's socket)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def two_workers(tmp_path: Path, config: Path) -> Iterator[tuple[RunningServer, str]]:
    frames_port = free_port()
    args = ("--config", str(config), "--workers", "2", *compat_flags(frames=frames_port))
    with running_server(tmp_path / "data", *args, timeout=120) as server:
        yield server, f"http://127.0.0.1:{frames_port}"


def test_two_workers_serve_as_one_server_and_survive_a_kill_9(
    tmp_path: Path, two_workers: tuple[RunningServer, str]
) -> None:
    server, frames_url = two_workers
    url, data = server.url, tmp_path / "data"
    workers = roster(data)
    assert [w["index"] for w in workers] == [0, 1]
    nodes = [w["node"] for w in workers]
    assert nodes[0].endswith("-w0")
    assert nodes[1] == nodes[0][:-1] + "1"

    # Seed 000 over fresh connections: the same session wherever each request lands.
    for _ in range(3):
        r = fresh("POST", url, json={"boxes": SEED_BOXES}, headers={"Session-Id": "72d6be50"})
        assert r.json()["tracked_boxes"] == SEED_TRACKED

    # /v1: sessions made until each worker made one (ids start with their node).
    made: dict[str, str] = {}
    for _ in range(200):
        sid = fresh("POST", f"{url}/v1/sessions").json()["id"]
        made.setdefault(next(n for n in nodes if sid.startswith(n + ".")), sid)
        if len(made) == 2:
            break
    assert len(made) == 2, f"every new connection went to one worker: {made}"
    reference = [frames(url, made[nodes[0]], k) for k in range(20)]
    assert reference[-1]  # tracks were confirmed: the comparisons below say something
    victim, survivor = made[nodes[1]], fresh("POST", f"{url}/v1/sessions").json()["id"]
    got = [frames(url, victim, k) for k in range(10)]
    steady = [frames(url, survivor, k) for k in range(10)]

    # The frame server on its compat port: one session for the one source, fresh connections.
    image = scene(1920, 1080)
    for i in range(3):
        r = fresh("POST", f"{frames_url}/", files=files(image, seed_frame(51 + i)))
        assert r.status_code == 200, r.text
        assert r.json()["counter"] == {"frames": i + 1}

    # kill -9 the worker that runs `victim`, past a checkpoint of its session.
    time.sleep(0.6)
    dead = workers[1]["pid"]
    os.kill(dead, signal.SIGKILL)
    started = time.monotonic()
    got += [frames(url, victim, k) for k in range(10, 20)]  # taken over, resumed
    took = time.monotonic() - started
    assert got == reference
    assert took < 20, took
    # `survivor` may have run on either worker: it goes on all the same.
    steady += [frames(url, survivor, k) for k in range(10, 20)]
    assert steady == reference

    wait_until(
        "the worker started again",
        lambda: roster(data)[1]["restarts"] == 1 and roster(data)[1]["pid"] not in (0, dead),
    )
    said = f"worker 1 (node {nodes[1]}, pid {dead}) was killed by SIGKILL"
    assert said in server.output()
    restarted = roster(data)[1]["pid"]
    wait_until(
        "the restarted worker joined",
        lambda: f"node {nodes[1]} (life 2) joined" in server.output(),
        timeout_s=120,
    )
    metrics = fresh("GET", f"{url}/metrics").text
    assert 'framebroker_worker_restarts_total{worker="1"} 1.0' in metrics
    assert 'framebroker_worker_restarts_total{worker="0"} 0.0' in metrics
    assert "framebroker_workers 2.0" in metrics
    r = fresh("POST", f"{frames_url}/", files=files(image, seed_frame(60)))
    assert r.status_code == 200, r.text  # the source's session goes on wherever it was

    # A clean stop: every worker and the private redis-server end, nothing is left.
    pids = [roster(data)[0]["pid"], restarted]
    redis = redis_dir(server)
    assert holders(redis)
    assert server.stop() == 0, server.output()
    assert not [pid for pid in pids if alive(pid)]
    assert not holders(redis)
    assert not redis.exists()
    assert not (data / "workers.json").exists()
    assert "Traceback" not in server.output(), server.output()


ANALYSIS = """
[analysis]
window_frames = 3
reconnect_grace_s = 0

[analysis.pipelines]
tracks = ["bytetrack"]
"""


def engineio_relays(url: str, outcome: str = "ok") -> int:
    """The most Engine.IO requests one worker forwarded to another, in a few scrapes of
    /metrics (each on a fresh connection: any worker answers)."""
    found = 0
    for _ in range(12):
        metrics = fresh("GET", f"{url}/metrics").text
        line = f'framebroker_cluster_relays_total{{op="engineio",outcome="{outcome}"}} '
        for row in metrics.splitlines():
            if row.startswith(line):
                found = max(found, int(float(row[len(line) :])))
    return found


def test_long_polling_clients_stream_through_two_workers(tmp_path: Path, config: Path) -> None:
    """Seed 002 on Engine.IO's long-polling alone, every request on a fresh connection: the
    requests land on both workers, and the one that did not make a client's Engine.IO
    session forwards them to the one that did; every frame and every window is answered."""
    config.write_text(CONFIG + ANALYSIS)
    args = ("--config", str(config), "--workers", "2")
    with running_server(tmp_path / "data", *args, timeout=120) as server:
        url = server.url

        async def one(k: int) -> None:
            sid = fresh("GET", f"{url}/get_session_id").json()["session_id"]
            async with polling(url, f"session_id={sid}") as client:
                assert client.sio.transport() == "polling"
                await stream_windows(client, sid, windows=2, size=3)

        async def clients() -> None:
            await asyncio.gather(*(one(k) for k in range(3)))

        asyncio.run(clients())
        assert engineio_relays(url) > 0, "no poll landed on the worker that did not make its sid"
        assert "Traceback" not in server.output(), server.output()


def test_a_killed_supervisor_takes_its_workers_and_redis_with_it(
    tmp_path: Path, config: Path
) -> None:
    with running_server(
        tmp_path / "data", "--config", str(config), "--workers", "1", timeout=120
    ) as server:
        worker = roster(tmp_path / "data")[0]["pid"]
        wait_until("the worker joined", lambda: "joined cluster" in server.output())
        redis = redis_dir(server)
        server.stop(signal.SIGKILL)
        wait_until("the worker ended", lambda: not alive(worker), timeout_s=30)
        wait_until("redis-server ended", lambda: not holders(redis), timeout_s=30)
        shutil.rmtree(redis, ignore_errors=True)  # what the supervisor had no time to remove


class Reconnecting:
    """A python-socketio client that reconnects by itself (to the same URL, the same id), as
    python-socketio's clients do by default; what it gets waits in queues."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection_delay=0.2, reconnection_delay_max=1)
        self.results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connects = 0
        self.sio.on("result", self._result)
        self.sio.on("connect", self._connected)

    async def _result(self, data: Any = None) -> None:
        self.results.put_nowait(data)

    async def _connected(self) -> None:
        self.connects += 1

    async def frames(self, first: int, count: int) -> list[tuple[int, int]]:
        acks = []
        for i in range(first, first + count):
            ack = await self.sio.call("process", jpeg(scene(64, 48, seed=i)), timeout=10)
            acks.append((ack["frame"], ack["window"]))
        return acks

    async def result(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.results.get(), 30)


def test_a_stream_resumes_on_a_live_worker_when_its_worker_is_killed(
    tmp_path: Path, config: Path
) -> None:
    """kill -9 of the worker that runs a Socket.IO stream: the client reconnects by itself with
    the same id, lands on a live worker (the other, or the restarted one), and its stream goes
    on from its last snapshot: its next frames are answered and numbered on, its next window
    is numbered after every window it got."""
    config.write_text(CONFIG + ANALYSIS)
    args = ("--config", str(config), "--workers", "2")
    with running_server(tmp_path / "data", *args, timeout=120) as server:
        url, data = server.url, tmp_path / "data"
        wait_until("both workers in the roster", lambda: len(roster(data)) == 2)
        sid = fresh("GET", f"{url}/get_session_id").json()["session_id"]

        async def stream() -> None:
            client = Reconnecting()
            await client.sio.connect(
                f"{url}?session_id={sid}", transports=["websocket"], wait_timeout=10
            )
            try:
                assert await client.frames(0, 7) == [(i, i // 3) for i in range(7)]
                assert [(await client.result())["window"] for _ in range(2)] == [0, 1]
                owner = fresh("GET", f"{url}/v1/sessions/{sid}").json()["node"]
                worker = next(w for w in roster(data) if w["node"] == owner)
                await asyncio.sleep(0.6)  # past a snapshot (every 0.2 s) of frame 6
                os.kill(worker["pid"], signal.SIGKILL)
                killed = time.monotonic()
                for _ in range(300):
                    if client.connects == 2 and client.sio.connected:
                        break
                    await asyncio.sleep(0.1)
                assert client.connects == 2, "the client did not reconnect"
                # Window 2 (frame 6) was open at the snapshot: lost; numbering goes on.
                assert await client.frames(7, 3) == [(7, 3), (8, 3), (9, 3)]
                took = time.monotonic() - killed
                window = await client.result()
                assert (window["window"], window["first_frame"], window["frames"]) == (3, 7, 3)
                assert window["result"]["tracks"]["frames"] == 3
                assert took < 20, took
                info = fresh("GET", f"{url}/v1/sessions/{sid}").json()
                assert info["state"] == "active", info
                assert info["node"] in [w["node"] for w in roster(data)]
                await client.sio.call("end", timeout=10)
            finally:
                await client.sio.disconnect()
                await client.sio.shutdown()

        asyncio.run(stream())
        assert fresh("GET", f"{url}/v1/sessions/{sid}").json()["state"] == "ended"
        assert "Traceback" not in server.output(), server.output()[-6000:]
