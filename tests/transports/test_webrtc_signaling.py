"""Seed 004's signaling and media on a real uvicorn listener, with a real aiortc client peer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import av
import httpx
import pytest
import uvicorn
import websockets

from framebroker.config import Settings, load_settings
from framebroker.core import Frame, ProcessContext, Processor
from framebroker.errors import SessionNotFound
from framebroker.server import Services, build_app, build_compat_app
from framebroker.sessions import Sessions

from ..in_process import free_port, serving
from .webrtc_client import (
    COLOUR,
    ColourTrack,
    client_peer,
    negotiate,
    peer_and_socket,
    recv_json,
    recv_type,
    wait_for,
)


class MeanColour(Processor):
    """Reads the pixels: the camera's colour comes back."""

    name: ClassVar[str] = "colour"
    needs_image = True

    def __init__(self) -> None:
        self.frames = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.frames += 1
        mean = frame.image.reshape(-1, 3).mean(axis=0)
        return {"bgr": [round(float(v)) for v in mean], "who": "colour"}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"colour_frames": self.frames, "who": "colour"}


class Later(Processor):
    """Listed after ``colour``: wins on the shared key."""

    name: ClassVar[str] = "later"

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"who": "later", "size": [frame.meta["width"], frame.meta["height"]]}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"who": "later", "later_end": True}


class Boom(Processor):
    name: ClassVar[str] = "boom"

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        raise RuntimeError("model crashed")

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"boom_end": True}


class Hang(Processor):
    """Takes ``seconds`` on every frame (or until released): over any sane frame timeout."""

    name: ClassVar[str] = "hang"
    seconds: ClassVar[float] = 1.0
    release: ClassVar[threading.Event] = threading.Event()

    def __init__(self) -> None:
        self.calls = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.calls += 1
        Hang.release.wait(Hang.seconds)
        return {"hang": self.calls}


MODELS = {cls.name: cls for cls in (MeanColour, Later, Boom, Hang)}


@contextlib.asynccontextmanager
async def listening(app: Any) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    async with serving(config):
        yield f"127.0.0.1:{port}"


def settings_with(tmp_path: Path, limits: dict[str, Any] | None = None, **webrtc: Any) -> Settings:
    options: dict[str, Any] = {
        "models": ["colour", "later"],
        "connect_timeout_s": 5.0,
        "media_timeout_s": 3.0,
        **webrtc,
    }
    return load_settings(data_dir=tmp_path, webrtc=options, limits=limits)


@pytest.fixture(autouse=True)
def _release_hang() -> Iterator[None]:
    Hang.release.clear()
    yield
    Hang.release.set()


@contextlib.asynccontextmanager
async def server(settings: Settings, *compat: str) -> AsyncIterator[tuple[Services, list[str]]]:
    services = Services.build(settings)
    for name, cls in MODELS.items():
        services.broker.registry.register(name, cls)
    await services.start()
    transport = services.webrtc
    try:
        async with contextlib.AsyncExitStack() as stack:
            hosts = [await stack.enter_async_context(listening(build_app(settings, services)))]
            for name in compat:
                app = build_compat_app(name, services)
                hosts.append(await stack.enter_async_context(listening(app)))
            yield services, hosts
            Hang.release.set()
            await transport.stop()
    finally:
        Hang.release.set()
        await services.stop()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Services, str]]:
    async with server(settings_with(tmp_path)) as (services, hosts):
        yield services, f"ws://{hosts[0]}/webrtc/ws"


async def stored(sessions: Sessions, session_id: str) -> dict[str, Any]:
    """The ended session's record, read back through the interface (from the store, on the
    broker's side of it)."""
    for _ in range(100):
        with contextlib.suppress(SessionNotFound):
            info = await sessions.info(session_id)
            if info.state == "ended":
                return {"state": info.state, "summary": info.summary}
        await asyncio.sleep(0.05)
    raise AssertionError(f"session {session_id} was not stored as ended")


@pytest.mark.broker_only  # per-model counters come from the broker's lanes
async def test_predictions_over_the_socket_and_the_data_channel_then_the_final_result(
    live: tuple[Services, str],
) -> None:
    services, url = live
    async with peer_and_socket(url) as (peer, ws):
        answer = await negotiate(peer, ws)
        assert answer["data"]["type"] == "answer"
        sid = answer["session_id"]
        predictions = []
        while len(predictions) < 20:
            msg, _ = await recv_type(ws, "prediction")
            predictions.append(msg)
        await wait_for(lambda: len(peer.channel_messages) >= 5)
        await peer.close()  # the seed's paradigm: disconnecting ends the session
        result, _ = await recv_type(ws, "result")

    last = predictions[-1]
    assert set(last) >= {"type", "data", "model", "frame", "pts", "latency_ms"}
    assert last["data"]["who"] == "later"  # MODELS order: the later model wins the key
    assert last["data"]["size"] == [160, 120]
    bgr = next(p["data"]["bgr"] for p in reversed(predictions) if "bgr" in p["data"])
    assert all(abs(a - b) <= 6 for a, b in zip(bgr, COLOUR, strict=True))
    assert {p["model"] for p in predictions} == {"colour", "later"}
    assert all(p["type"] == "prediction" for p in peer.channel_messages)
    assert peer.channel_messages[0]["data"]

    assert result["session_id"] == sid
    assert result["reason"] == "disconnected"
    assert result["data"]["who"] == "later"
    assert result["data"]["later_end"] is True
    assert result["data"]["colour_frames"] >= 10
    assert result["stats"]["models"]["colour"]["frames_run"] >= 10
    record = await stored(services.broker, sid)
    assert record["summary"]["results"] == result["data"]
    assert record["summary"]["transport"] == "webrtc"
    assert sid not in services.broker.manager


async def test_ice_servers_and_bad_messages_get_errors_and_the_socket_stays_open(
    tmp_path: Path,
) -> None:
    ice = [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": "turn:t.example.org", "username": "u", "credential": "p"},
    ]
    async with server(settings_with(tmp_path, ice_servers=ice, max_message_bytes=2048)) as (
        services,
        hosts,
    ):
        async with websockets.connect(f"ws://{hosts[0]}/webrtc/ws") as ws:
            await ws.send("{not json")
            err = await recv_json(ws)
            assert err["type"] == "error"
            assert err["data"]["code"] == 400
            assert err["data"]["error"] == "invalid_json"
            assert err["data"]["message"]

            await ws.send(json.dumps({"type": "hello"}))
            err = await recv_json(ws)
            assert err["data"]["code"] == 400
            assert "unknown message type 'hello'" in err["data"]["message"]

            for bad in ("[1, 2]", '{"type": 3}', '"offer"'):
                await ws.send(bad)
                assert (await recv_json(ws))["data"]["code"] == 400

            await ws.send(b"\x00\x01")
            assert "binary" in (await recv_json(ws))["data"]["message"]

            await ws.send(json.dumps({"type": "ice-servers", "pad": "x" * 4096}))
            assert (await recv_json(ws))["data"]["code"] == 413

            for early in ("candidate", "end"):
                await ws.send(json.dumps({"type": early, "data": {}}))
                assert (await recv_json(ws))["data"]["code"] == 400

            await ws.send(json.dumps({"type": "ice-servers"}))
            reply = await recv_json(ws)
            assert reply == {"type": "ice-servers", "data": ice}
        assert len(services.broker.manager) == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "expected an offer object"),
        ({"type": "answer", "sdp": "v=0"}, 'expected type "offer"'),
        ({"type": "offer", "sdp": ""}, "non-empty SDP"),
        ({"type": "offer", "sdp": "this is not SDP\r\nat all"}, "no video"),
    ],
)
async def test_bad_offers_are_refused_with_400(
    live: tuple[Services, str], data: Any, message: str
) -> None:
    services, url = live
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "offer", "data": data}))
        err = await recv_json(ws)
    assert err["type"] == "error"
    assert err["data"]["code"] == 400
    assert message in err["data"]["message"]
    assert len(services.broker.manager) == 0


async def test_an_sdp_aiortc_chokes_on_is_a_400_not_a_crash(live: tuple[Services, str]) -> None:
    services, url = live
    async with peer_and_socket(url) as (peer, ws):
        offer = await peer.offer()
        broken = [
            # no DTLS fingerprint: aiortc refuses the transport
            "\r\n".join(ln for ln in offer["sdp"].split("\r\n") if "fingerprint" not in ln),
            # no ICE credentials
            "\r\n".join(ln for ln in offer["sdp"].split("\r\n") if "ice-ufrag" not in ln),
            # a media section with an unknown payload type
            offer["sdp"].replace("a=rtpmap:", "a=rtpmap:x", 1),
        ]
        for sdp in broken:
            await ws.send(json.dumps({"type": "offer", "data": {"type": "offer", "sdp": sdp}}))
            err = await recv_json(ws)
            assert err["type"] == "error", err
            assert err["data"]["code"] == 400
        # The same socket still negotiates a good offer afterwards.
        await ws.send(json.dumps({"type": "offer", "data": offer}))
        answer, _ = await recv_type(ws, "answer")
        assert answer["session_id"] in services.broker.manager
    assert len(services.broker.manager) <= 1


async def test_an_offer_without_video_is_refused(live: tuple[Services, str]) -> None:
    services, url = live
    async with peer_and_socket(url, video=False) as (peer, ws):
        await ws.send(json.dumps({"type": "offer", "data": await peer.offer()}))
        err = await recv_json(ws)
    assert err["data"]["code"] == 400
    assert "no video" in err["data"]["message"]
    assert len(services.broker.manager) == 0


async def test_a_second_offer_while_connected_is_a_409_and_end_gives_the_result(
    live: tuple[Services, str],
) -> None:
    _, url = live
    async with peer_and_socket(url) as (peer, ws):
        answer = await negotiate(peer, ws)
        await recv_type(ws, "prediction")
        other = client_peer()
        try:
            await ws.send(json.dumps({"type": "offer", "data": await other.offer()}))
            err, _ = await recv_type(ws, "error")
        finally:
            await other.close()
        assert err["data"]["code"] == 409
        await ws.send(json.dumps({"type": "end"}))
        result, _ = await recv_type(ws, "result")
        assert result["reason"] == "client_ended"
        assert result["session_id"] == answer["session_id"]
        # After the result, the socket can start another connection.
        again = client_peer()
        try:
            second = await negotiate(again, ws)
            assert second["session_id"] != answer["session_id"]
            await recv_type(ws, "prediction")
        finally:
            await again.close()
        result, _ = await recv_type(ws, "result")
        assert result["session_id"] == second["session_id"]


async def test_ice_that_never_connects_times_out(tmp_path: Path) -> None:
    async with server(settings_with(tmp_path, connect_timeout_s=1.0)) as (services, hosts):
        async with peer_and_socket(f"ws://{hosts[0]}/webrtc/ws") as (peer, ws):
            offer = await peer.offer()
            await peer.close()  # its ICE agent is gone: the server's checks go nowhere
            await ws.send(json.dumps({"type": "offer", "data": offer}))
            answer, _ = await recv_type(ws, "answer")
            err, _ = await recv_type(ws, "error", timeout=10)
            result, _ = await recv_type(ws, "result")
        assert err["data"]["code"] == 408
        assert err["data"]["error"] == "connect_timeout"
        assert result["reason"] == "connect_timeout"
        record = await stored(services.broker, answer["session_id"])
        assert record["summary"]["reason"] == "connect_timeout"


async def test_a_peer_that_stops_sending_is_ended_after_the_media_timeout(
    tmp_path: Path,
) -> None:
    async with server(settings_with(tmp_path, media_timeout_s=1.0)) as (services, hosts):
        url = f"ws://{hosts[0]}/webrtc/ws"
        async with peer_and_socket(url, track=ColourTrack(stall_after=10)) as (peer, ws):
            answer = await negotiate(peer, ws)
            err, _ = await recv_type(ws, "error", timeout=15)
            result, _ = await recv_type(ws, "result")
        assert err["data"]["error"] == "media_timeout"
        assert result["reason"] == "media_timeout"
        assert result["data"]["colour_frames"] >= 1
        await stored(services.broker, answer["session_id"])


async def test_closing_the_socket_leaves_the_session_to_the_peer_connection(
    live: tuple[Services, str],
) -> None:
    services, url = live
    peer = client_peer()
    try:
        async with websockets.connect(url) as ws:
            answer = await negotiate(peer, ws)
        # The socket is gone; predictions keep coming on the data channel.
        await wait_for(lambda: len(peer.channel_messages) >= 3)
        info = await services.broker.info(answer["session_id"])
        assert info.state == "active"
    finally:
        await peer.close()
    record = await stored(services.broker, answer["session_id"])
    assert record["summary"]["reason"] == "disconnected"
    assert record["summary"]["results"]["later_end"] is True


async def mock_client_session(
    signaling: str, base: str, *, predictions: int = 3
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The original API's mock client (its test.py): offer, take the answer and close the
    signaling socket at once, stream, send ``end session`` on the data channel when the
    video is over, and wait for the message marked ``"final": true``. Returns that message
    and every one before it."""
    peer = client_peer()
    try:
        if signaling == "ws":
            async with websockets.connect(base) as ws:
                await ws.send(json.dumps({"type": "offer", "data": await peer.offer()}))
                answer, _ = await recv_type(ws, "answer")
            await peer.accept(answer["data"])
        else:
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.post(base, json=await peer.offer())
            assert r.status_code == 200, r.text
            await peer.accept(r.json())
        await wait_for(lambda: len(peer.channel_messages) >= predictions)
        assert peer.channel is not None
        peer.channel.send("end session")
        await wait_for(lambda: any(m.get("final") for m in peer.channel_messages))
        messages = list(peer.channel_messages)
    finally:
        await peer.close()
    last = next(i for i, m in enumerate(messages) if m.get("final"))
    return messages[last], messages[:last]


@pytest.mark.parametrize("signaling", ["ws", "http"])
async def test_the_original_mock_client_gets_its_final_result_on_every_port(
    tmp_path: Path, signaling: str
) -> None:
    async with server(settings_with(tmp_path), "webrtc_http", "webrtc_ws") as (services, hosts):
        main, http_compat, ws_compat = hosts
        bases = (
            [f"ws://{main}/webrtc/ws", f"ws://{ws_compat}/"]
            if signaling == "ws"
            else [f"http://{main}/offer", f"http://{http_compat}/offer"]
        )
        for base in bases:
            started = time.monotonic()
            final, before = await mock_client_session(signaling, base)
            # At once: not after media_timeout_s (3 s here) of no video.
            assert time.monotonic() - started < 3.0
            assert final["type"] == "result"
            assert final["reason"] == "client_ended"
            assert final["data"]["later_end"] is True  # every model's end ran
            assert before
            assert all(m["type"] == "prediction" and m["final"] is False for m in before)
            record = await stored(services.broker, final["session_id"])
            assert record["summary"]["reason"] == "client_ended"


@pytest.mark.broker_only  # timeouts and lanes are the broker's
async def test_a_model_that_raises_or_hangs_is_reported_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    settings = settings_with(
        tmp_path,
        models=["colour", "boom", "hang", "later"],
        limits={"processor_timeout_s": 0.3},
        max_model_failures=2,
    )
    async with server(settings) as (_, hosts):
        url = f"ws://{hosts[0]}/webrtc/ws"
        async with (
            peer_and_socket(url) as (peer, ws),
            peer_and_socket(url) as (other, other_ws),
        ):
            await negotiate(peer, ws)
            await negotiate(other, other_ws)
            seen: list[dict[str, Any]] = []
            while not any("disabled" in m and "hang" in m["disabled"] for m in seen):
                msg, _ = await recv_type(ws, "prediction")
                seen.append(msg)
            errors = [m["error"] for m in seen if "error" in m]
            assert {"processor": "boom", "error": "RuntimeError: model crashed"} in errors
            assert any(e.get("disabled") for e in errors if e["processor"] == "boom")
            assert any("timed out" in e["error"] for e in errors if e["processor"] == "hang")
            # The healthy models kept answering all along, in both sessions.
            assert sum(m["model"] == "colour" for m in seen) >= 5
            before = len(seen)
            for _ in range(10):
                msg, _ = await recv_type(ws, "prediction")
                seen.append(msg)
            assert {m["model"] for m in seen[before:]} == {"colour", "later"}
            assert sorted(seen[-1]["disabled"]) == ["boom", "hang"]
            msg, _ = await recv_type(other_ws, "prediction")
            assert msg["model"] in ("colour", "later", "boom", "hang")
            Hang.release.set()
            await ws.send(json.dumps({"type": "end"}))
            result, _ = await recv_type(ws, "result")
        assert result["data"]["boom_end"] is True
        assert result["data"]["who"] == "later"
        models = result["stats"]["models"]
        assert models["boom"]["disabled"]
        assert models["hang"]["timeouts"] >= 1
        assert models["colour"]["disabled"] is None


async def test_http_offer_answers_and_predictions_use_the_data_channel(tmp_path: Path) -> None:
    async with server(settings_with(tmp_path), "webrtc_http", "webrtc_ws") as (services, hosts):
        main, http_compat, ws_compat = hosts
        for base in (
            f"http://{main}/offer",
            f"http://{main}/webrtc/offer",
            f"http://{http_compat}/offer",
        ):
            peer = client_peer()
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    r = await http.post(base, json=await peer.offer())
                assert r.status_code == 200, r.text
                answer = r.json()
                assert answer["type"] == "answer"
                await peer.accept(answer)
                await wait_for(lambda p=peer: len(p.channel_messages) >= 3)  # type: ignore[misc]
            finally:
                await peer.close()
            record = await stored(services.broker, answer["session_id"])
            assert record["summary"]["reason"] == "disconnected"

        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(f"http://{main}/offer", content=b"{nope")
            assert r.status_code == 400
            assert r.json()["code"] == "invalid_json"
            r = await http.post(f"http://{http_compat}/offer", json={"type": "offer", "sdp": "x"})
            assert r.status_code == 400
            r = await http.post(f"http://{main}/offer", content=b"x" * 300_000)
            assert r.status_code == 413

        # The compatibility socket at / speaks the same protocol.
        async with peer_and_socket(f"ws://{ws_compat}/") as (peer, ws):
            await negotiate(peer, ws)
            await recv_type(ws, "prediction")


async def test_websocket_only_has_no_http_offer(tmp_path: Path) -> None:
    async with server(settings_with(tmp_path, websocket_only=True)) as (_, hosts):
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(f"http://{hosts[0]}/offer", json={"type": "offer", "sdp": "x"})
        assert r.status_code in (404, 405)


async def test_record_to_writes_each_stream_to_an_mp4(tmp_path: Path) -> None:
    rec = tmp_path / "recordings"
    async with (
        server(settings_with(tmp_path, record_to=str(rec))) as (_, hosts),
        peer_and_socket(f"ws://{hosts[0]}/webrtc/ws") as (peer, ws),
    ):
        answer = await negotiate(peer, ws)
        for _ in range(20):
            await recv_type(ws, "prediction")
        await ws.send(json.dumps({"type": "end"}))
        result, _ = await recv_type(ws, "result")
    path = Path(result["recording"])
    assert path == rec / f"{answer['session_id']}.mp4"
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) >= 10
    assert (frames[0].width, frames[0].height) == (160, 120)


async def test_the_connection_limit_is_a_503(tmp_path: Path) -> None:
    async with server(settings_with(tmp_path, max_connections=1)) as (_, hosts):
        url = f"ws://{hosts[0]}/webrtc/ws"
        async with peer_and_socket(url) as (peer, ws), peer_and_socket(url) as (other, ws2):
            await negotiate(peer, ws)
            await ws2.send(json.dumps({"type": "offer", "data": await other.offer()}))
            err = await recv_json(ws2)
    assert err["data"]["code"] == 503


async def test_stopping_the_server_ends_every_connection_with_its_result(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    async with server(settings) as (services, hosts):
        peer = client_peer()
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.post(f"http://{hosts[0]}/offer", json=await peer.offer())
            answer = r.json()
            await peer.accept(answer)
            await wait_for(lambda: len(peer.channel_messages) >= 3)
            assert peer.channel is not None
            peer.channel.send(json.dumps({"type": "what"}))  # the channel takes only "end"
            await wait_for(lambda: any(m["type"] == "error" for m in peer.channel_messages))
            await services.webrtc.stop()
            await wait_for(lambda: peer.channel_messages[-1]["type"] == "result")
        finally:
            await peer.close()
        result = peer.channel_messages[-1]
        assert result["reason"] == "server_stopped"
        assert result["data"]["later_end"] is True
        record = await stored(services.broker, answer["session_id"])
        assert record["summary"]["reason"] == "server_stopped"
        error = next(m for m in peer.channel_messages if m["type"] == "error")
        assert error["data"]["code"] == 400


async def test_end_on_the_data_channel_sends_the_result_there(live: tuple[Services, str]) -> None:
    services, url = live
    host = url.removeprefix("ws://").split("/")[0]
    peer = client_peer()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(f"http://{host}/webrtc/offer", json=await peer.offer())
        await peer.accept(r.json())
        await wait_for(lambda: len(peer.channel_messages) >= 3)
        assert peer.channel is not None
        peer.channel.send(json.dumps({"type": "end"}))
        await wait_for(lambda: peer.channel_messages[-1]["type"] == "result")
    finally:
        await peer.close()
    assert peer.channel_messages[-1]["reason"] == "client_ended"
    assert len(services.broker.manager) == 0


async def test_trickled_candidates(live: tuple[Services, str]) -> None:
    _, url = live
    async with peer_and_socket(url) as (peer, ws):
        await negotiate(peer, ws)
        candidate = {
            "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }
        await ws.send(json.dumps({"type": "candidate", "data": candidate}))
        await ws.send(json.dumps({"type": "candidate", "data": {"candidate": ""}}))
        await ws.send(json.dumps({"type": "candidate", "data": {"candidate": "garbage"}}))
        err, before = await recv_type(ws, "error")
        assert err["data"]["code"] == 400
        assert err["data"]["field"] == "candidate"
        assert all(m["type"] == "prediction" for m in before)


async def test_models_that_cannot_load_are_logged_and_offers_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_with(tmp_path, models=["colour", "no_such_module_xyz:Model"])
    async with server(settings) as (services, hosts):
        transport = services.webrtc
        await transport.start()
        assert transport._warm is not None
        await transport._warm
        assert "webrtc models cannot be loaded" in caplog.text
        async with peer_and_socket(f"ws://{hosts[0]}/webrtc/ws") as (peer, ws):
            await ws.send(json.dumps({"type": "offer", "data": await peer.offer()}))
            err = await recv_json(ws)
        assert err["data"]["code"] == 400
        assert err["data"]["error"] == "processor_load_error"
        assert "no_such_module_xyz" in err["data"]["message"]
        assert len(services.broker.manager) == 0


async def test_an_offer_may_choose_some_of_the_configured_models_and_nothing_else(
    live: tuple[Services, str],
) -> None:
    services, url = live
    async with peer_and_socket(url) as (peer, ws):
        for bad in (["colour", "shutil:rmtree"], [], "colour", ["colour", "colour"]):
            offer = {"type": "offer", "data": await peer.offer(), "models": bad}
            await ws.send(json.dumps(offer))
            err, _ = await recv_type(ws, "error")
            assert err["data"]["code"] == 400
            assert err["data"]["field"] == "models"
        assert len(services.broker.manager) == 0
        await ws.send(json.dumps({"type": "offer", "data": await peer.offer(),
                                  "models": ["later"]}))  # fmt: skip
        answer, _ = await recv_type(ws, "answer")
        await peer.accept(answer["data"])
        prediction, _ = await recv_type(ws, "prediction")
        assert prediction["model"] == "later"
        session = services.broker.manager.get(answer["session_id"])
        assert session.pipeline.names == ["later"]
