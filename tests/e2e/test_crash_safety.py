"""A server killed with SIGKILL in the middle of its streams loses nothing it had reported.

The real server counts people on the bundled clip and saves faces from a clip of a portrait,
while REST sessions come and go; it is killed at once after pushing a fresh count. The store
it leaves must be intact (SQLite's own check), every indexed face must have a whole JPEG (a
file beside SQLite, a row in PostgreSQL), and a restart on the same data directory and
database must report at least every count, event, face and ended session's summary that any
client was shown before the kill. It runs on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import simplejpeg
import websockets
from sqlalchemy import create_engine, text
from websockets.exceptions import ConnectionClosed

from framebroker.media.sources import demo_clip
from framebroker.storage import database_url

from .portrait import PORTRAIT, write_portrait_clip
from .server import RunningServer, running_server

BOXES = [[10, 10, 60, 120, 0.9, 0], [200, 40, 260, 160, 0.8, 0]]
# Events start on the first crossing and end soon after the last, so both happen in seconds.
CONFIG = """
[people]
event_threshold = 1
event_window_s = 1.0
event_cooldown_s = 0.5
"""


@dataclass
class Seen:
    """What clients were shown before the kill, per source."""

    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # the highest values
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    changes: int = 0  # stats messages of the demo source whose counts differed from the last

    def add_stats(self, source: str, data: dict[str, Any]) -> None:
        top = self.stats.setdefault(source, dict.fromkeys(data, 0))
        for key, value in data.items():
            if isinstance(value, int) and not isinstance(value, bool):
                top[key] = max(int(top.get(key, 0)), value)
        before = self.last.get(source)
        if source == "demo" and before is not None and counts(before) != counts(data):
            self.changes += 1
        self.last[source] = data

    def ready(self) -> bool:
        """Something of each kind was shown: a count and an event (the threshold is one
        crossing), and a face."""
        started = any(e["status"] == "started" for e in self.events)
        faces = self.stats.get("face", {}).get("face_count", 0)
        return started and self.stats.get("demo", {}).get("count_in", 0) >= 1 and faces >= 1


def counts(stats: dict[str, Any]) -> tuple[int, int]:
    return int(stats["count_in"]), int(stats["count_out"])


async def follow(url: str, source: str, seen: Seen) -> None:
    try:
        async with websockets.connect(f"{url}?source={source}", max_size=None) as ws:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "stats":
                    seen.add_stats(source, msg["data"])
                elif msg["type"] == "event":
                    seen.events.append(dict(msg["data"]))
    except (ConnectionClosed, OSError):
        return  # the server was killed


async def watch_then_kill(server: RunningServer, timeout: float = 40) -> Seen:
    """Follow both sources until counts, an event and a face were pushed, then SIGKILL the
    server right after a stats message that brought a fresh count (the likeliest moment for a
    count to be shown but not yet stored)."""
    seen = Seen()
    url = server.url.replace("http://", "ws://") + "/ws/live"
    followers = [asyncio.create_task(follow(url, s, seen)) for s in ("demo", "face")]
    deadline = time.monotonic() + timeout
    while not seen.ready():
        assert time.monotonic() < deadline, f"nothing to lose yet: {seen}"
        assert server.proc.poll() is None, server.output()
        await asyncio.sleep(0.02)
    changes, fresh_by = seen.changes, time.monotonic() + 6
    while seen.changes == changes and time.monotonic() < fresh_by:
        await asyncio.sleep(0.005)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    await asyncio.wait_for(asyncio.gather(*followers), 10)
    return seen


def rest_sessions(client: httpx.Client, ended: int = 3) -> tuple[dict[str, Any], str]:
    """``ended`` sessions that tracked a few frames and were ended (their DELETE replies, by
    id), and the id of one left running."""
    summaries: dict[str, Any] = {}
    for i in range(ended + 1):
        session = client.post("/v1/sessions", json={"pipeline": ["bytetrack"]})
        assert session.status_code == 201, session.text
        sid = session.json()["id"]
        for k in range(3 + i):
            moved = [[b[0] + 3 * k, b[1], b[2] + 3 * k, *b[3:]] for b in BOXES]
            reply = client.post(f"/v1/sessions/{sid}/frames", json={"boxes": moved})
            assert reply.status_code == 200, reply.text
        if i == ended:
            return summaries, sid
        gone = client.delete(f"/v1/sessions/{sid}")
        assert gone.status_code == 200, gone.text
        summaries[sid] = gone.json()["summary"]
    raise AssertionError("unreachable")


@dataclass
class Stored:
    """What the store held when the server died."""

    face_ids: list[int]
    counts: dict[str, tuple[int, int]]  # source: (in, out), summed over lines and days
    events: dict[str, int]  # source: how many
    event_ids: list[int]  # of the demo source
    faces: dict[str, int]  # source: how many


def check_store(data: Path, url: str) -> Stored:
    """Check the database and the face crops as the kill left them."""
    engine = create_engine(database_url(url))
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as db:

            def rows(sql: str) -> list[Any]:
                return list(db.execute(text(sql)).all())

            if sqlite:
                assert rows("PRAGMA integrity_check") == [("ok",)]
            faces = rows("SELECT face_id, filename FROM faces")
            stored = Stored(
                face_ids=[face_id for face_id, _ in faces],
                counts={
                    source: (int(cin), int(cout))
                    for source, cin, cout in rows(
                        "SELECT source, SUM(count_in), SUM(count_out) FROM daily_counts "
                        "GROUP BY source"
                    )
                },
                events=dict(rows("SELECT source, COUNT(*) FROM traffic_events GROUP BY source")),
                event_ids=[
                    i for (i,) in rows("SELECT id FROM traffic_events WHERE source = 'demo'")
                ],
                faces=dict(rows("SELECT source, COUNT(*) FROM faces GROUP BY source")),
            )
            crops = {} if sqlite else dict(rows("SELECT face_id, jpeg FROM face_crops"))
    finally:
        engine.dispose()
    for face_id, name in faces:
        assert name == f"face_{face_id}.jpg"
        # The row's crop is there, and whole.
        jpeg = (data / "faces" / name).read_bytes() if sqlite else bytes(crops.pop(face_id))
        assert simplejpeg.decode_jpeg(jpeg, strict=True).size > 0
    assert crops == {}  # no crop without its face
    for path in (data / "faces").glob("face_*.jpg"):  # none is half-written, indexed or not
        simplejpeg.decode_jpeg(path.read_bytes(), strict=True)
    return stored


def first_stats(url: str, source: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        async with websockets.connect(f"{url}?source={source}", max_size=None) as ws:
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg["type"] == "stats":
                    return dict(msg["data"])

    return asyncio.run(read())


@pytest.fixture
def portrait_clip(tmp_path: Path) -> Path:
    assert PORTRAIT.is_file(), f"test data missing: {PORTRAIT} (see ../shared/data/README.md)"
    path = tmp_path / "portrait.mp4"
    write_portrait_clip(path)
    return path


def test_a_killed_server_restarts_with_everything_it_had_reported(
    tmp_path: Path, portrait_clip: Path, empty_database: str
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "framebroker.toml"
    config.write_text(CONFIG)
    args = ("--config", str(config), "--source", f"demo={demo_clip()}",
            "--source", f"face={portrait_clip}", "--no-source-realtime",
            "--database-url", empty_database)  # fmt: skip

    with running_server(data, *args) as server, httpx.Client(base_url=server.url) as client:
        ended, running = rest_sessions(client)
        seen = asyncio.run(watch_then_kill(server))
    assert server.proc.returncode == -signal.SIGKILL

    # Whatever a client was shown had been committed: the store holds at least as much.
    stored = check_store(data, empty_database)
    for source in ("demo", "face"):
        shown = seen.stats[source]
        stored_in, stored_out = stored.counts.get(source, (0, 0))
        shown_in, shown_out = counts(shown)
        assert stored_in >= shown_in, (source, stored, shown)
        assert stored_out >= shown_out, (source, stored, shown)
        assert stored.events.get(source, 0) >= shown["daily_event_count"], (source, stored)
        assert stored.faces.get(source, 0) >= shown["face_count"], (source, stored)
    stored_faces = stored.face_ids
    pushed_events = {e["start_time"] for e in seen.events}

    with running_server(data, *args) as server, httpx.Client(base_url=server.url) as client:
        ws = server.url.replace("http://", "ws://") + "/ws/live"
        # Today's counts go on from at least what was shown before the kill.
        for source in ("demo", "face"):
            before, after = seen.stats[source], first_stats(ws, source)
            for key in ("count_in", "count_out", "daily_event_count", "face_count"):
                assert after[key] >= before[key], (source, key, before, after)
        hourly = client.get("/v1/sources/demo/counts/hourly").json()["hours"]
        assert sum(h["count_in"] for h in hourly) >= seen.stats["demo"]["count_in"]
        assert sum(h["count_out"] for h in hourly) >= seen.stats["demo"]["count_out"]

        # Every event pushed is stored; one the kill interrupted has been closed.
        events = client.get("/v1/sources/demo/events").json()["events"]
        assert pushed_events <= {e["start_time"] for e in events}, (seen.events, events)
        by_id = {e["id"]: e for e in events}
        assert all(by_id[i]["end_time"] is not None for i in stored.event_ids), events
        for e in seen.events:
            if e["status"] == "ended":
                assert {"start_time": e["start_time"], "end_time": e["end_time"]} in [
                    {"start_time": s["start_time"], "end_time": s["end_time"]} for s in events
                ]

        # Every face indexed before the kill is listed and served whole.
        listed = {f["face_id"] for f in client.get("/v1/faces?limit=200").json()["faces"]}
        assert set(stored_faces) <= listed
        for face_id in stored_faces:
            jpeg = client.get(f"/v1/faces/{face_id}.jpg")
            assert jpeg.status_code == 200
            simplejpeg.decode_jpeg(jpeg.content, strict=True)

        # Ended sessions keep their summaries; the one the kill cut short is ended too.
        for sid, summary in ended.items():
            record = client.get(f"/v1/sessions/{sid}").json()
            assert (record["state"], record["summary"]) == ("ended", summary)
        cut = client.get(f"/v1/sessions/{running}").json()
        assert cut["state"] == "ended"
        assert cut["summary"]["reason"] == "server_restarted"
    assert not list((data / "faces").glob("*.tmp"))
