"""No client string ever becomes a path (issue 8): face images and recordings are reachable
only through the API, by the ids the server made.

Every route that serves or writes a file, or takes a name that could become one, gets
``../``, ``..%2f``, absolute paths, NUL bytes, 10,000-character names, unicode and
backslashes over a real socket, so no client library normalises them first. Each must answer
a clean 4xx (or the transport's error message), never a 500, and a sentinel tree beside the
data directory must come through unread and unwritten.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import httpx
import pytest
import socketio
import websockets

from framebroker.config import Settings, load_settings
from framebroker.core.manager import SESSION_ID_RE
from framebroker.media.encode import encode_mp4
from framebroker.server import build_app
from framebroker.server.serve import uvicorn_config
from framebroker.storage import SQLPeopleRecords
from framebroker.transports.console import UI_DIR
from framebroker.transports.people_ws import ERR_INTERNAL

from ..in_process import free_port, serving
from .images import scene
from .socketio_harness import KEY, Client
from .webrtc_client import client_peer, recv_type

SENTINEL = b"SENTINEL-outside-the-data-dir"
FACE = b"\xff\xd8 the one saved face \xff\xd9"
MODEL = "tests.runtime.processors:FrameSize"
# A source file next to the console's folder: what a traversal out of /ui would reach.
PACKAGE_FILE = UI_DIR.parent / "config.py"
JSON = {b"Content-Type": b"application/json"}


@dataclass
class Site:
    """The real server on a loopback port, its data directory and the sentinel tree."""

    host: str
    port: int
    root: Path
    data: Path
    outside: Path
    settings: Settings
    face_id: int
    before: dict[str, bytes] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def attacks(self, served_from: Path) -> dict[str, str]:
        """Names to try where a route would look files up in ``served_from``, as they go on
        the wire (percent-encoded where HTTP needs it)."""
        secret = self.outside / "secret.jpg"
        relative = os.path.relpath(secret, served_from)
        return {
            "dot-dot": relative,
            "encoded dot-dot": quote(relative, safe=""),
            "double-encoded dot-dot": quote(quote(relative, safe=""), safe=""),
            "absolute": str(secret),
            "encoded absolute": quote(str(secret), safe=""),
            "NUL": "1%00",
            "NUL before the suffix": "secret.jpg%00",
            "long": "a" * 10_000,
            "long number": "9" * 10_000,
            "number past int64": "9" * 25,
            "unicode": quote("顔-ü-\u202e1", safe=""),
            "backslashes": relative.replace("/", "\\"),
            "encoded backslashes": quote(relative.replace("/", "\\"), safe=""),
        }

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the test's folder but outside the data directory."""
        return {
            str(path.relative_to(self.root)): path.read_bytes()
            for path in sorted(self.root.rglob("*"))
            if path.is_file() and self.data not in path.parents
        }


def names(site: Site) -> list[str]:
    """The same attacks as plain strings, for fields that are not URLs (JSON, headers)."""
    secret = site.outside / "secret.jpg"
    relative = os.path.relpath(secret, site.settings.faces_dir)
    return [
        relative,
        "..%2f..%2foutside%2fsecret.jpg",
        str(secret),
        "secret.jpg\x00.jpg",
        "x" * 10_000,
        "顔-ü-\u202e1",
        relative.replace("/", "\\"),
        "..",
        ".",
    ]


@contextlib.asynccontextmanager
async def serve(tmp_path: Path) -> AsyncIterator[Site]:
    data, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    for name in ("secret.jpg", "face_1.jpg", "evil.mp4"):
        (outside / name).write_bytes(SENTINEL)
    settings = load_settings(
        data_dir=data,
        max_workers=2,
        analysis={"secret_key": KEY, "pipelines": {"sizes": [MODEL]}},
        webrtc={"models": [MODEL], "record_to": str(data / "recordings"), "media_timeout_s": 5},
    )
    app = build_app(settings)
    port = free_port()
    # The server's own listener settings: its protocol with the connection limits included.
    settings = settings.model_copy(update={"log_level": "warning"})
    config = uvicorn_config(
        app, settings, port, lifespan="on", listener="http", services=app.state.services
    )
    async with serving(config):
        records = app.state.services.records
        assert isinstance(records, SQLPeopleRecords)
        face_id, filename = records.add_face(
            source="door", track_id=7, day="2026-01-01", quality=0.9, score=0.9
        )
        settings.faces_dir.mkdir(parents=True, exist_ok=True)
        (settings.faces_dir / filename).write_bytes(FACE)
        site = Site("127.0.0.1", port, tmp_path, data, outside, settings, face_id)
        site.before = site.snapshot()
        yield site


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with serve(tmp_path) as running:
        yield running
        # Nothing outside the data directory was written, created or removed.
        assert running.snapshot() == running.before
        uploads = running.data / "uploads"
        assert not uploads.exists() or not any(uploads.iterdir()), "an upload was left behind"


async def raw_http(
    site: Site,
    method: str,
    target: str,
    headers: dict[bytes, bytes] | None = None,
    body: bytes = b"",
) -> tuple[int, bytes]:
    """One request written byte for byte: the target goes out exactly as given."""
    lines = [f"{method} {target} HTTP/1.1".encode(), f"Host: {site.host}:{site.port}".encode()]
    lines += [name + b": " + value for name, value in (headers or {}).items()]
    lines += [b"Connection: close", b"Content-Length: %d" % len(body)]
    reader, writer = await asyncio.open_connection(site.host, site.port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        raw = await asyncio.wait_for(reader.read(-1), 20)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status = int(raw.split(b" ", 2)[1])
    return status, raw


def assert_refused(status: int, raw: bytes, what: str) -> None:
    """A clean 4xx with a JSON error, and no byte of anything outside the data directory."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert 400 <= status < 500, f"{what}: {status}\n{raw[:400]!r}"
    assert SENTINEL not in raw, what
    assert b"Settings(" not in raw, what  # no source file read through /ui
    if b"application/json" in head.lower():
        assert b'"error"' in body, f"{what}: {body[:300]!r}"


def multipart(filename: bytes, content: bytes, name: bytes = b"file") -> tuple[bytes, bytes]:
    boundary = b"safetyboundary42"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="' + name + b'"; filename="' + filename + b'"\r\n'
        b"Content-Type: video/mp4\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n"
    )
    return b"multipart/form-data; boundary=" + boundary, body


# -- HTTP: face images, the console's files, sessions by id, sources by name -----------------


async def test_http_routes_refuse_paths_in_ids_and_names(site: Site) -> None:
    # The routes work: the saved face and the console come back.
    status, raw = await raw_http(site, "GET", f"/v1/faces/{site.face_id}.jpg")
    assert status == 200
    assert raw.endswith(FACE)
    status, raw = await raw_http(site, "GET", "/ui/common.js")
    assert status == 200
    assert b"export" in raw

    faces = site.attacks(site.settings.faces_dir)
    ui = site.attacks(UI_DIR)
    ui |= {f"package {k}": v for k, v in site.attacks(PACKAGE_FILE.parent).items()}
    ui["source file"] = os.path.relpath(PACKAGE_FILE, UI_DIR)
    ui["encoded source file"] = quote(ui["source file"], safe="")
    # Twenty-five nines is a fine source name (and finds no counts): not an attack there.
    sources = {k: v for k, v in faces.items() if k != "number past int64"}
    targets: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/v1/faces/{}.jpg", faces),
        ("GET", "/v1/faces/{}", faces),
        ("GET", "/ui/{}", ui),
        ("GET", "/v1/sessions/{}", faces),
        ("DELETE", "/v1/sessions/{}", faces),
        ("POST", "/v1/sessions/{}/frames", faces),
        ("GET", "/v1/sources/{}/counts/hourly", sources),
        ("GET", "/v1/sources/{}/events", sources),
        ("GET", "/v1/faces?before={}", faces),
        ("GET", "/v1/sources/door/events?day={}", faces),
    ]
    for method, template, attacks in targets:
        for kind, value in attacks.items():
            target = template.format(value)
            body = b'{"boxes": []}' if method == "POST" else b""
            status, raw = await raw_http(site, method, target, JSON, body)
            assert_refused(status, raw, f"{method} {template} with {kind}")


async def test_an_id_past_any_sql_integer_is_no_face_not_a_crash(site: Site) -> None:
    for face_id in ("9" * 19, "9" * 25, "9" * 5000, str(2**63), "0", "-1", "abc", "1e3"):
        async with httpx.AsyncClient(base_url=site.http) as http:
            r = await http.get(f"/v1/faces/{face_id}.jpg")
            assert r.status_code == 404, (face_id[:30], r.text[:200])
            assert r.json()["code"] == "not_found"
            assert len(r.text) < 400  # a huge id is not echoed whole
            r = await http.get("/v1/faces", params={"before": face_id})
            assert r.status_code in (200, 400), (face_id[:30], r.text[:200])


async def test_session_id_headers_refuse_paths(site: Site) -> None:
    ok_status, raw = await raw_http(
        site, "POST", "/", {b"Content-Type": b"application/json", b"Session-Id": b"cam-1"},
        b'{"boxes": []}',
    )  # fmt: skip
    assert ok_status == 200, raw[-300:]
    jpeg = cv2.imencode(".jpg", scene(64, 48))[1].tobytes()
    frame_type, frame_body = multipart(b"frame.jpg", jpeg, b"image")
    for value in [*names(site), "a%00b", "..\\..", "/"]:
        header = value.encode()
        for what, content_type, body in (
            ("seed-000 boxes", b"application/json", b'{"boxes": []}'),
            ("seed-003 frame", frame_type, frame_body),
        ):
            headers = {b"Content-Type": content_type, b"Session-Id": header}
            status, raw = await raw_http(site, "POST", "/", headers, body)
            assert_refused(status, raw, f"{what} with Session-Id {value[:40]!r}")
            assert len(raw) < 2000, "the id is not echoed whole"
        status, raw = await raw_http(site, "DELETE", "/", {b"Session-Id": header})
        assert_refused(status, raw, f"DELETE / with Session-Id {value[:40]!r}")
    # A NUL or a line break in a header never reaches the app: the HTTP layer refuses it.
    for header in (b"a\x00b", b"a\rb"):
        status, raw = await raw_http(site, "POST", "/", {b"Session-Id": header}, b"{}")
        assert_refused(status, raw, f"Session-Id {header!r}")
    async with httpx.AsyncClient(base_url=site.http) as http:
        listed = (await http.get("/v1/sessions")).json()["sessions"]
    assert {s["id"] for s in listed} == {"cam-1"}


# -- WebSockets: seed 001's get_face, seed 004's signaling -----------------------------------


async def test_live_socket_get_face_takes_integer_ids_only(site: Site) -> None:
    bad: list[Any] = [*names(site), "1", 1.0, -1, 10**30, 2**63, True, None, [1], {"id": 1}]
    # A source name is only ever compared with the names of the sources there are.
    async with websockets.connect(f"{site.ws}/ws/live?source=..%2F..%2Foutside") as ws:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["error"].startswith("Unknown source '../../outside'; known sources:")
    async with websockets.connect(f"{site.ws}/ws/live") as ws:
        for face_id in bad:
            await ws.send(json.dumps({"type": "get_face", "face_id": face_id}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert "error" in reply, (repr(face_id)[:40], reply)
            assert reply["error"] != ERR_INTERNAL, repr(face_id)[:40]  # a refusal, not a crash
            assert "image_data" not in reply
        for limit in ("../", -1, 10**30):
            await ws.send(json.dumps({"type": "get_all_faces", "limit": limit}))
            assert "error" in json.loads(await asyncio.wait_for(ws.recv(), 10))
        # Still open and answering: the real face, by its id.
        await ws.send(json.dumps({"type": "get_face", "face_id": site.face_id}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert base64.b64decode(reply["image_data"]) == FACE
        assert reply["filename"] == f"face_{site.face_id}.jpg"


async def test_webrtc_model_names_and_the_recording_name_come_from_the_server(
    site: Site,
) -> None:
    peer = client_peer()
    try:
        offer = await peer.offer()
        async with websockets.connect(f"{site.ws}/webrtc/ws") as ws:
            for name in [*names(site), MODEL.replace(":", "/"), "os:system"]:
                await ws.send(json.dumps({"type": "offer", "data": offer, "models": [name]}))
                error, _ = await recv_type(ws, "error")
                assert error["data"]["code"] == 400, error
                assert error["data"]["field"] == "models"
            async with httpx.AsyncClient(base_url=site.http) as http:
                r = await http.post("/webrtc/offer", json={**offer, "models": ["../x"]})
                assert r.status_code == 400
                assert r.json()["field"] == "models"
            # A real connection whose SDP names its session after a path: the recording
            # is named by the server's session id, in the configured folder.
            sdp = re.sub(r"(?m)^s=.*$", "s=../../outside/evil.mp4", offer["sdp"])
            await ws.send(json.dumps({"type": "offer", "data": {"sdp": sdp, "type": "offer"}}))
            answer, _ = await recv_type(ws, "answer")
            await peer.accept(answer["data"])
            for _ in range(5):
                await recv_type(ws, "prediction")
            await ws.send(json.dumps({"type": "end"}))
            result, _ = await recv_type(ws, "result")
    finally:
        await peer.close()
    sid = answer["session_id"]
    assert SESSION_ID_RE.fullmatch(sid)
    assert sid.strip(".")
    folder = site.settings.webrtc.record_to
    assert folder is not None
    assert Path(result["recording"]) == folder / f"{sid}.mp4"
    assert [p.name for p in folder.iterdir()] == [f"{sid}.mp4"]


# -- seed 002: Socket.IO session ids and uploaded file names ---------------------------------


async def test_socketio_session_ids_refuse_paths(site: Site) -> None:
    for value in names(site):
        for how in ("query", "auth"):
            client = Client()
            kwargs: dict[str, Any] = {}
            query = ""
            if how == "query":
                query = f"session_id={quote(value, safe='')}"
            else:
                kwargs["auth"] = {"session_id": value}
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(site.http, query, **kwargs)
            await client.close()
            refusal = client.refusal
            if len(query) > 8000:
                # Refused by the handshake's 431 (a line longer than the WebSocket layer
                # reads; see tests/server/test_deadlines.py), which this client reports so.
                assert refusal == "Connection error", refusal
                continue
            assert isinstance(refusal, dict), (how, value[:40], refusal)
            assert refusal["data"]["code"] in ("session_not_found", "invalid_input"), refusal


async def test_batch_upload_file_names_are_labels_never_paths(site: Site) -> None:
    video = encode_mp4([scene(64, 48, seed=k) for k in range(3)])
    async with httpx.AsyncClient(base_url=site.http, timeout=30) as http:
        for value in [*names(site)[:4], "顔.mp4", "..\\..\\evil.mp4", "a\x00b.mp4"]:
            content_type, body = multipart(value.encode(), video)
            r = await http.post("/batch", content=body, headers={"Content-Type": content_type})
            if r.status_code == 200:
                assert r.json()["result"]["sizes"], r.text[:300]
            else:
                assert 400 <= r.status_code < 500, (value[:40], r.status_code, r.text[:300])
                assert "error" in r.json()
    # Uploads were spooled under the data directory and are gone; nothing elsewhere changed:
    # the fixture checks both.
