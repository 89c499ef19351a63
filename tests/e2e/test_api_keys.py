"""API keys on every transport of the real server: HTTP, the compat listeners, the seed-001
and seed-004 WebSockets (header or first message), and Socket.IO's ``auth``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import socketio
import websockets

from ..transports.socketio_harness import Client
from .server import RunningServer, compat_flags, free_port, running_server

KEY = "e2e-key-" + "x" * 20


@dataclass(frozen=True)
class Keyed:
    url: str
    ports: dict[str, int]
    running: RunningServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    data = tmp_path_factory.mktemp("keys")
    config = data / "fb.toml"
    config.write_text(
        f'[auth]\napi_keys = {{ci = "{KEY}"}}\n'
        '[analysis]\nsecret_key = "an-e2e-secret-that-is-long-enough"\nwindow_frames = 2\n'
    )
    ports = {"frames": free_port(), "people_ws": free_port(), "webrtc_ws": free_port()}
    with running_server(data, "--config", str(config), *compat_flags(**ports)) as running:
        yield Keyed(running.url, ports, running)


def test_http_on_the_main_port_and_a_compat_listener(server: Keyed) -> None:
    frames = f"http://127.0.0.1:{server.ports['frames']}/"
    for url in (f"{server.url}/v1/sessions", frames):
        assert httpx.post(url, json={}).status_code == 401
    r = httpx.get(f"{server.url}/v1/sessions", headers={"X-API-Key": KEY})
    assert r.status_code == 200


def test_a_wrong_key_is_told_it_was_refused_and_a_missing_one_that_one_is_needed(
    server: Keyed,
) -> None:
    wrong = "wrong-key-" + "y" * 20
    frames = f"http://127.0.0.1:{server.ports['frames']}/"
    for url in (f"{server.url}/v1/sessions", frames):
        missing = httpx.post(url, json={})
        assert missing.status_code == 401
        assert missing.json()["error"].startswith("an API key is required")
        for headers in ({"X-API-Key": wrong}, {"Authorization": f"Bearer {wrong}"}):
            refused = httpx.post(url, json={}, headers=headers)
            assert refused.status_code == 401
            assert refused.json() == {
                "error": "the API key was refused: it is none of the server's keys",
                "code": "unauthorized",
            }
            assert wrong not in refused.text

    async def sockets() -> list[str]:
        errors = []
        url = f"{server.url.replace('http', 'ws')}/ws/live"
        async with await _live(url, {"X-API-Key": wrong}) as ws:
            await ws.send(json.dumps({"type": "get_all_faces"}))
            errors.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["error"])
        async with await _live(url) as ws:
            await ws.send(json.dumps({"type": "auth", "api_key": wrong}))
            errors.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["error"])
        return errors

    for error in asyncio.run(sockets()):
        assert error == "the API key was refused: it is none of the server's keys"


async def _live(url: str, headers: dict[str, str] | None = None) -> websockets.ClientConnection:
    return await websockets.connect(url, open_timeout=10, additional_headers=headers)


def test_websockets_take_the_key_as_a_header_or_as_the_first_message(server: Keyed) -> None:
    ws_base = server.url.replace("http", "ws")
    live_compat = f"ws://127.0.0.1:{server.ports['people_ws']}/"
    signaling = f"ws://127.0.0.1:{server.ports['webrtc_ws']}/"

    async def scenario() -> None:
        # A header: the socket works as it always did.
        async with await _live(f"{ws_base}/ws/live", {"Authorization": f"Bearer {KEY}"}) as ws:
            await ws.send(json.dumps({"type": "get_all_faces"}))
            assert "faces" in json.loads(await asyncio.wait_for(ws.recv(), 10))
        # The first message, as a browser does, on every kind of socket.
        for url, probe, answer_key in (
            (live_compat, {"type": "get_all_faces"}, "faces"),
            (signaling, {"type": "ice-servers"}, "type"),
            (f"{ws_base}/webrtc/ws", {"type": "ice-servers"}, "type"),
        ):
            async with await _live(url) as ws:
                await ws.send(json.dumps({"type": "auth", "api_key": KEY}))
                assert json.loads(await ws.recv()) == {"type": "auth", "ok": True}
                await ws.send(json.dumps(probe))
                assert answer_key in json.loads(await asyncio.wait_for(ws.recv(), 10))
        # Anything else first, or a wrong key: an error, then closed with 1008.
        for first in ({"type": "get_all_faces"}, {"type": "auth", "api_key": "nope" * 6}):
            async with await _live(f"{ws_base}/ws/live") as ws:
                await ws.send(json.dumps(first))
                error = json.loads(await ws.recv())
                assert error["code"] == "unauthorized"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1008

    asyncio.run(scenario())


def test_socketio_takes_the_key_in_its_auth(server: Keyed) -> None:
    async def scenario() -> None:
        sid = httpx.get(f"{server.url}/get_session_id", headers={"X-API-Key": KEY}).json()
        refused = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(server.url, f"session_id={sid['session_id']}")
        await refused.close()
        assert refused.refusal["data"]["code"] == "unauthorized"
        assert refused.refusal["message"].startswith("an API key is required")
        wrong = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await wrong.connect(
                server.url, f"session_id={sid['session_id']}", auth={"api_key": "w" * 20}
            )
        await wrong.close()
        assert wrong.refusal["data"]["code"] == "unauthorized"
        assert (
            wrong.refusal["message"] == "the API key was refused: it is none of the server's keys"
        )
        assert "w" * 20 not in str(wrong.refusal)
        client = Client()
        await client.connect(server.url, f"session_id={sid['session_id']}", auth={"api_key": KEY})
        try:
            reply = await client.frame()
            assert reply["size"] == [64, 48]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_refusals_show_in_the_metrics(server: Keyed) -> None:
    text = httpx.get(f"{server.url}/metrics", headers={"X-API-Key": KEY}).text
    assert 'code="unauthorized"' in text
