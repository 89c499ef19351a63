"""The connection cap and the header, body and idle deadlines, against a real uvicorn server
on a free port, driven byte by byte from raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from uvicorn.server import ServerState

from framebroker.config import Limits, load_settings
from framebroker.errors import ConfigError
from framebroker.server.deadlines import protocol_class

from ..in_process import free_port, serving
from .raw_http import closed, dribble, get, post_head, read_reply

# Short enough for fast tests, long enough that a loaded CI machine still parses a request
# written in one piece well inside them.
SHORT = 0.6


async def ping(_: Request) -> Response:
    return JSONResponse({"pong": True})


async def echo(request: Request) -> Response:
    return JSONResponse({"received": len(await request.body())})


async def early(_: Request) -> Response:
    return JSONResponse({"early": True})  # answers without reading the body


async def streamed_echo(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"started;"
        yield b"%d" % len(await request.body())

    return StreamingResponse(chunks())


async def ws_echo(socket: WebSocket) -> None:
    await socket.accept()
    async for text in socket.iter_text():
        await socket.send_text(text)


APP = Starlette(
    routes=[
        Route("/ping", ping),
        Route("/echo", echo, methods=["POST"]),
        Route("/early", early, methods=["POST"]),
        Route("/streamed", streamed_echo, methods=["POST"]),
        WebSocketRoute("/ws", ws_echo),
    ]
)


@dataclass
class Listener:
    port: int
    refused: list[str] = field(default_factory=list)
    state: ServerState = field(default_factory=ServerState)

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def settle(self, connections: int) -> None:
        """Wait until the server itself holds ``connections`` open connections."""
        async with asyncio.timeout(10):
            while len(self.state.connections) != connections:
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def listening(**limits: float) -> AsyncIterator[Listener]:
    listener = Listener(free_port())
    config = uvicorn.Config(
        APP,
        host="127.0.0.1",
        port=listener.port,
        lifespan="off",
        log_level="warning",
        http=protocol_class(Limits(**limits), listener.refused.append),
    )
    async with serving(config) as server:
        listener.state = server.server_state
        yield listener


async def served_meanwhile(listener: Listener, requests: int) -> int:
    """Complete ``requests`` requests, each on a new connection; how many got their 200."""
    ok = 0
    for _ in range(requests):
        reader, writer = await listener.open()
        writer.write(get())
        ok += (await read_reply(reader)).status == 200
        writer.close()
        await asyncio.sleep(0.05)
    return ok


async def test_slow_headers_get_408_while_other_clients_are_served() -> None:
    async with listening(header_timeout_s=SHORT, idle_timeout_s=30) as listener:
        reader, writer = await listener.open()
        headers = get() + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"
        answer = asyncio.create_task(read_reply(reader))
        others = asyncio.create_task(served_meanwhile(listener, 5))
        assert not await dribble(writer, headers, 0.05, answer), "never cut off"
        reply = await answer
        assert reply.status == 408
        assert reply.headers["connection"] == "close"
        assert reply.json()["code"] == "header_timeout"
        assert "header_timeout_s" in str(reply.json()["error"])
        assert await closed(reader)
        assert await others == 5
        writer.close()
    assert listener.refused == ["header_timeout"]


async def test_a_connection_that_sends_nothing_is_closed_quietly() -> None:
    for limits in ({"idle_timeout_s": SHORT}, {"idle_timeout_s": 30, "header_timeout_s": SHORT}):
        async with listening(**limits) as listener:
            reader, writer = await listener.open()
            assert await closed(reader)
            writer.close()
        assert listener.refused == ["idle_timeout"], limits


async def test_kept_alive_connections_get_fresh_deadlines_per_request_and_close_when_idle() -> None:
    async with listening(header_timeout_s=1, idle_timeout_s=1) as listener:
        reader, writer = await listener.open()
        # Requests spaced under the deadlines keep one connection alive well past them.
        for _ in range(8):
            writer.write(get())
            assert (await read_reply(reader)).status == 200
            await asyncio.sleep(0.2)
        assert listener.refused == []
        assert await closed(reader)
        writer.close()
    assert listener.refused == ["idle_timeout"]


async def test_slow_body_gets_408_and_the_application_sees_a_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with listening(body_timeout_s=SHORT, idle_timeout_s=30) as listener:
        reader, writer = await listener.open()
        writer.write(post_head("/echo", 100) + b"x" * 10)
        answer = asyncio.create_task(read_reply(reader))
        others = asyncio.create_task(served_meanwhile(listener, 5))
        assert not await dribble(writer, b"y" * 90, 0.05, answer)
        reply = await answer
        assert reply.status == 408
        assert reply.json() == {
            "error": f"request body not complete within {SHORT:g} s (limits.body_timeout_s)",
            "code": "body_timeout",
            "field": "body",
        }
        assert await closed(reader)
        assert await others == 5
        writer.close()
    assert listener.refused == ["body_timeout"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_slow_body_after_the_answer_began_only_closes_the_connection() -> None:
    async with listening(body_timeout_s=SHORT, idle_timeout_s=30) as listener:
        reader, writer = await listener.open()
        writer.write(post_head("/streamed", 50) + b"x" * 5)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        rest = asyncio.create_task(reader.read())
        assert not await dribble(writer, b"y" * 45, 0.05, rest)
        assert rest.exception() is None
        assert b"started;" in rest.result()
        assert not rest.result().endswith(b"0\r\n\r\n"), "the answer should be cut short"
        writer.close()
    assert listener.refused == ["body_timeout"]


async def test_bodies_in_time_pass_whole_or_in_pieces() -> None:
    async with listening(body_timeout_s=5, header_timeout_s=5) as listener:
        reader, writer = await listener.open()
        big = 3 * 1024 * 1024
        writer.write(post_head("/echo", big) + b"z" * big)
        assert (await read_reply(reader)).json() == {"received": big}
        writer.write(post_head("/echo", 30))
        for _ in range(3):
            await asyncio.sleep(0.1)
            writer.write(b"p" * 10)
        assert (await read_reply(reader)).json() == {"received": 30}
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nhello\r\n")
        await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")
        assert (await read_reply(reader)).json() == {"received": 5}
        writer.close()
    assert listener.refused == []


async def test_a_body_sent_after_an_early_answer_is_not_held_to_the_header_deadline() -> None:
    # The next request's header clock starts at the end of this one, body included.
    async with listening(header_timeout_s=SHORT, body_timeout_s=10, idle_timeout_s=30) as lst:
        reader, writer = await lst.open()
        writer.write(post_head("/early", 40))
        assert (await read_reply(reader)).json() == {"early": True}
        for _ in range(3):
            writer.write(b"b" * 10)
            await asyncio.sleep(SHORT / 2)
        writer.write(b"b" * 10 + get())  # the body ends, past the header deadline
        assert (await read_reply(reader)).status == 200
        writer.close()
    assert lst.refused == []


async def test_pipelined_requests_are_all_answered() -> None:
    async with listening(header_timeout_s=SHORT, body_timeout_s=SHORT) as listener:
        reader, writer = await listener.open()
        writer.write(get() + post_head("/echo", 3) + b"abc" + get())
        replies = [await read_reply(reader) for _ in range(3)]
        assert [r.status for r in replies] == [200, 200, 200]
        assert replies[1].json() == {"received": 3}
        writer.close()
    assert listener.refused == []


async def test_connections_over_the_cap_get_503_until_one_closes() -> None:
    async with listening(max_connections=2, idle_timeout_s=30, header_timeout_s=30) as listener:
        held = [await listener.open() for _ in range(2)]
        for reader, writer in held:  # both are accepted and served
            writer.write(get())
            assert (await read_reply(reader)).status == 200
        reader, writer = await listener.open()
        writer.write(get())
        reply = await read_reply(reader)
        assert reply.status == 503
        assert reply.headers["retry-after"] == "1"
        assert reply.json()["code"] == "too_many_connections"
        assert await closed(reader)
        writer.close()
        # A WebSocket upgrade over the cap is refused the same way, as HTTP.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{listener.port}/ws", open_timeout=10)
        assert refused.value.response.status_code == 503
        # The kept-alive connections still work; once one closes, a newcomer is served.
        held[0][0].feed_eof()
        held[0][1].close()
        await held[0][1].wait_closed()
        await listener.settle(1)
        assert await served_meanwhile(listener, 1) == 1
        held[1][1].write(get())
        assert (await read_reply(held[1][0])).status == 200
        held[1][1].close()
    assert listener.refused == ["too_many_connections"] * 2


async def test_open_websockets_count_toward_the_cap_and_outlive_every_deadline() -> None:
    limits = {"max_connections": 1, "header_timeout_s": 0.2, "body_timeout_s": 0.2}
    async with listening(**limits, idle_timeout_s=0.2) as listener:
        async with websockets.connect(f"ws://127.0.0.1:{listener.port}/ws") as ws:
            for i in range(4):
                await asyncio.sleep(0.3)  # longer than any of the deadlines
                await ws.send(f"still here {i}")
                assert await asyncio.wait_for(ws.recv(), 10) == f"still here {i}"
            reader, writer = await listener.open()
            writer.write(get())
            assert (await read_reply(reader)).status == 503
            writer.close()
        await listener.settle(0)
        assert await served_meanwhile(listener, 1) == 1
    assert listener.refused == ["too_many_connections"]


async def test_a_head_over_the_limit_gets_431_and_nothing_reaches_the_application() -> None:
    async with listening(max_header_bytes=2048, idle_timeout_s=30) as listener:
        for head in (
            get("/ping?" + "q" * 3000)[:-2],  # the request line alone
            get()[:-2] + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(30)),
        ):
            reader, writer = await listener.open()
            writer.write(head + b"\r\n")
            reply = await read_reply(reader)
            assert reply.status == 431
            assert reply.json()["code"] == "headers_too_large"
            assert "max_header_bytes" in str(reply.json()["error"])
            assert await closed(reader)
            writer.close()
        assert await served_meanwhile(listener, 2) == 2  # a head under the limit passes
    assert listener.refused == ["headers_too_large"] * 2


async def test_a_websocket_handshake_with_an_overlong_line_gets_431() -> None:
    # The WebSocket layer reads lines of up to 8 KiB; past that it used to leave the client
    # waiting for ever. The HTTP limit is raised so that the line is what is refused.
    async with listening(max_header_bytes=1 << 20) as listener:
        reader, writer = await listener.open()
        writer.write(
            b"GET /ws?session_id=" + b"x" * 10_000 + b" HTTP/1.1\r\nHost: test\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        reply = await read_reply(reader)
        assert reply.status == 431
        assert "WebSocket handshake line" in str(reply.json()["error"])
        writer.close()
        async with websockets.connect(f"ws://127.0.0.1:{listener.port}/ws?ok=1") as ws:
            await ws.send("fine")
            assert await asyncio.wait_for(ws.recv(), 10) == "fine"
    assert listener.refused == ["headers_too_large"]


def test_the_limits_are_settings_with_safe_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Limits()
    assert defaults.max_connections >= 100
    assert 0 < defaults.idle_timeout_s <= defaults.header_timeout_s <= defaults.body_timeout_s
    monkeypatch.setenv("FRAMEBROKER_LIMITS__HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("FRAMEBROKER_LIMITS__MAX_CONNECTIONS", "7")
    limits = load_settings().limits
    assert (limits.header_timeout_s, limits.max_connections) == (2.5, 7)
    monkeypatch.setenv("FRAMEBROKER_LIMITS__BODY_TIMEOUT_S", "0")
    with pytest.raises(ConfigError, match=r"limits\.body_timeout_s"):
        load_settings()
