"""The real server on a real PostgreSQL that fails under it, in the middle of its streams.

The people counter runs on the bundled clip (looped, as fast as it goes) while a REST client
creates and ends sessions. PostgreSQL is killed (SIGKILL to the postmaster) and started again,
then stopped (``pg_ctl stop -m immediate``) for 10 s, then stopped once more and the server
killed while it is away. Throughout: the server never crashes; a request that must write
(create or end a session) answers 503 ``store_unavailable`` while the database is away and
works again once it is back, with no restart; the counter never shows a crossing it has not
stored (it holds them back, see :mod:`framebroker.people.live`), and what it showed is never
lost, even when killed while the database is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import create_engine, text
from websockets.exceptions import ConnectionClosed

from framebroker.media.sources import demo_clip
from framebroker.storage import database_url

from ..postgres import PostgresServer, running_postgres
from .server import RunningServer, running_server

CONFIG = """
[people]
event_threshold = 1
event_window_s = 1.0
event_cooldown_s = 0.5

[limits]
db_timeout_s = 2
"""
OUTAGE_S = 10.0


@dataclass
class Shown:
    """What the live WebSocket pushed for the demo source: (monotonic time, in, out)."""

    stats: list[tuple[float, int, int]] = field(default_factory=list)
    frames: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def most(self) -> tuple[int, int]:
        with self.lock:
            return max(((i, o) for _, i, o in self.stats), default=(0, 0))

    def since(self, t: float) -> list[tuple[float, int, int]]:
        with self.lock:
            return [s for s in self.stats if s[0] >= t]

    def frames_since(self, t: float) -> int:
        with self.lock:
            return sum(f >= t for f in self.frames)


@contextlib.contextmanager
def following(server: RunningServer) -> Iterator[Shown]:
    """Follow ``/ws/live?source=demo`` on a thread of its own until the block ends."""
    shown = Shown()
    stop = threading.Event()
    url = server.url.replace("http://", "ws://") + "/ws/live?source=demo"

    async def follow() -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            async with websockets.connect(url, max_size=None) as ws:
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    msg = json.loads(raw)
                    now = time.monotonic()
                    with shown.lock:
                        if msg["type"] == "stats":
                            data = msg["data"]
                            shown.stats.append((now, data["count_in"], data["count_out"]))
                        elif msg["type"] == "frame":
                            shown.frames.append(now)

    thread = threading.Thread(target=lambda: asyncio.run(follow()), daemon=True)
    thread.start()
    try:
        yield shown
    finally:
        stop.set()
        thread.join(10)


def stored_counts(url: str) -> tuple[int, int]:
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as db:
            row = db.execute(
                text(
                    "SELECT COALESCE(SUM(count_in), 0), COALESCE(SUM(count_out), 0) "
                    "FROM daily_counts WHERE source = 'demo'"
                )
            ).one()
    finally:
        engine.dispose()
    return int(row[0]), int(row[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float, server: RunningServer) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert server.proc.poll() is None, f"the server died:\n{server.output()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def refused_while_away(client: httpx.Client, sid: str) -> None:
    """Requests that must write are answered 503 store_unavailable; the session stays."""
    created = client.post("/v1/sessions", json={"pipeline": ["bytetrack"]})
    assert created.status_code == 503, created.text
    assert created.json()["code"] == "store_unavailable"
    ended = client.delete(f"/v1/sessions/{sid}")
    assert ended.status_code == 503, ended.text
    assert ended.json()["code"] == "store_unavailable"
    live = client.get(f"/v1/sessions/{sid}")
    assert live.status_code == 200
    assert live.json()["state"] == "active"  # not ended: its end could not be stored
    tracked = client.post("/", json={"boxes": [[1, 2, 3, 4, 0.9, 0]]})  # would make a session
    assert tracked.status_code == 503, tracked.text
    assert client.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """This module stops and kills its server: it must be nobody else's."""
    with running_postgres() as server:
        yield server


def test_the_server_rides_out_a_database_that_fails(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    pg = own_postgres
    url = pg.create_database("faults")
    config = tmp_path / "framebroker.toml"
    config.write_text(CONFIG)
    args = ("--config", str(config), "--database-url", url,
            "--source", f"demo={demo_clip()}", "--no-source-realtime")  # fmt: skip
    data = tmp_path / "data"
    with (
        running_server(data, *args, "--loop") as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
        following(server) as shown,
    ):
        wait_for("a first crossing", lambda: shown.most()[0] >= 1, 60, server)
        sid = client.post("/v1/sessions", json={"pipeline": ["bytetrack"]}).json()["id"]

        # 1. Restarted in mid-stream: killed, started again at once.
        pg.kill()
        pg.start(pg.port)
        wait_for(
            "a session to be created again",
            lambda: client.post("/v1/sessions", json={}).status_code == 201,
            20,
            server,
        )

        # 2. Away for 10 s.
        pg.stop("immediate")
        away = time.monotonic()
        refused_while_away(client, sid)
        time.sleep(1.0)  # what was stored before the stop has been shown by now
        frozen = shown.most()
        while time.monotonic() - away < OUTAGE_S:
            assert server.proc.poll() is None, server.output()
            time.sleep(0.2)
        during = shown.since(away + 1.0)
        assert during, "stats stopped while the database was away"
        assert max((i, o) for _, i, o in during) == frozen  # nothing new shown while away
        pg.start(pg.port)
        back = time.monotonic()
        wait_for(
            "requests that write to work again",
            lambda: client.delete(f"/v1/sessions/{sid}").status_code == 200,
            20,
            server,
        )
        assert client.get(f"/v1/sessions/{sid}").json()["state"] == "ended"
        # The crossings counted while away are stored, then shown; frames go out again.
        wait_for("held-back crossings to be shown", lambda: shown.most() > frozen, 30, server)
        wait_for("frames again", lambda: shown.frames_since(back) > 0, 10, server)
        stored, most = stored_counts(url), shown.most()
        assert stored[0] >= most[0], (stored, most)
        assert stored[1] >= most[1], (stored, most)

        # 3. Away again, and the server killed meanwhile: what it showed was stored.
        pg.stop("immediate")
        time.sleep(3.0)  # crossings are held back meanwhile
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    pg.start(pg.port)
    most = shown.most()
    stored = stored_counts(url)
    assert stored[0] >= most[0], (stored, most)
    assert stored[1] >= most[1], (stored, most)
    log = server.output()
    assert "the database is unavailable" in log
    assert "the database is back" in log
