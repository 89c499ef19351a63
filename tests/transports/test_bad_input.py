"""Every kind of bad request to seed 000's API gets a clear JSON 4xx and changes nothing."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from .images import jpeg_b64, scene
from .test_box_tracking import SEED_BOXES, walking

JSON = {"Content-Type": "application/json"}


def raw(body: bytes) -> dict[str, Any]:
    return {"content": body}


def as_json(body: Any) -> dict[str, Any]:
    return {"json": body}


def big_png_b64() -> str:
    ok, buf = cv2.imencode(".png", np.zeros((1000, 2000, 3), np.uint8))  # 2 MP > 1 MP limit
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def truncated_jpeg_b64() -> str:
    data = base64.b64decode(jpeg_b64(scene(64, 64)))
    return base64.b64encode(data[: len(data) // 2]).decode()


# (name, request kwargs, status, code, text the message must contain)
CASES: list[tuple[str, Callable[[], dict[str, Any]], int, str, str]] = [
    ("malformed json", lambda: raw(b'{"boxes": [[1, 2'), 400, "invalid_json", "not valid JSON"),
    ("empty body", lambda: raw(b""), 400, "invalid_json", "empty"),
    ("not an object", lambda: as_json([1, 2]), 400, "invalid_input", "expected a JSON object"),
    ("boxes missing", lambda: as_json({"image": None}), 400, "invalid_input", "boxes"),
    ("boxes a string", lambda: as_json({"boxes": "1,2"}), 400, "invalid_boxes", "list of rows"),
    (
        "row of five",
        lambda: as_json({"boxes": [[1, 2, 3, 4, 0.5]]}),
        400,
        "invalid_boxes",
        "boxes[0]: expected 6 numbers",
    ),
    (
        "string in a row",
        lambda: as_json({"boxes": [[1, 2, "3", 4, 0.5, 0]]}),
        400,
        "invalid_boxes",
        "boxes[0][2]",
    ),
    ("NaN", lambda: raw(b'{"boxes": [[1, 2, NaN, 4, 0.5, 0]]}'), 400, "invalid_json", "JSON"),
    (
        "infinity",
        lambda: raw(b'{"boxes": [[1, 2, 1e999, 4, 0.5, 0]]}'),
        400,
        "invalid_json",
        "infinity",
    ),
    (
        "zero width",
        lambda: as_json({"boxes": [[1, 2, 0, 4, 0.5, 0]]}),
        400,
        "invalid_boxes",
        "width > 0",
    ),
    (
        "negative height",
        lambda: as_json({"boxes": [[1, 2, 3, -4, 0.5, 0]]}),
        400,
        "invalid_boxes",
        "height > 0",
    ),
    (
        "too many boxes",
        lambda: as_json({"boxes": [[1, 2, 3, 4, 0.5, 0]] * 101}),
        413,
        "payload_too_large",
        "limit of 100",
    ),
    (
        "bad base64",
        lambda: as_json({"boxes": SEED_BOXES, "image": "@@not base64@@"}),
        400,
        "invalid_image",
        "base64",
    ),
    (
        "image not a string",
        lambda: as_json({"boxes": SEED_BOXES, "image": 5}),
        400,
        "invalid_input",
        "image",
    ),
    (
        "not an image",
        lambda: as_json({"boxes": SEED_BOXES, "image": "aGVsbG8gd29ybGQ="}),
        415,
        "unsupported_media_type",
        "JPEG or PNG",
    ),
    (
        "truncated jpeg",
        lambda: as_json({"boxes": SEED_BOXES, "image": truncated_jpeg_b64()}),
        400,
        "invalid_image",
        "",
    ),
    (
        "too many pixels",
        lambda: as_json({"boxes": SEED_BOXES, "image": big_png_b64()}),
        413,
        "payload_too_large",
        "pixels",
    ),
    (
        "body too large",
        lambda: raw(b'{"boxes": [], "pad": "' + b"x" * 2_100_000 + b'"}'),
        413,
        "payload_too_large",
        "limit of 2000000 bytes",
    ),
    (
        "unknown box format",
        lambda: as_json({"boxes": SEED_BOXES, "box_format": "ltrb"}),
        400,
        "invalid_boxes",
        "xyxy, xywh, cxcywh",
    ),
]


async def track(client: httpx.AsyncClient, sid: str, step: int) -> list[int]:
    r = await client.post("/", json={"boxes": walking(step)}, headers={"Session-Id": sid})
    assert r.status_code == 200, r.text
    return [row[-1] for row in r.json()["tracked_boxes"]]


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "code", "text"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_post_is_refused_and_nothing_is_lost(
    client: httpx.AsyncClient,
    name: str,
    request_kwargs: Callable[[], dict[str, Any]],
    status: int,
    code: str,
    text: str,
) -> None:
    assert await track(client, "victim", 0) == [1, 2]
    assert await track(client, "bystander", 0) == [1, 2]
    assert await track(client, "victim", 1) == [1, 2]

    bad = await client.post("/", headers={**JSON, "Session-Id": "victim"}, **request_kwargs())
    assert bad.status_code == status, bad.text
    body = bad.json()
    assert body["code"] == code
    assert text in body["error"]
    # The same bad request naming a session that does not exist creates nothing.
    await client.post("/", headers={**JSON, "Session-Id": "ghost"}, **request_kwargs())

    # The victim goes on exactly as if the bad request never happened, and so does the other.
    for step in range(2, 6):
        assert await track(client, "victim", step) == [1, 2]
        assert await track(client, "bystander", step - 1) == [1, 2]
    sessions = (await client.get("/")).json()["sessions"]
    assert sorted(sessions) == ["bystander", "victim"]


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    r = await client.post("/", content=b"a,b", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415
    assert r.json()["field"] == "Content-Type"


async def test_bad_box_format_header(client: httpx.AsyncClient) -> None:
    r = await client.post("/", json={"boxes": SEED_BOXES}, headers={"Box-Format": "ltrb"})
    assert r.status_code == 400
    assert r.json()["field"] == "Box-Format"


async def test_invalid_session_id_header(client: httpx.AsyncClient) -> None:
    r = await client.post("/", json={"boxes": SEED_BOXES}, headers={"Session-Id": "../etc"})
    assert r.status_code == 400
    assert r.json()["field"] == "Session-Id"
    assert (await client.get("/")).json()["sessions"] == []


async def test_delete_unknown_or_missing_session(client: httpx.AsyncClient) -> None:
    await track(client, "victim", 0)
    r = await client.delete("/", headers={"Session-Id": "nobody"})
    assert r.status_code == 404
    assert r.json() == {
        "error": "no active session with id 'nobody'",
        "code": "session_not_found",
        "field": "Session-Id",
    }
    r = await client.delete("/")
    assert r.status_code == 400
    assert await track(client, "victim", 1) == [1, 2]


async def test_declared_length_over_the_limit_is_refused_before_reading(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/", content=b"{}", headers={**JSON, "Content-Length": "999999999"})
    assert r.status_code == 413
