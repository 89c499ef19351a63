"""``limits.max_ws_message_bytes`` on every WebSocket: the wrapper itself, then each endpoint
(seed-001 push, seed-004 signaling, Socket.IO; main port and compatibility listeners) on a
real uvicorn listener: the reason first, then close 1009, and the other sockets go on."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from starlette.types import Message

from framebroker.config import Settings, load_settings
from framebroker.server import Services, build_app, build_compat_app
from framebroker.transports.ws_limits import HEADROOM, MessageLimit, hard_cap, message_bytes

from ..in_process import free_port, serving

LIMIT = 8192

# -- the wrapper ---------------------------------------------------------------------------


class Recorder:
    """An endpoint that echoes what it receives until it sees a disconnect."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.seen.append(message)
            if message["type"] == "websocket.disconnect":
                await send({"type": "websocket.send", "text": "last words"})
                return
            await send({"type": "websocket.send", "text": "echo"})


async def drive(app: Any, incoming: list[Message]) -> list[Message]:
    queue = list(incoming)
    sent: list[Message] = []

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "websocket"}, receive, send)
    return sent


async def test_a_message_over_the_limit_never_reaches_the_endpoint() -> None:
    inner = Recorder()
    refused: list[int] = []
    app = MessageLimit(inner, 10, lambda e: json.dumps(e.to_dict()), lambda: refused.append(1))
    sent = await drive(
        app,
        [
            {"type": "websocket.receive", "text": "x" * 10},
            {"type": "websocket.receive", "bytes": b"y" * 11},
            {"type": "websocket.receive", "text": "never read"},
        ],
    )
    assert [m["type"] for m in inner.seen] == ["websocket.receive", "websocket.disconnect"]
    assert inner.seen[1]["code"] == 1009
    assert sent[0] == {"type": "websocket.send", "text": "echo"}
    error = json.loads(sent[1]["text"])
    assert error["code"] == "payload_too_large"
    assert "11 bytes is over the limit of 10 bytes" in error["error"]
    assert "max_ws_message_bytes" in error["error"]
    assert sent[2]["type"] == "websocket.close"
    assert sent[2]["code"] == 1009
    assert len(sent) == 3  # the endpoint's last words went nowhere
    assert refused == [1]


async def test_text_is_measured_in_utf8_bytes_and_http_passes_through() -> None:
    assert message_bytes({"text": "é" * 6}) == 12
    assert message_bytes({"text": "abc"}) == 3
    assert message_bytes({"bytes": b"\x00" * 7}) == 7
    inner = Recorder()
    app = MessageLimit(inner, 10, lambda e: None)
    sent = await drive(app, [{"type": "websocket.receive", "text": "é" * 6}])
    assert [m["type"] for m in sent] == ["websocket.close"]  # no refusal text to give
    assert inner.seen[0]["type"] == "websocket.disconnect"

    called: list[Any] = []

    async def http(scope: Any, receive: Any, send: Any) -> None:
        called.append((scope["type"], receive, send))

    async def receive() -> Message:
        return {"type": "http.request", "body": b"x" * 100}

    async def send(message: Message) -> None:
        pass

    await MessageLimit(http, 10, lambda e: None)({"type": "http"}, receive, send)
    assert called == [("http", receive, send)]  # untouched
    assert hard_cap(LIMIT) == LIMIT + HEADROOM
    with pytest.raises(ValueError, match="limit"):
        MessageLimit(http, 0, lambda e: None)


# -- every WebSocket of a real server --------------------------------------------------------


@contextlib.asynccontextmanager
async def listening(app: Any, lifespan: str = "off") -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan,  # type: ignore[arg-type]
                            log_level="warning")  # fmt: skip
    async with serving(config):
        yield f"127.0.0.1:{port}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path,
        max_workers=2,
        limits={"max_ws_message_bytes": LIMIT},
        analysis={
            "secret_key": "k" * 32,
            "generate_session_id_on_connect": True,
            "reconnect_grace_s": 0,  # a connection the server closes does not wait for a reconnect
        },
        webrtc={"models": []},
    )


@pytest.fixture
async def hosts(settings: Settings) -> AsyncIterator[tuple[Services, dict[str, str]]]:
    services = Services.build(settings)
    async with contextlib.AsyncExitStack() as stack:
        found = {"main": await stack.enter_async_context(
            listening(build_app(settings, services), lifespan="on"))}  # fmt: skip
        for name in ("people_ws", "webrtc_ws"):
            app = build_compat_app(name, services)
            found[name] = await stack.enter_async_context(listening(app))
        yield services, found


async def refused(url: str, message: str | bytes) -> tuple[list[str], int | None]:
    """Send ``message`` and read until the server closes: what came, and the close code."""
    texts: list[str] = []
    async with websockets.connect(url) as ws:
        await ws.send(message)
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                texts.append(str(await asyncio.wait_for(ws.recv(), 5)))
        assert ws.close_code is not None
        return texts, ws.close_code


def metric(services: Services, transport: str) -> float:
    text = services.broker.metrics.render().decode()
    series = f'framebroker_errors_total{{code="payload_too_large",transport="{transport}"}} '
    line = next((x for x in text.splitlines() if x.startswith(series)), None)
    return float(line.split()[-1]) if line else 0.0


@pytest.mark.parametrize(("listener", "path"), [("main", "/ws/live"), ("people_ws", "/")])
async def test_live_push_refuses_a_message_too_big_and_other_clients_go_on(
    hosts: tuple[Services, dict[str, str]], listener: str, path: str
) -> None:
    services, found = hosts
    url = f"ws://{found[listener]}{path}"
    async with websockets.connect(url) as other:
        texts, code = await refused(url, json.dumps({"type": "get_all_faces", "pad": "x" * LIMIT}))
        assert code == 1009
        assert len(texts) == 1
        error = json.loads(texts[0])
        assert error["code"] == "payload_too_large"
        assert f"over the limit of {LIMIT} bytes" in error["error"]
        # A message at the limit is read (and answered like any bad request).
        await other.send(b"\x00" * LIMIT)
        assert json.loads(await asyncio.wait_for(other.recv(), 5)) == {
            "error": "Invalid JSON message"
        }
        assert metric(services, "live_ws") == 1


@pytest.mark.parametrize(("listener", "path"), [("main", "/webrtc/ws"), ("webrtc_ws", "/")])
async def test_signaling_refuses_a_message_too_big_and_other_sockets_go_on(
    hosts: tuple[Services, dict[str, str]], listener: str, path: str
) -> None:
    services, found = hosts
    url = f"ws://{found[listener]}{path}"
    async with websockets.connect(url) as other:
        texts, code = await refused(url, json.dumps({"type": "ice-servers", "pad": "x" * LIMIT}))
        assert code == 1009
        error = json.loads(texts[-1])
        assert error["type"] == "error"
        assert error["data"]["code"] == 413
        assert error["data"]["error"] == "payload_too_large"
        assert error["data"]["field"] == "message"
        await other.send(json.dumps({"type": "ice-servers"}))
        assert json.loads(await asyncio.wait_for(other.recv(), 5)) == {
            "type": "ice-servers",
            "data": [],
        }
        assert metric(services, "webrtc_ws") == 1


async def test_socketio_refuses_a_message_too_big_with_an_error_event_then_1009(
    hosts: tuple[Services, dict[str, str]],
) -> None:
    services, found = hosts
    url = f"ws://{found['main']}/socket.io/?EIO=4&transport=websocket"

    async def engineio_client() -> Any:
        ws = await websockets.connect(url)
        assert str(await ws.recv()).startswith("0{")  # Engine.IO open
        await ws.send("40")  # Socket.IO connect, default namespace
        while not str(await asyncio.wait_for(ws.recv(), 5)).startswith("40"):
            pass
        return ws

    other = await engineio_client()
    big = await engineio_client()
    try:
        await big.send('42["test","' + "x" * LIMIT + '"]')
        texts: list[str] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                texts.append(str(await asyncio.wait_for(big.recv(), 5)))
        assert big.close_code == 1009
        events = [json.loads(t[2:]) for t in texts if t.startswith("42")]
        assert events[-1][0] == "error"
        assert events[-1][1]["code"] == "payload_too_large"
        # The other connection still works.
        await other.send('42["test","hello"]')
        while not (text := str(await asyncio.wait_for(other.recv(), 5))).startswith('42["test"'):
            pass  # its "session" event (the id it was given) comes first
        assert json.loads(text[2:])[1]["data"] == "hello"
        assert metric(services, "socketio") == 1
        # The refused connection's stream is gone, and its client's slot with it.
        clients = services.broker.manager.clients
        for _ in range(100):
            if clients.held("127.0.0.1") == 1:
                break
            await asyncio.sleep(0.02)
        assert clients.held("127.0.0.1") == 1
    finally:
        await other.close()
        await big.close()
