"""Per-client sessions, per-session frame rate and the WebSocket message limit, end to end:
`framebroker serve` in its own process, with real clients on every transport (httpx, the
python-socketio client, an aiortc peer over the seed's signaling socket, websockets).

One server for the module (``max_sessions_per_client = 2``, ``max_fps_per_session = 5``,
``max_ws_message_bytes = 64 KiB``); every test leaves no session of its own behind, since
all of them come from one client address, 127.0.0.1. 127.0.0.2 plays another client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import socketio
import websockets

from ..transports.images import scene
from ..transports.socketio_harness import Client, connected, jpeg
from ..transports.webrtc_client import ColourTrack, client_peer, negotiate, recv_type
from .server import RunningServer, compat_flags, free_port, running_server

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 64 * 1024
FPS = 5
BOXES = [[20, 23, 12, 24, 89, 0], [12, 34, 45, 56, 78, 1]]
RAW = np.zeros((48, 64, 3), np.uint8).tobytes()


class Served:
    def __init__(self, server: RunningServer, ports: dict[str, int]) -> None:
        self.server = server
        self.url = server.url
        self.host = server.url.removeprefix("http://")
        self.ports = ports

    def metric(self, series: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        line = next((x for x in text.splitlines() if x.startswith(series + " ")), None)
        return float(line.split()[-1]) if line else 0.0

    def sessions(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        lines = [x for x in text.splitlines() if x.startswith("framebroker_sessions{")]
        return sum(float(x.rsplit(" ", 1)[1]) for x in lines)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("limits")
    config = tmp / "framebroker.toml"
    config.write_text(
        f"[limits]\nmax_sessions_per_client = 2\nmax_fps_per_session = {FPS}\n"
        f"max_ws_message_bytes = {LIMIT}\n"
        '[analysis]\nsecret_key = "a-test-key-of-32-characters-xxxx"\n'
        "generate_session_id_on_connect = true\nreconnect_grace_s = 0\n"
        "[webrtc]\nmedia_timeout_s = 3.0\n"
    )
    ports = {"people_ws": free_port(), "webrtc_ws": free_port()}
    with pytest.MonkeyPatch.context() as patch:
        # The server imports the test model by module:attr, as it would a user's model.
        patch.setenv("PYTHONPATH", str(ROOT))
        with running_server(
            tmp / "data", "--config", str(config),
            "--model", "tests.e2e.webrtc_models:FrameNumber",
            *compat_flags(**ports),
        ) as server:  # fmt: skip
            yield Served(server, ports)


@pytest.fixture(autouse=True)
def _nothing_left_behind(served: Served) -> Iterator[None]:
    yield
    deadline = time.monotonic() + 10
    while served.sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.sessions() == 0, "a test left a session behind"


def other_client() -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)


def frames_form(source: str) -> dict[str, Any]:
    frame = json.dumps({"frame_no": 1, "source": source, "width": 64, "height": 48})
    return {
        "files": {
            "image": ("image.raw", RAW, "application/octet-stream"),
            "frame": ("frame.json", frame.encode(), "application/json"),
        }
    }


def assert_client_limit(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "client_session_limit"
    assert r.json()["limit"] == "max_sessions_per_client"


def test_each_http_api_counts_a_clients_sessions_and_others_go_on(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as http, other_client() as other:
        v1 = http.post("/v1/sessions").json()["id"]
        seed003 = http.post("/", **frames_form("cam-1")).headers["Session-Id"]
        assert_client_limit(http.post("/v1/sessions"))
        assert_client_limit(http.post("/", json={"boxes": BOXES}))  # seed 000
        assert_client_limit(http.post("/", **frames_form("cam-2")))  # seed 003
        # Another client is not affected, nor are this client's own sessions.
        theirs = other.post(f"{served.url}/v1/sessions")
        assert theirs.status_code == 201
        assert http.post(f"/v1/sessions/{v1}/frames", json={"boxes": BOXES}).status_code == 200
        # Ending a session frees its slot.
        assert http.delete("/", headers={"Session-Id": seed003}).status_code == 200
        r = http.post("/", json={"boxes": BOXES})
        assert r.status_code == 200
        for sid in (v1, theirs.json()["id"]):
            assert http.delete(f"/v1/sessions/{sid}").status_code == 200
        assert http.delete("/", headers={"Session-Id": r.headers["Session-Id"]}).status_code == 200
    errors = 'framebroker_errors_total{code="client_session_limit",transport="http"}'
    assert served.metric(errors) == 3


def test_http_frames_over_the_rate_get_429_with_retry_after(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as http:
        sid = http.post("/v1/sessions").json()["id"]
        other = http.post("/v1/sessions").json()["id"]
        replies = [
            http.post(f"/v1/sessions/{sid}/frames", json={"boxes": BOXES}) for _ in range(2 * FPS)
        ]
        codes = [r.status_code for r in replies]
        assert codes[:FPS] == [200] * FPS  # one second's burst
        assert 429 in codes
        refused = next(r for r in replies if r.status_code == 429)
        assert refused.json()["code"] == "frame_rate_exceeded"
        assert refused.json()["limit"] == "max_fps_per_session"
        assert refused.headers["Retry-After"] == "1"
        frames = f"/v1/sessions/{other}/frames"
        assert http.post(frames, json={"boxes": BOXES}).status_code == 200  # goes on
        time.sleep(refused.json()["retry_after_s"])
        assert http.post(f"/v1/sessions/{sid}/frames", json={"boxes": []}).status_code == 200
        for s in (sid, other):
            http.delete(f"/v1/sessions/{s}")
        # Seed 003 on its stream's session.
        got = [http.post("/", **frames_form("cam-7")) for _ in range(2 * FPS)]
        assert [r.status_code for r in got][:FPS] == [200] * FPS
        assert got[-1].status_code == 429
        assert got[-1].json()["code"] == "frame_rate_exceeded"
        http.delete("/", headers={"Session-Id": got[0].headers["Session-Id"]})
    dropped = 'framebroker_frames_dropped_total{{reason="rate_limited",transport="{}"}}'
    assert served.metric(dropped.format("rest-v1")) >= 1
    assert served.metric(dropped.format("frames")) >= 1


def test_socketio_counts_with_the_clients_sessions_limits_its_rate_and_its_messages(
    served: Served,
) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            held = [(await http.post("/v1/sessions")).json()["id"] for _ in range(2)]
            refused = Client()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(served.url)
            await refused.close()
            assert refused.refusal["data"]["code"] == "client_session_limit"
            for sid in held:
                await http.delete(f"/v1/sessions/{sid}")
            async with connected(served.url) as sio, connected(served.url) as big:
                # Frames over the session's rate: error events, and the stream goes on.
                replies = [await sio.frame(scene(64, 48)) for _ in range(2 * FPS)]
                errors = [r for r in replies if "code" in r]
                assert errors
                assert errors[0]["code"] == "frame_rate_exceeded"
                assert sio.pending("error") == []  # the acks said it, once
                await asyncio.sleep(errors[-1]["retry_after_s"])
                assert "size" in await sio.frame(scene(64, 48))
                # A message over max_ws_message_bytes: an error event, then the socket closes.
                await big.sio.emit("process", jpeg(np.random.default_rng(0).integers(
                    0, 255, (400, 400, 3), dtype=np.uint8)))  # fmt: skip
                error = await big.next("error")
                assert error["code"] == "payload_too_large"
                assert "max_ws_message_bytes" in error["error"]
                for _ in range(100):
                    if not big.sio.connected:
                        break
                    await asyncio.sleep(0.05)
                assert not big.sio.connected
                await asyncio.sleep(1 / FPS)  # a frame's worth of the rate
                assert "size" in await sio.frame(scene(64, 48))  # the other one goes on

    asyncio.run(scenario())
    assert served.metric('framebroker_errors_total{code="payload_too_large",transport="socketio"}')
    rate = 'framebroker_frames_dropped_total{reason="rate_limited",transport="socketio"}'
    assert served.metric(rate) >= 1


def test_webrtc_offers_count_and_frames_over_the_rate_are_dropped(served: Served) -> None:
    url = f"ws://127.0.0.1:{served.ports['webrtc_ws']}/"  # the seed's own signaling port

    async def scenario() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            held = [(await http.post("/v1/sessions")).json()["id"] for _ in range(2)]
            peer = client_peer(ColourTrack(size=(160, 120)))
            try:
                async with websockets.connect(url) as ws:
                    await ws.send(json.dumps({"type": "offer", "data": await peer.offer()}))
                    error, _ = await recv_type(ws, "error")
                    assert error["data"]["code"] == 429
                    assert error["data"]["limit"] == "max_sessions_per_client"
                    await http.delete(f"/v1/sessions/{held.pop()}")
                    await negotiate(peer, ws)
                    # A 30 fps camera, 5 frames a second let in: predictions keep coming.
                    started = time.monotonic()
                    predictions = 0
                    while time.monotonic() - started < 3:
                        await recv_type(ws, "prediction", timeout=10)
                        predictions += 1
                    await ws.send(json.dumps({"type": "end"}))
                    result, _ = await recv_type(ws, "result", timeout=20)
                    assert predictions <= 3 * FPS + FPS + 2  # burst, then the rate
            finally:
                await peer.close()
                for sid in held:
                    await http.delete(f"/v1/sessions/{sid}")
            return result

    result = asyncio.run(scenario())
    stats = result["stats"]
    assert stats["frames_dropped"] > stats["frames_processed"]  # most of 30 fps refused
    assert stats["frames_processed"] >= FPS
    rate = 'framebroker_frames_dropped_total{reason="rate_limited",transport="webrtc"}'
    assert served.metric(rate) >= stats["frames_dropped"] - 5
    errors = 'framebroker_errors_total{code="client_session_limit",transport="webrtc_ws"}'
    assert served.metric(errors) == 1


async def read_until_closed(ws: Any) -> list[str]:
    texts: list[str] = []
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            texts.append(str(await asyncio.wait_for(ws.recv(), 10)))
    return texts


@pytest.mark.parametrize(
    ("listener", "path", "message"),
    [
        ("main", "/ws/live", {"type": "get_all_faces"}),
        ("people_ws", "/", {"type": "get_all_faces"}),
        ("main", "/webrtc/ws", {"type": "ice-servers"}),
        ("webrtc_ws", "/", {"type": "ice-servers"}),
    ],
)
def test_every_websocket_closes_1009_over_the_message_limit(
    served: Served, listener: str, path: str, message: dict[str, Any]
) -> None:
    port = served.server.url.rsplit(":", 1)[1] if listener == "main" else served.ports[listener]
    url = f"ws://127.0.0.1:{port}{path}"

    async def scenario() -> None:
        async with websockets.connect(url) as other:
            # Over the limit: told why, then closed with 1009.
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({**message, "pad": "x" * LIMIT}))
                texts = await read_until_closed(ws)
                assert ws.close_code == 1009
                assert "payload_too_large" in texts[-1]
                assert "max_ws_message_bytes" in texts[-1]
            # Far over it (past the server's own cap, the limit plus 1 MiB): closed with
            # 1009 before the message is read at all.
            async with websockets.connect(url) as ws:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send("x" * (LIMIT + 2 * 1024 * 1024))
                assert await read_until_closed(ws) == []
                assert ws.close_code == 1009
            # Another socket on the same endpoint goes on.
            await other.send(json.dumps(message))
            reply = json.loads(await asyncio.wait_for(other.recv(), 10))
            assert reply["type"] in ("all_faces", "ice-servers"), reply

    asyncio.run(scenario())
