"""Ready frames (the ``websocket.preframed`` extension) over a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import uvicorn
import websockets
from starlette.types import Receive, Scope, Send

from framebroker.server.ws_protocol import PreframedWebSocketProtocol
from framebroker.transports.preframed import PREFRAMED_SEND, offers_preframed, text_frame

from ..in_process import free_port, serving

TEXTS = ["", "a" * 125, "é" * 100, "b" * 126, "c" * 65_535, "d" * 65_536, '{"x": 1}' * 20_000]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Sends every text as a ready frame where the server offers it, else as plain text,
    then a last text saying which."""
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    ready = offers_preframed(scope)
    for text in TEXTS:
        if ready:
            await send({"type": PREFRAMED_SEND, "frame": text_frame(text.encode())})
        else:
            await send({"type": "websocket.send", "text": text})
    await send({"type": "websocket.send", "text": f"ready={ready}"})
    await receive()  # until the client closes


@contextlib.asynccontextmanager
async def served_with(ws: type | str) -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws=ws
    )
    async with serving(config):
        yield port


@pytest.mark.parametrize(
    ("protocol", "ready"), [(PreframedWebSocketProtocol, True), ("websockets-sansio", False)]
)
async def test_ready_frames_arrive_as_the_same_texts(protocol: type | str, ready: bool) -> None:
    async with (
        served_with(protocol) as port,
        websockets.connect(f"ws://127.0.0.1:{port}/", max_size=None) as client,
    ):
        got = [await asyncio.wait_for(client.recv(), 10) for _ in TEXTS]
        assert got == TEXTS  # a client's own parser reads every length encoding
        assert await client.recv() == f"ready={ready}"


def test_text_frames_use_the_shortest_length_encoding() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame(b"x" * 65_536)[:10] == b"\x81\x7f" + (65_536).to_bytes(8, "big")
