"""Seed 001's WebSocket API on a real uvicorn listener, with a real websockets client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets

from framebroker.config import Settings, load_settings
from framebroker.server import Services, build_app, build_compat_app

from ..in_process import free_port, serving

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


@contextlib.asynccontextmanager
async def listening(app: Any) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    async with serving(config):
        yield f"ws://127.0.0.1:{port}"


@pytest.fixture
def live_settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path, live={"client_queue": 4, "send_timeout_s": 1.0, "stats_interval_s": 0.1}
    )


@pytest.fixture
async def services(live_settings: Settings) -> AsyncIterator[Services]:
    svc = Services.build(live_settings)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
async def url(live_settings: Settings, services: Services) -> AsyncIterator[str]:
    async with listening(build_app(live_settings, services)) as base:
        yield base + "/ws/live"


async def recv_json(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def test_pushed_messages_have_the_seed_shapes(services: Services, url: str) -> None:
    async with websockets.connect(url) as ws:
        await asyncio.sleep(0.05)
        bus = services.broker.bus
        bus.publish("live/cam/frame", {"jpeg_b64": "QUJD", "time": time.time()})
        frame = await recv_json(ws)
        assert set(frame) == {"type", "data", "timestamp"}
        assert frame["type"] == "frame"
        assert frame["data"] == "QUJD"
        assert STAMP.match(frame["timestamp"])
        stats = {
            "count_in": 3, "count_out": 1, "face_count": 2, "daily_event_count": 0,
            "event_active": False, "current_event_count_in": 0,
        }  # fmt: skip
        bus.publish("live/cam/stats", {"data": stats, "time": time.time()})
        msg = await recv_json(ws)
        assert msg["type"] == "stats"
        assert msg["data"] == stats
        started = {"status": "started", "start_time": "09:00:01"}
        bus.publish("live/cam/event", {"data": started, "time": time.time()})
        msg = await recv_json(ws)
        assert (msg["type"], msg["data"]) == ("event", started)


async def test_a_client_can_follow_one_source(services: Services, url: str) -> None:
    services.hub.known_sources = lambda: ["door", "gate"]  # what the bus below publishes
    async with websockets.connect(url + "?source=door") as door, websockets.connect(url) as every:
        await asyncio.sleep(0.05)
        services.broker.bus.publish("live/gate/frame", {"jpeg_b64": "R0FURQ==", "time": 1.0})
        services.broker.bus.publish("live/door/frame", {"jpeg_b64": "RE9PUg==", "time": 2.0})
        assert (await recv_json(door))["data"] == "RE9PUg=="
        assert (await recv_json(every))["data"] == "R0FURQ=="
        assert (await recv_json(every))["data"] == "RE9PUg=="


async def test_faces_are_served_by_id_newest_first(
    services: Services, live_settings: Settings, url: str
) -> None:
    records = services.records
    assert records is not None
    folder = live_settings.faces_dir
    folder.mkdir(parents=True)
    ids = []
    for n in range(3):
        face_id, name = records.add_face(
            source="cam", track_id=n, day="2026-11-21", quality=1.0, score=0.9
        )
        (folder / name).write_bytes(b"\xff\xd8jpeg" + bytes([n]))
        ids.append(face_id)
    orphan, _ = records.add_face(source="cam", track_id=9, day="2026-11-21", quality=1, score=1)
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "get_face", "face_id": ids[1]}))
        reply = await recv_json(ws)
        assert reply == {
            "type": "face_image",
            "face_id": ids[1],
            "image_data": base64.b64encode(b"\xff\xd8jpeg\x01").decode(),
            "filename": f"face_{ids[1]}.jpg",
        }
        await ws.send(json.dumps({"type": "get_face", "face_id": 123456}))
        assert await recv_json(ws) == {
            "type": "face_image", "face_id": 123456, "error": "Face ID not found",
        }  # fmt: skip
        await ws.send(json.dumps({"type": "get_face", "face_id": orphan}))
        assert (await recv_json(ws))["error"] == "Face image file not found"
        await ws.send(json.dumps({"type": "get_all_faces"}))
        faces = (await recv_json(ws))["faces"]
        assert [f["face_id"] for f in faces] == ids[::-1]  # newest first; the orphan has no file
        assert set(faces[0]) == {"face_id", "filename", "image_data"}
        await ws.send(json.dumps({"type": "get_all_faces", "limit": 2}))
        assert [f["face_id"] for f in (await recv_json(ws))["faces"]] == [ids[2], ids[1]]


@pytest.mark.parametrize(
    ("request_text", "error"),
    [
        ("{not json", "Invalid JSON message"),
        ("[1, 2]", "Invalid JSON message"),
        ('{"type": "get_face", "face_id": "12"}', "Invalid face_id or limit format"),
        ('{"type": "get_face"}', "Invalid face_id or limit format"),
        ('{"type": "get_face", "face_id": -1}', "Invalid face_id or limit format"),
        ('{"type": "get_all_faces", "limit": "all"}', "Invalid face_id or limit format"),
        ('{"type": "get_all_faces", "limit": 100000}', "Invalid face_id or limit format"),
        ('{"type": "dance"}', "Unknown message type"),
    ],
)
async def test_bad_requests_get_the_seed_errors_and_the_connection_stays(
    services: Services, url: str, request_text: str, error: str
) -> None:
    async with websockets.connect(url) as ws:
        await ws.send(request_text)
        assert await recv_json(ws) == {"error": error}
        await ws.send(b"\x00binary")
        assert await recv_json(ws) == {"error": "Invalid JSON message"}
        services.broker.bus.publish("live/cam/frame", {"jpeg_b64": "QQ==", "time": 1.0})
        assert (await recv_json(ws))["type"] == "frame"


async def test_frames_are_serialised_once_and_slow_clients_only_lose_their_own(
    services: Services, url: str
) -> None:
    hub = services.hub
    big = "A" * 300_000
    # A client that completes the handshake and then never reads: a raw socket with a tiny
    # receive buffer, so the server feels it within a few frames.
    port = int(url.split(":")[2].split("/", maxsplit=1)[0])
    idle = socket.socket()
    idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    idle.connect(("127.0.0.1", port))
    idle.sendall(
        b"GET /ws/live HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        async with websockets.connect(url, max_size=None) as reader:
            while len(hub.clients) < 2:
                await asyncio.sleep(0.01)
            received = 0
            deadline = time.monotonic() + 15
            while hub.clients_dropped == 0 and time.monotonic() < deadline:
                services.broker.bus.publish("live/cam/frame", {"jpeg_b64": big, "time": 1.0})
                with contextlib.suppress(TimeoutError):
                    while True:
                        await asyncio.wait_for(reader.recv(), 0.02)
                        received += 1
            assert hub.clients_dropped == 1, "the client that stopped reading was not dropped"
            assert received > 10  # the reading client kept getting frames meanwhile
            assert len(hub.clients) == 1
            # One serialisation per frame, however many clients listen.
            formatted = hub.frames_formatted
            services.broker.bus.publish("live/cam/frame", {"jpeg_b64": "QQ==", "time": 1.0})
            while json.loads(await asyncio.wait_for(reader.recv(), 5))["data"] != "QQ==":
                pass
            assert hub.frames_formatted == formatted + 1
    finally:
        idle.close()


async def test_compat_listener_serves_the_same_hub_at_root(services: Services) -> None:
    async with (
        listening(build_compat_app("people_ws", services)) as base,
        websockets.connect(base + "/") as ws,
    ):
        await asyncio.sleep(0.05)
        services.broker.bus.publish("live/cam/frame", {"jpeg_b64": "QQ==", "time": 1.0})
        assert (await recv_json(ws))["data"] == "QQ=="
    with pytest.raises(ValueError, match="unknown compatibility listener"):
        build_compat_app("nope", services)
