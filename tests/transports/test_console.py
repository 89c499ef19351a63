"""The web console's files and JSON endpoints, in process (the browser tests are in e2e)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from framebroker.config import Settings, load_settings
from framebroker.server import Services
from framebroker.storage import SQLPeopleRecords
from framebroker.transports import console
from framebroker.transports.http import install_error_handlers

PAGES = ("index.html", "live.html", "faces.html", "camera.html")
TODAY = datetime.now(UTC).strftime("%Y-%m-%d")


def records_of(services: Services) -> SQLPeopleRecords:
    assert services.records is not None
    return services.records


def add_faces(settings: Settings, records: SQLPeopleRecords, n: int) -> list[int]:
    """``n`` faces with their files; returns their ids, oldest first."""
    ids = []
    for k in range(n):
        face_id, name = records.add_face(
            source="door", track_id=100 + k, day=TODAY, quality=0.5, score=0.9
        )
        settings.faces_dir.mkdir(parents=True, exist_ok=True)
        (settings.faces_dir / name).write_bytes(b"\xff\xd8jpeg" + bytes([face_id]))
        ids.append(face_id)
    return ids


# -- files -----------------------------------------------------------------------------------


async def test_pages_are_served_at_ui_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/ui")
    assert r.status_code in (307, 308)
    assert r.headers["location"].endswith("/ui/")
    r = await client.get("/ui/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<title>Overview" in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    for page in PAGES:
        html = (await client.get(f"/ui/{page}")).text
        for asset in re.findall(r'(?:src|href)="([^"#]+)"', html):
            got = await client.get(f"/ui/{asset}")
            assert got.status_code == 200, (page, asset)
            if asset.endswith(".js"):
                assert "javascript" in got.headers["content-type"]
    assert (await client.get("/ui/nope.html")).status_code == 404
    assert (await client.get("/ui/../config.py")).status_code == 404


def test_ui_files_load_nothing_from_another_origin() -> None:
    names = sorted(p.name for p in console.UI_DIR.iterdir())
    assert {*PAGES, "style.css", "common.js", "icon.svg"} <= set(names)
    for path in console.UI_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        # The SVG namespace is a name, not a download.
        text = text.replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"https?://|//cdn|@import", text), path.name
        if path.suffix == ".html":
            assert "<script>" not in text, path.name
            assert " style=" not in text, path.name


# -- what the pages ask --------------------------------------------------------------------


async def test_console_info_names_sources_and_camera_models(services: Services) -> None:
    settings = load_settings(
        data_dir=services.settings.data_dir,
        sources=["door=rtsp://cam/1", "/videos/Back Yard.mp4"],
        webrtc={"models": ["framebroker.processors.heart_rate:HeartRate", {"name": "faces"}]},
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(console.router(services.ctx, settings, None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://framebroker"
    ) as c:
        info = (await c.get("/v1/console")).json()
    assert info["sources"] == ["door", "Back-Yard"]
    assert info["webrtc_models"] == [
        {"name": "framebroker.processors.heart_rate:HeartRate", "label": "HeartRate"},
        {"name": "faces", "label": "faces"},
    ]
    assert info["live_ws"] == "/ws/live"
    assert info["signaling_ws"] == "/webrtc/ws"
    assert info["api_keys"] is False
    assert info["timezone"] == "UTC"
    assert info["today"] == TODAY
    assert abs(info["server_time"] - time.time()) < 5


async def test_faces_newest_first_in_pages(
    client: httpx.AsyncClient, services: Services, settings: Settings
) -> None:
    assert (await client.get("/v1/faces")).json() == {"faces": [], "next_before": None}
    ids = add_faces(settings, records_of(services), 5)
    (settings.faces_dir / f"face_{ids[2]}.jpg").unlink()  # expired under our feet: left out

    first = (await client.get("/v1/faces", params={"limit": 2})).json()
    assert [f["face_id"] for f in first["faces"]] == [ids[4], ids[3]]
    assert first["next_before"] == ids[3]
    face = first["faces"][0]
    assert face["track_id"] == 104
    assert face["source"] == "door"
    assert face["day"] == TODAY
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", face["time"])
    assert face["url"].startswith(f"/v1/faces/{ids[4]}.jpg?v=")

    second = (await client.get("/v1/faces", params={"limit": 2, "before": ids[3]})).json()
    assert [f["face_id"] for f in second["faces"]] == [ids[1], ids[0]]
    last = (await client.get("/v1/faces", params={"limit": 2, "before": ids[0]})).json()
    assert last == {"faces": [], "next_before": None}
    whole = (await client.get("/v1/faces", params={"limit": 10})).json()
    assert len(whole["faces"]) == 4
    assert whole["next_before"] is None

    for bad in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"before": 0}):
        r = await client.get("/v1/faces", params=bad)
        assert r.status_code == 400, bad
        assert r.json()["code"] == "invalid_input"


async def test_face_image_by_integer_id_only(
    client: httpx.AsyncClient, services: Services, settings: Settings
) -> None:
    [face_id] = add_faces(settings, records_of(services), 1)
    r = await client.get(f"/v1/faces/{face_id}.jpg")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.content == b"\xff\xd8jpeg" + bytes([face_id])
    # A file beside the faces that the index does not know is never served.
    (settings.faces_dir / "face_99.jpg").write_bytes(b"not indexed")
    for path in ("/v1/faces/99.jpg", "/v1/faces/abc.jpg", "/v1/faces/-1.jpg",
                 "/v1/faces/..%2Fframebroker.sqlite3", f"/v1/faces/{face_id}.png"):  # fmt: skip
        r = await client.get(path)
        assert r.status_code == 404, path
    (settings.faces_dir / f"face_{face_id}.jpg").unlink()
    assert (await client.get(f"/v1/faces/{face_id}.jpg")).status_code == 404


async def test_hourly_counts_of_a_source(client: httpx.AsyncClient, services: Services) -> None:
    records_of(services).save_counts(
        "door",
        TODAY,
        {"a": {"in": 5, "out": 1}, "b": {"in": 2, "out": 0}},
        {(9, "a"): (3, 1), (9, "b"): (2, 0), (14, "a"): (2, 0)},
    )
    body = (await client.get("/v1/sources/door/counts/hourly")).json()
    assert body["source"] == "door"
    assert body["day"] == TODAY
    assert len(body["hours"]) == 24
    assert body["hours"][9] == {"hour": 9, "count_in": 5, "count_out": 1}
    assert body["hours"][14] == {"hour": 14, "count_in": 2, "count_out": 0}
    other = await client.get("/v1/sources/door/counts/hourly", params={"day": "2001-02-03"})
    assert other.json()["day"] == "2001-02-03"
    assert sum(h["count_in"] for h in other.json()["hours"]) == 0

    for bad in ("2024-13-01", "yesterday", "2024-1-1"):
        r = await client.get("/v1/sources/door/counts/hourly", params={"day": bad})
        assert r.status_code == 400, bad
        assert r.json()["field"] in ("day", "query.day")
    r = await client.get("/v1/sources/a%20b/counts/hourly")
    assert r.status_code == 400


async def test_events_of_a_source(client: httpx.AsyncClient, services: Services) -> None:
    records = records_of(services)
    first = records.event_started(source="door", day=TODAY, started_at=100.0, start_time="09:00:00")
    records.event_ended(first, ended_at=400.0, end_time="09:05:00", count_in=12)
    records.event_started(source="door", day=TODAY, started_at=900.0, start_time="10:00:00")
    records.event_started(source="yard", day=TODAY, started_at=950.0, start_time="10:01:00")
    body = (await client.get("/v1/sources/door/events")).json()
    assert body["source"] == "door"
    assert body["events"] == [
        {"id": first, "start_time": "09:00:00", "end_time": "09:05:00", "started_at": 100.0,
         "ended_at": 400.0, "count_in": 12},
        {"id": first + 1, "start_time": "10:00:00", "end_time": None, "started_at": 900.0,
         "ended_at": None, "count_in": None},
    ]  # fmt: skip
    empty = await client.get("/v1/sources/door/events", params={"day": "2001-02-03"})
    assert empty.json()["events"] == []


@pytest.mark.parametrize("path", ["/v1/console", "/v1/faces", "/v1/sources/x/events"])
async def test_endpoints_are_in_the_openapi_document(client: httpx.AsyncClient, path: str) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert path.replace("/x/", "/{name}/") in doc["paths"]


async def test_every_page_comes_in_the_one_frame(client: httpx.AsyncClient) -> None:
    frame = (console.UI_DIR / "_frame.html").read_text(encoding="utf-8")
    head = frame.split("{{title}}", 1)[0]
    for file, title, script in console.PAGES:
        r = await client.get(f"/ui/{file}")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
        page = r.text
        assert page.startswith(head)  # the shared head, not a copy of it
        assert f"<title>{title} · framebroker</title>" in page
        assert f'<script type="module" src="{script}"></script>' in page
        assert page.count('aria-current="page"') == 1
        assert page.count("<main") == 1
        assert page.rstrip().endswith("</html>")
    assert (await client.get("/ui/")).text == (await client.get("/ui/index.html")).text
    assert (await client.get("/ui/_frame.html")).status_code == 404
