"""What `framebroker serve --compat` logs for a user who connects a WebSocket and stops it:
one uvicorn banner, links to every API, nothing per connection and nothing about Socket.IO's
SECRET_KEY for a user who never used Socket.IO."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import websockets

from .server import compat_flags, free_port, running_server


async def open_and_close(*urls: str) -> None:
    for url in urls:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "nothing"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {
                "error": "Unknown message type"
            }


def test_the_log_has_one_banner_every_link_and_no_line_per_socket(tmp_path: Path) -> None:
    people_ws = free_port()
    with running_server(tmp_path / "data", *compat_flags(people_ws=people_ws)) as server:
        asyncio.run(open_and_close(f"{server.url.replace('http', 'ws')}/ws/live",
                                   f"ws://127.0.0.1:{people_ws}/"))  # fmt: skip
        server.stop()
    log = server.output()
    # uvicorn's own lines show only at debug, and then once for every listener together.
    assert log.count("Started server process") <= 1, log
    assert log.count("Finished server process") <= 1, log
    assert "Uvicorn running on" not in log, log  # our own lines say where, for each listener
    for path in ("/v1/sessions", "/offer", "/metrics", "/docs", "/ui/", "/ws/live"):
        assert f"{server.url}{path}" in log or f"{server.url.replace('http', 'ws')}{path}" in log, (
            path,
            log,
        )
    assert "connection open" not in log, log
    assert "[accepted]" not in log, log
    assert "SECRET_KEY" not in log, log


def test_at_debug_uvicorns_lines_show_once_for_every_listener(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", "--log-level", "debug", *compat_flags()) as server:
        server.stop()
    log = server.output()
    assert log.count("Started server process") == 1, log
    assert log.count("Finished server process") == 1, log
