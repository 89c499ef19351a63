"""Connection limits on the real `framebroker serve`: slow headers, slow bodies, too many
connections and idle connections, on the main port and on the seed-003 compat listener, each
counted in /metrics under its listener; and a live WebSocket that outlives every deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from ..server.raw_http import closed, dribble, get, post_head, read_reply
from .server import RunningServer, compat_flags, free_port, running_server

MAX_CONNECTIONS = 4
DEADLINE_S = 1.0


@dataclass(frozen=True)
class Limited:
    running: RunningServer
    frames_port: int

    @property
    def main_port(self) -> int:
        return int(self.running.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    data = tmp_path_factory.mktemp("limits")
    config = data / "fb.toml"
    config.write_text(
        f"[limits]\nmax_connections = {MAX_CONNECTIONS}\nheader_timeout_s = {DEADLINE_S}\n"
        f"body_timeout_s = {DEADLINE_S}\nidle_timeout_s = {DEADLINE_S}\n"
    )
    frames = free_port()
    with running_server(data, "--config", str(config), *compat_flags(frames=frames)) as running:
        yield Limited(running, frames)


@dataclass(frozen=True)
class Listener:
    label: str  # the transport label of its metrics
    port: int
    body_path: str  # a route that reads its body
    content_type: str

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


def listeners(server: Limited) -> list[Listener]:
    return [
        Listener("http", server.main_port, "/", "application/json"),
        Listener("frames", server.frames_port, "/", "multipart/form-data; boundary=b0undary"),
    ]


async def healthy(server: Limited) -> bool:
    async with httpx.AsyncClient(base_url=server.running.url, timeout=10) as client:
        return (await client.get("/healthz")).status_code == 200


async def slow_headers(server: Limited, listener: Listener) -> None:
    reader, writer = await listener.open()
    answer = asyncio.create_task(read_reply(reader))
    headers = b"GET / HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"p" * 100 + b"\r\n\r\n"
    sending = asyncio.create_task(dribble(writer, headers, 0.1, answer))
    assert await healthy(server), "another client was not served meanwhile"
    assert not await sending, f"{listener.label}: a slow header was never cut off"
    reply = await answer
    assert (reply.status, reply.json()["code"]) == (408, "header_timeout"), listener
    assert await closed(reader)
    writer.close()


async def slow_body(server: Limited, listener: Listener) -> None:
    reader, writer = await listener.open()
    start = (
        b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="i.raw"\r\n\r\n'
        if listener.content_type.startswith("multipart/")
        else b'{"boxes": '
    )
    writer.write(post_head(listener.body_path, 500, listener.content_type) + start)
    answer = asyncio.create_task(read_reply(reader))
    sending = asyncio.create_task(dribble(writer, b"x" * 490, 0.1, answer))
    assert await healthy(server), "another client was not served meanwhile"
    assert not await sending, f"{listener.label}: a slow body was never cut off"
    reply = await answer
    assert (reply.status, reply.json()["code"]) == (408, "body_timeout"), listener
    assert await closed(reader)
    writer.close()


async def too_many(listener: Listener) -> int:
    """How many requests were refused 503: one, and any the server answered before it saw
    the held connections close."""
    held = [await listener.open() for _ in range(MAX_CONNECTIONS)]
    for reader, writer in held:  # each is accepted: answered (a 405 on frames) and kept
        writer.write(get("/"))
        assert (await read_reply(reader)).status in (200, 405)
    reader, writer = await listener.open()
    writer.write(get("/"))
    reply = await read_reply(reader)
    assert (reply.status, reply.json()["code"]) == (503, "too_many_connections"), listener
    assert await closed(reader)
    writer.close()
    for _, held_writer in held:
        held_writer.close()
        await held_writer.wait_closed()
    refused = 1
    async with asyncio.timeout(10):  # a slot is freed once the server sees them go
        while True:
            reader, writer = await listener.open()
            writer.write(get("/"))
            status = (await read_reply(reader)).status
            writer.close()
            if status != 503:
                break
            refused += 1
            await asyncio.sleep(0.1)
    assert status in (200, 405)
    return refused


async def idle(listener: Listener) -> None:
    reader, writer = await listener.open()
    assert await closed(reader), f"{listener.label}: an idle connection was kept"
    writer.close()


def errors_counted(server: Limited) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{server.running.url}/metrics", timeout=10).text
    counted: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "framebroker_errors":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["transport"], sample.labels["code"])
                    counted[key] = sample.value
    return counted


async def test_every_listener_cuts_off_slow_crowding_and_idle_clients(server: Limited) -> None:
    before = errors_counted(server)
    expected: dict[tuple[str, str], int] = {}
    for listener in listeners(server):
        await slow_headers(server, listener)
        await slow_body(server, listener)
        expected[listener.label, "too_many_connections"] = await too_many(listener)
        await idle(listener)
        expected[listener.label, "header_timeout"] = 1
        expected[listener.label, "body_timeout"] = 1
    counted = errors_counted(server)
    for key, times in expected.items():
        assert counted.get(key, 0) - before.get(key, 0) == times, (key, counted)
    for listener in listeners(server):
        key = (listener.label, "idle_timeout")
        assert counted.get(key, 0) - before.get(key, 0) >= 1, (key, counted)


async def test_a_live_websocket_outlives_every_deadline(server: Limited) -> None:
    url = server.running.url.replace("http", "ws") + "/ws/live"
    async with websockets.connect(url, open_timeout=10, max_size=None) as ws:
        await asyncio.sleep(2.5 * DEADLINE_S)
        await ws.send(json.dumps({"type": "get_all_faces"}))
        while True:  # pushed stats may come first
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if reply.get("type") not in ("stats", "frame", "event"):
                break
        assert "faces" in reply, reply
