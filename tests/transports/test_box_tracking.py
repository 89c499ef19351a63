"""Seed 000's API at `/`, checked field for field against the seed document."""

from __future__ import annotations

import math
from typing import Any

import httpx
import numpy as np

from .images import decode_b64, jpeg_b64, png_b64, scene

SEED_BOXES = [[20, 23, 12, 24, 89, 0], [12, 34, 45, 56, 78, 1]]
SEED_TRACKED = [[20, 23, 12, 24, 89, 0, 1], [12, 34, 45, 56, 78, 1, 2]]


def walking(step: int) -> list[list[float]]:
    """Two people walking in opposite directions, xywh, percent scores like the seed."""
    return [
        [100 + 5 * step, 200, 40, 100, 90, 0],
        [500 - 5 * step, 210, 42, 104, 85, 0],
    ]


async def post(
    client: httpx.AsyncClient, body: Any, sid: str | None = None, **headers: str
) -> httpx.Response:
    h = {"Content-Type": "application/json", **headers}
    if sid is not None:
        h["Session-Id"] = sid
    return await client.post("/", json=body, headers=h)


async def test_get_lists_sessions_in_the_seed_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"sessions", "active_threads", "timestamp"}
    assert body["sessions"] == []
    assert isinstance(body["active_threads"], int)
    assert body["active_threads"] >= 1
    assert isinstance(body["timestamp"], float)


async def test_the_seed_example_returns_the_seed_answer(client: httpx.AsyncClient) -> None:
    r = await post(client, {"boxes": SEED_BOXES}, "72d6be50")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tracked_boxes"] == SEED_TRACKED
    assert set(body) == {"tracked_boxes", "tracker_perf", "timestamp"}
    assert len(body["tracker_perf"]) == 1
    assert 0 <= body["tracker_perf"][0] < 1
    assert r.headers["Session-Id"] == "72d6be50"
    assert (await client.get("/")).json()["sessions"] == ["72d6be50"]


async def test_with_an_image_returns_it_annotated_at_the_same_size(
    client: httpx.AsyncClient,
) -> None:
    img = scene(320, 240)
    r = await post(client, {"boxes": SEED_BOXES, "image": jpeg_b64(img)}, "72d6be50")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tracked_boxes"] == SEED_TRACKED
    assert len(body["tracker_perf"]) == 2
    out = decode_b64(body["annotated_image"])
    assert out.shape == img.shape
    # Something was drawn around the first box (x 20..32, y 23..47) ...
    assert np.abs(out[23:48, 20:33].astype(int) - img[23:48, 20:33].astype(int)).mean() > 10
    # ... and the far corner, with no box near it, is the picture we sent (JPEG noise aside).
    assert np.abs(out[200:, 250:].astype(int) - img[200:, 250:].astype(int)).mean() < 6


async def test_png_images_are_accepted(client: httpx.AsyncClient) -> None:
    r = await post(client, {"boxes": SEED_BOXES, "image": png_b64(scene(64, 64))})
    assert r.status_code == 200, r.text
    assert decode_b64(r.json()["annotated_image"]).shape == (64, 64, 3)


async def test_without_session_id_a_session_is_made_and_named(
    client: httpx.AsyncClient,
) -> None:
    r = await post(client, {"boxes": SEED_BOXES})
    sid = r.headers["Session-Id"]
    assert len(sid) >= 22
    assert sid in (await client.get("/")).json()["sessions"]
    again = await post(client, {"boxes": SEED_BOXES}, sid)
    assert [row[-1] for row in again.json()["tracked_boxes"]] == [1, 2]


async def test_ids_follow_moving_people(client: httpx.AsyncClient) -> None:
    ids = []
    for step in range(20):
        r = await post(client, {"boxes": walking(step)}, "walk")
        ids.append([row[-1] for row in r.json()["tracked_boxes"]])
    assert all(frame == [1, 2] for frame in ids)


async def test_box_format_by_header_and_by_field(client: httpx.AsyncClient) -> None:
    xyxy = [[20, 23, 32, 47, 0.89, 0], [12, 34, 57, 90, 0.78, 1]]
    r = await post(client, {"boxes": xyxy}, "hdr", **{"Box-Format": "xyxy"})
    assert r.json()["tracked_boxes"] == [[*xyxy[0], 1], [*xyxy[1], 2]]
    cxcy = [[26, 35, 12, 24, 0.89, 0]]
    r = await post(client, {"boxes": cxcy, "box_format": "cxcywh"}, "fld")
    assert r.json()["tracked_boxes"] == [[*cxcy[0], 1]]


async def test_unconfirmed_rows_are_left_out(client: httpx.AsyncClient) -> None:
    await post(client, {"boxes": walking(0)}, "late")
    newcomer = [300, 50, 30, 80, 95, 0]
    r = await post(client, {"boxes": [*walking(1), newcomer]}, "late")
    # A box first seen after frame 1 needs a second sighting before it is a track.
    assert [row[:6] for row in r.json()["tracked_boxes"]] == walking(1)
    r = await post(client, {"boxes": [*walking(2), newcomer]}, "late")
    assert r.json()["tracked_boxes"][-1] == [*newcomer, 3]


async def test_delete_ends_the_session(client: httpx.AsyncClient) -> None:
    await post(client, {"boxes": SEED_BOXES}, "72d6be50")
    r = await client.delete("/", headers={"Session-Id": "72d6be50"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"sessions", "active_threads", "timestamp"}
    assert body["sessions"] == []
    # A new session under the same id starts over.
    again = await post(client, {"boxes": SEED_BOXES}, "72d6be50")
    assert again.json()["tracked_boxes"] == SEED_TRACKED


async def test_timestamp_is_now(client: httpx.AsyncClient) -> None:
    import time

    r = await post(client, {"boxes": SEED_BOXES})
    assert math.isclose(r.json()["timestamp"], time.time(), abs_tol=5)
