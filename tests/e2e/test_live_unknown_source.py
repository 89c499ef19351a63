"""A typo in the live WebSocket's source name is answered, on the main port and the people
counter's own port, with the original API's error shape naming the sources there are."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from framebroker.media.sources import demo_clip

from .server import compat_flags, free_port, running_server


async def refused(url: str) -> tuple[dict[str, Any], int | None]:
    async with websockets.connect(url, max_size=None) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code is not None
        return first, ws.close_code


async def first_type(url: str) -> str:
    async with websockets.connect(url, max_size=None) as ws:
        return str(json.loads(await asyncio.wait_for(ws.recv(), 30))["type"])


def test_an_unknown_source_gets_an_error_naming_the_known_ones(tmp_path: Path) -> None:
    people_ws = free_port()
    args = ("--source", f"lobby={demo_clip()}", "--loop", *compat_flags(people_ws=people_ws))
    expected = {"error": "Unknown source 'lobbby'; known sources: lobby"}
    with running_server(tmp_path / "data", *args) as server:
        main = server.url.replace("http", "ws", 1)
        for url in (f"{main}/ws/live?source=lobbby", f"ws://127.0.0.1:{people_ws}/?source=lobbby"):
            assert asyncio.run(refused(url)) == (expected, 1008)
        # The right name, and no name, are served as before.
        assert asyncio.run(first_type(f"{main}/ws/live?source=lobby")) in ("frame", "stats")
        assert asyncio.run(first_type(f"ws://127.0.0.1:{people_ws}/")) in ("frame", "stats")


def test_without_sources_the_error_says_there_are_none(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server:
        url = f"{server.url.replace('http', 'ws', 1)}/ws/live?source=lobby"
        message, code = asyncio.run(refused(url))
    assert message == {
        "error": "Unknown source 'lobby'; known sources: none (the server runs no --source)"
    }
    assert code == 1008
