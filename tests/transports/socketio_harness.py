"""Seed-002 test harness: the real app served by uvicorn on a free loopback port in the test's
event loop, and python-socketio clients that record what the server emits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import httpx
import numpy as np
import socketio
import uvicorn

from framebroker.config import Settings, load_settings
from framebroker.server import build_app

from ..in_process import free_port, serving
from .images import scene

KEY = "k" * 32


class Served:
    def __init__(self, url: str, settings: Settings, app: Any) -> None:
        self.url = url
        self.settings = settings
        self.app = app

    @property
    def analysis(self) -> Any:
        return self.app.state.analysis

    async def session_id(self) -> str:
        async with httpx.AsyncClient(base_url=self.url) as http:
            r = await http.get("/get_session_id")
            assert r.status_code == 200, r.text
            sid: str = r.json()["session_id"]
            return sid


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, **analysis: Any) -> AsyncIterator[Served]:
    """The app with these ``analysis`` settings (plus a test key), until the block ends.

    A disconnect ends its session at once (``reconnect_grace_s = 0``, as the original API),
    unless a test asks for a grace period."""
    settings = load_settings(
        data_dir=tmp_path,
        max_workers=2,
        limits={"max_image_pixels": 4_000_000},
        analysis={"secret_key": KEY, "reconnect_grace_s": 0, **analysis},
    )
    app = build_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    async with serving(config):
        yield Served(f"http://127.0.0.1:{port}", settings, app)


class Client:
    """A python-socketio client whose received events wait in queues by name."""

    def __init__(self, **options: Any) -> None:
        """``options``: more of python-socketio's client options."""
        self.sio = socketio.AsyncClient(reconnection=False, **options)
        self.events: dict[str, asyncio.Queue[Any]] = {}
        self.refusal: Any = None
        for name in ("result", "error", "session", "test", "ended"):
            self.sio.on(name, self._recorder(name))
        self.sio.on("connect_error", self._refused)

    def _recorder(self, name: str) -> Any:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.events[name] = queue

        async def record(data: Any = None) -> None:
            queue.put_nowait(data)

        return record

    async def _refused(self, data: Any = None) -> None:
        self.refusal = data

    async def connect(self, url: str, query: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("transports", ["websocket"])
        await self.sio.connect(f"{url}?{query}" if query else url, wait_timeout=5, **kwargs)

    async def next(self, name: str, timeout: float = 10) -> Any:
        return await asyncio.wait_for(self.events[name].get(), timeout)

    def pending(self, name: str) -> list[Any]:
        out = []
        while not self.events[name].empty():
            out.append(self.events[name].get_nowait())
        return out

    async def frame(self, image: np.ndarray | None = None, **kwargs: Any) -> Any:
        payload = jpeg(image if image is not None else scene(64, 48))
        return await self.sio.call("process", payload, timeout=10, **kwargs)

    async def close(self) -> None:
        if self.sio.connected:
            with contextlib.suppress(socketio.exceptions.TimeoutError):
                await self.sio.call("end", timeout=5)  # done: no reconnect grace
            await self.sio.disconnect()
        await self.sio.shutdown()
        # A handshake refused at the HTTP level leaves engineio's aiohttp session open.
        http = getattr(self.sio.eio, "http", None)
        if http is not None and not http.closed:
            await http.close()


@contextlib.asynccontextmanager
async def connected(url: str, query: str = "", **kwargs: Any) -> AsyncIterator[Client]:
    client = Client()
    try:
        await client.connect(url, query, **kwargs)
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def polling(url: str, query: str = "") -> AsyncIterator[Client]:
    """A client on Engine.IO's long-polling transport alone, each of its requests on a
    connection of its own (the connection closes after each answer): its requests land on
    whichever process of the server, or node of a cluster, accepts each connection."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    client = Client(http_session=http)
    try:
        await client.connect(url, query, transports=["polling"])
        yield client
    finally:
        eio = client.sio.eio
        if client.sio.connected:
            with contextlib.suppress(socketio.exceptions.TimeoutError):
                await client.sio.call("end", timeout=5)  # done: no reconnect grace
            # python-engineio's client would wait for its open poll to end, which the server
            # ends at its next ping (25 s): the stream has ended, so leave without waiting.
            tasks = [t for t in (eio.read_loop_task, eio.write_loop_task) if t is not None]
            await eio.disconnect(abort=True)
            await http.close()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await client.close()
        await http.close()


async def stream_windows(client: Client, session_id: str, windows: int, size: int) -> None:
    """Send ``windows * size`` frames on ``client`` and check every frame's ack and every
    window's result (a stream of ``size``-frame windows running ``tracks``)."""
    for w in range(windows):
        for i in range(size):
            reply = await client.frame(scene(64, 48, seed=w * size + i))
            assert reply["frame"] == w * size + i, reply
        result = await client.next("result", 30)
        assert (result["session_id"], result["window"]) == (session_id, w), result
        assert result["result"]["tracks"]["frames"] == size, result


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
