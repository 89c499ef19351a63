"""``limits.max_sessions_per_client`` and ``limits.max_fps_per_session`` on every transport
that makes sessions: REST v1, seed 000 and seed 003 (HTTP 429 naming the limit, with
``Retry-After`` for the rate), Socket.IO (connect refused, ``error`` events) and WebRTC
signaling (an ``error`` message). One client over its share never affects another."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import socketio
import websockets

from framebroker.config import Settings, load_settings
from framebroker.server import Services, build_app

from .images import scene
from .socketio_harness import Client, connected, jpeg
from .test_box_tracking import SEED_BOXES
from .test_frame_upload import files
from .test_ws_limits import listening
from .webrtc_client import client_peer, recv_type

A, B = "10.0.0.1", "10.0.0.2"
RAW = np.zeros((48, 64, 3), np.uint8).tobytes()


def settings_with(tmp_path: Path, **limits: Any) -> Settings:
    return load_settings(
        data_dir=tmp_path,
        max_workers=2,
        limits=limits,
        analysis={
            "secret_key": "k" * 32,
            "generate_session_id_on_connect": True,
            "reconnect_grace_s": 0,  # a disconnect frees the slot at once
        },
        webrtc={"models": []},
    )


Clients = tuple[Services, httpx.AsyncClient, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def clients(settings: Settings) -> AsyncIterator[Clients]:
    """Two HTTP clients of one in-process app, from two addresses."""
    services = Services.build(settings)
    await services.start()
    app = build_app(settings, services)

    def at(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 1))
        return httpx.AsyncClient(transport=transport, base_url="http://fb")

    try:
        async with at(A) as a, at(B) as b:
            yield services, a, b
    finally:
        await services.stop()


def frames_post(source: str, width: int = 64, height: int = 48) -> dict[str, Any]:
    frame = {"frame_no": 1, "source": source, "width": width, "height": height}
    return {"files": files(RAW, frame)}


def counted(services: Services, series: str) -> float:
    text = services.broker.metrics.render().decode()
    line = next((x for x in text.splitlines() if x.startswith(series + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def refused_for_sessions(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["code"] == "client_session_limit"
    assert body["limit"] == "max_sessions_per_client"
    assert "limit (limits.max_sessions_per_client) is 2" in body["error"]


async def test_a_client_holds_its_share_of_sessions_over_every_http_api(tmp_path: Path) -> None:
    async with clients(settings_with(tmp_path, max_sessions_per_client=2)) as (services, a, b):
        first = (await a.post("/v1/sessions")).json()["id"]
        r = await a.post("/", json={"boxes": SEED_BOXES})  # seed 000: a new session
        assert r.status_code == 200
        seed_sid = r.headers["Session-Id"]
        refused_for_sessions(await a.post("/v1/sessions"))
        refused_for_sessions(await a.post("/", json={"boxes": SEED_BOXES}))
        refused_for_sessions(await a.post("/", **frames_post("cam-9")))  # seed 003
        # Its existing sessions go on, and so does another client.
        assert (await a.post("/", json={"boxes": SEED_BOXES},
                             headers={"Session-Id": seed_sid})).status_code == 200  # fmt: skip
        assert (await a.post(f"/v1/sessions/{first}/frames", json={"boxes": []})).status_code == 200
        assert (await b.post("/v1/sessions")).status_code == 201
        assert (await b.post("/", **frames_post("cam-9"))).status_code == 200
        # An ended session frees its slot.
        assert (await a.delete(f"/v1/sessions/{first}")).status_code == 200
        r = await a.post("/", **frames_post("cam-1"))
        assert r.status_code == 200, r.text
        assert services.broker.manager.clients.held(A) == 2
        errors = 'framebroker_errors_total{code="client_session_limit",transport="http"}'
        assert counted(services, errors) == 3


async def test_a_session_over_its_frame_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    async with clients(settings_with(tmp_path, max_fps_per_session=2)) as (services, a, b):
        sid = (await a.post("/v1/sessions")).json()["id"]
        other = (await a.post("/v1/sessions")).json()["id"]
        url = f"/v1/sessions/{sid}/frames"
        codes = [(await a.post(url, json={"boxes": SEED_BOXES})).status_code for _ in range(2)]
        r = await a.post(url, json={"boxes": SEED_BOXES})
        assert codes == [200, 200]
        assert r.status_code == 429
        body = r.json()
        assert (body["code"], body["limit"]) == ("frame_rate_exceeded", "max_fps_per_session")
        assert 0 < body["retry_after_s"] <= 0.5
        assert r.headers["Retry-After"] == "1"
        # The same client's other session, another client, then this session after the wait.
        assert (await a.post(f"/v1/sessions/{other}/frames", json={"boxes": []})).status_code == 200
        r = await b.post("/", json={"boxes": SEED_BOXES})
        assert r.status_code == 200
        await asyncio.sleep(body["retry_after_s"])
        r = await a.post(url, json={"boxes": SEED_BOXES})
        assert r.status_code == 200
        assert r.json()["frame_index"] == 2  # the refused frame took no number
        # Seed 003: the same, on its stream's session.
        got = [(await b.post("/", **frames_post("cam-1"))).status_code for _ in range(3)]
        assert got == [200, 200, 429]
        dropped = 'framebroker_frames_dropped_total{{reason="rate_limited",transport="{}"}}'
        assert counted(services, dropped.format("rest-v1")) == 1
        assert counted(services, dropped.format("frames")) == 1
        errors = 'framebroker_errors_total{code="frame_rate_exceeded",transport="http"}'
        assert counted(services, errors) == 2
        stats = (await a.get(f"/v1/sessions/{sid}")).json()["stats"]
        assert stats["frames_dropped"] == 1


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[Services, str]]:
    services = Services.build(settings)
    async with listening(build_app(settings, services), lifespan="on") as host:
        yield services, host


async def test_socketio_connections_count_with_the_clients_other_sessions(tmp_path: Path) -> None:
    async with (
        served(settings_with(tmp_path, max_sessions_per_client=2)) as (services, host),
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        url = f"http://{host}"
        rest = (await http.post("/v1/sessions")).json()["id"]
        async with connected(url) as first:
            assert "size" in await first.frame()
            refused = Client()
            try:
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await refused.connect(url)
                assert "holds 2 sessions" in refused.refusal["message"]
                assert refused.refusal["data"]["code"] == "client_session_limit"
                assert refused.refusal["data"]["limit"] == "max_sessions_per_client"
            finally:
                await refused.close()
            assert "size" in await first.frame()  # the connected one goes on
            assert (await http.delete(f"/v1/sessions/{rest}")).status_code == 200
            async with connected(url) as second:  # a REST session ended: room again
                assert "size" in await second.frame()
        for _ in range(100):
            if services.broker.manager.clients.held("127.0.0.1") == 0:
                break
            await asyncio.sleep(0.02)
        assert services.broker.manager.clients.held("127.0.0.1") == 0
        errors = 'framebroker_errors_total{code="client_session_limit",transport="socketio"}'
        assert counted(services, errors) == 1


async def test_socketio_frames_over_the_rate_get_error_events_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    async with served(settings_with(tmp_path, max_fps_per_session=2)) as (services, host):
        url = f"http://{host}"
        async with connected(url) as fast, connected(url) as other:
            replies = [await fast.frame() for _ in range(2)]
            assert ["size" in r for r in replies] == [True, True]
            await fast.sio.emit("process", jpeg(scene(64, 48)))  # no ack asked: an event
            event = await fast.next("error")
            assert event["code"] == "frame_rate_exceeded"
            assert event["limit"] == "max_fps_per_session"
            assert event["event"] == "process"
            assert "size" in await other.frame()
            await asyncio.sleep(event["retry_after_s"])
            assert (await fast.frame())["frame"] == 2  # refused frames are not in the window
        dropped = 'framebroker_frames_dropped_total{reason="rate_limited",transport="socketio"}'
        assert counted(services, dropped) == 1


async def test_webrtc_offers_count_with_the_clients_other_sessions(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, max_sessions_per_client=1)
    async with (
        served(settings) as (services, host),
        httpx.AsyncClient(base_url=f"http://{host}") as http,
        websockets.connect(f"ws://{host}/webrtc/ws") as ws,
    ):
        rest = (await http.post("/v1/sessions")).json()["id"]
        peer = client_peer()
        try:
            offer = await peer.offer()
            await ws.send(json.dumps({"type": "offer", "data": offer}))
            error, _ = await recv_type(ws, "error")
            assert error["data"]["code"] == 429
            assert error["data"]["error"] == "client_session_limit"
            assert error["data"]["limit"] == "max_sessions_per_client"
            r = await http.post("/offer", json=offer)  # the HTTP signaling too
            assert r.status_code == 429
            assert r.json()["code"] == "client_session_limit"
            await http.delete(f"/v1/sessions/{rest}")
            await ws.send(json.dumps({"type": "offer", "data": offer}))
            answer, _ = await recv_type(ws, "answer")
            assert services.broker.manager.clients.held("127.0.0.1") == 1
            await ws.send(json.dumps({"type": "end"}))
            await recv_type(ws, "result")
            assert answer["session_id"]
            assert services.broker.manager.clients.held("127.0.0.1") == 0
        finally:
            await peer.close()
        errors = 'framebroker_errors_total{code="client_session_limit",transport="webrtc_ws"}'
        assert counted(services, errors) == 1


async def test_a_socketio_id_refused_for_capacity_stays_good_for_a_retry(tmp_path: Path) -> None:
    """A connection refused because the server is full (503) used nothing up: the id it
    came with connects once there is room, as the client's retry expects."""
    async with (
        served(settings_with(tmp_path, max_sessions=1)) as (_, host),
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        url = f"http://{host}"
        sid = (await http.get("/get_session_id")).json()["session_id"]
        rest = (await http.post("/v1/sessions")).json()["id"]
        refused = Client()
        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(url, f"session_id={sid}")
            assert refused.refusal["data"]["code"] == "capacity_exceeded"
        finally:
            await refused.close()
        assert (await http.delete(f"/v1/sessions/{rest}")).status_code == 200
        async with connected(url, f"session_id={sid}") as retried:
            assert "size" in await retried.frame()
            # Its own id, not one made on connect for an id refused as used up.
            listed = (await http.get("/v1/sessions")).json()["sessions"]
            assert [s["id"] for s in listed] == [sid]
