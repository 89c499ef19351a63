"""A clean stop (SIGTERM) ends the traffic event in progress with its real count: stored, and
pushed to the live listeners before their sockets close; the next start finds nothing open."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from framebroker.media.sources import demo_clip

from .server import RunningServer, running_server

# An event starts with the first person in and does not end by itself during the test.
CONFIG = """
[people]
event_threshold = 1
event_window_s = 60.0
event_cooldown_s = 3600.0
"""


async def stop_during_an_event(server: RunningServer) -> tuple[int, list[dict[str, Any]]]:
    """Follow the source until an event has counted someone, SIGTERM the server, and keep
    reading until it closes the socket: the count shown last, and the events pushed."""
    url = f"{server.url.replace('http', 'ws', 1)}/ws/live?source=demo"
    events: list[dict[str, Any]] = []
    shown = 0
    async with websockets.connect(url, max_size=None) as ws:
        deadline = time.monotonic() + 120
        while shown < 1:
            assert time.monotonic() < deadline, "no event counted anyone"
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if msg.get("type") == "event":
                events.append(msg["data"])
            elif msg.get("type") == "stats" and msg["data"]["event_active"]:
                shown = int(msg["data"]["current_event_count_in"])
        server.proc.send_signal(signal.SIGTERM)
        try:
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if msg.get("type") == "event":
                    events.append(msg["data"])
                elif msg.get("type") == "stats" and msg["data"]["event_active"]:
                    shown = int(msg["data"]["current_event_count_in"])
        except ConnectionClosed:
            pass
    return shown, events


def stored_events(data: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{data / 'framebroker.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT start_time, end_time, ended_at, count_in FROM traffic_events "
            "WHERE source = 'demo' ORDER BY id"
        ).fetchall()
    finally:
        db.close()


def test_a_clean_stop_ends_the_running_event_with_its_count(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = data / "framebroker.toml"
    config.write_text(CONFIG)
    args = ("--config", str(config), "--source", f"demo={demo_clip()}", "--loop")
    with running_server(data, *args) as server:
        shown, events = asyncio.run(stop_during_an_event(server))
        # uvicorn raises the signal again once it has shut down, as a stopped process should.
        assert server.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)
    assert [e["status"] for e in events] == ["started", "ended"], events
    ended = events[-1]
    assert ended["count_in"] >= shown >= 1, (shown, events)
    rows = stored_events(data)
    assert len(rows) == 1, rows
    start_time, end_time, ended_at, count_in = rows[0]
    assert (start_time, end_time, count_in) == (ended["start_time"], ended["end_time"],
                                                ended["count_in"])  # fmt: skip
    assert ended_at is not None

    # The next start has nothing left open to close.
    with running_server(data, *args) as again:
        pass
    assert "left open" not in again.output(), again.output()
    assert stored_events(data) == rows
