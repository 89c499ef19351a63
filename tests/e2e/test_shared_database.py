"""Two real servers on one PostgreSQL database, as two nodes of a cluster would be.

Each counts people and saves faces for sources of its own, at the same time. Neither loses
the other's writes (every count, event and face each one showed is stored under its source),
face ids are never given twice, and either node serves any face. A node's start-up recovery
ends only its own earlier life's sessions, never the other node's; a session one node
suspended is resumed by the other, which then holds it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import simplejpeg
import websockets
from sqlalchemy import create_engine, text

from framebroker.media.sources import demo_clip
from framebroker.storage import database_url

from .portrait import PORTRAIT, write_portrait_clip
from .server import RunningServer, running_server
from .test_crash_safety import CONFIG

BOXES = [[10, 10, 60, 120, 0.9, 0], [200, 40, 260, 160, 0.8, 0]]


async def last_stats(server: RunningServer, sources: list[str], timeout: float = 60) -> Any:
    """Follow each source until it has shown a count and an event (``f*``: a face); then
    the stats that showed it."""
    base = server.url.replace("http://", "ws://") + "/ws/live?source="

    def done(source: str, stats: dict[str, Any]) -> bool:
        if source.startswith("f"):
            return int(stats["face_count"]) >= 1
        crossed = int(stats["count_in"]) + int(stats["count_out"]) >= 1
        return crossed and int(stats["daily_event_count"]) >= 1

    async def follow(source: str) -> dict[str, Any]:
        async with websockets.connect(base + source, max_size=None) as ws:
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] == "stats" and done(source, msg["data"]):
                    return dict(msg["data"])

    found = await asyncio.wait_for(asyncio.gather(*map(follow, sources)), timeout)
    return dict(zip(sources, found, strict=True))


def stored(url: str, sql: str) -> list[Any]:
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as db:
            return list(db.execute(text(sql)).all())
    finally:
        engine.dispose()


def test_two_servers_share_one_postgresql_database(
    tmp_path: Path, new_postgres_database: Any
) -> None:
    url = new_postgres_database()
    assert PORTRAIT.is_file()
    portrait = tmp_path / "portrait.mp4"
    write_portrait_clip(portrait)
    config = tmp_path / "framebroker.toml"
    config.write_text(CONFIG)

    def node(name: str) -> tuple[Path, tuple[str, ...]]:
        return tmp_path / name, (
            "--config", str(config), "--database-url", url,
            "--source", f"{name}={demo_clip()}", "--source", f"f{name}={portrait}",
        )  # fmt: skip

    a_data, a_args = node("a")
    b_data, b_args = node("b")
    with (
        running_server(a_data, *a_args) as a,
        httpx.Client(base_url=a.url) as on_a,
        running_server(b_data, *b_args) as b,
        httpx.Client(base_url=b.url) as on_b,
    ):
        rest = on_a.post("/v1/sessions", json={"pipeline": ["bytetrack"]}).json()["id"]
        first = on_a.post(f"/v1/sessions/{rest}/frames", json={"boxes": BOXES}).json()

        async def both() -> list[Any]:
            return await asyncio.gather(last_stats(a, ["a", "fa"]), last_stats(b, ["b", "fb"]))

        shown_a, shown_b = asyncio.run(both())
        # Either node lists every face and serves each crop.
        faces_a = on_a.get("/v1/faces?limit=200").json()["faces"]
        faces_b = on_b.get("/v1/faces?limit=200").json()["faces"]
        ids = [f["face_id"] for f in faces_a]
        assert len(ids) == len(set(ids)) >= 2
        assert {f["source"] for f in faces_a} >= {"fa", "fb"}
        assert {f["face_id"] for f in faces_b} >= set(ids)
        for face in faces_a:
            other = on_b if face["source"] == "fa" else on_a
            jpeg = other.get(f"/v1/faces/{face['face_id']}.jpg")
            assert jpeg.status_code == 200, (face, jpeg.text)
            simplejpeg.decode_jpeg(jpeg.content, strict=True)
        face_of_a = next(f["face_id"] for f in faces_a if f["source"] == "fa")
        answer = asyncio.run(ask(b, {"type": "get_face", "face_id": face_of_a}, "face_image"))
        assert simplejpeg.decode_jpeg(base64.b64decode(answer["image_data"])).size > 0
        every = asyncio.run(ask(a, {"type": "get_all_faces", "limit": 200}, "all_faces"))
        assert set(ids) <= {f["face_id"] for f in every["faces"]}  # b's faces too

        # b restarts while a serves: its recovery ends its own earlier life's sessions only.
        b.stop()
        with running_server(b_data, *b_args) as b_again:
            assert b_again.proc.poll() is None
            assert on_a.get(f"/v1/sessions/{rest}").json()["state"] == "active"
            # a stops cleanly, suspending its session; b resumes it and holds it from then.
            a.stop()
            with httpx.Client(base_url=b_again.url) as on_b_again:
                resumed = on_b_again.post(f"/v1/sessions/{rest}/frames", json={"boxes": BOXES})
                assert resumed.status_code == 200, resumed.text
                assert resumed.json()["tracks"] == first["tracks"]  # the same tracks, on b
    owner = stored(url, f"SELECT owner FROM sessions WHERE id = '{rest}'")
    assert owner == [(b_data.joinpath("node_id").read_text().strip(),)]

    # Every count, event and face each node showed is stored under its own source.
    sums = "SELECT source, SUM(count_in), SUM(count_out) FROM {} GROUP BY source"
    counts = {s: (int(i), int(o)) for s, i, o in stored(url, sums.format("daily_counts"))}
    hourly = {s: (int(i), int(o)) for s, i, o in stored(url, sums.format("hourly_counts"))}
    events = dict(stored(url, "SELECT source, COUNT(*) FROM traffic_events GROUP BY source"))
    faces = dict(stored(url, "SELECT source, COUNT(*) FROM faces GROUP BY source"))
    for shown in (shown_a, shown_b):
        for source, stats in shown.items():
            cin, cout = counts.get(source, (0, 0))
            assert (cin, cout) >= (stats["count_in"], stats["count_out"]), (source, counts)
            assert cout >= stats["count_out"], (source, counts)
            assert hourly.get(source, (0, 0)) == (cin, cout), (source, hourly, counts)
            assert events.get(source, 0) >= stats["daily_event_count"], (source, events)
            assert faces.get(source, 0) >= stats["face_count"], (source, faces)
    crops = stored(url, "SELECT COUNT(*) FROM faces JOIN face_crops USING (face_id)")
    assert crops == stored(url, "SELECT COUNT(*) FROM faces")


async def ask(server: RunningServer, request: dict[str, Any], answer: str) -> Any:
    """The live WebSocket's answer of type ``answer`` to ``request``."""
    url = server.url.replace("http://", "ws://") + "/ws/live"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps(request))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg.get("type") == answer:
                assert "error" not in msg, msg
                return msg
