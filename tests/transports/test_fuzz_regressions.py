"""Requests that once got a wrong answer from ``/v1``, found while fuzzing it
(``test_openapi_fuzz.py``), each kept here as a plain test with its body.

For each: the answer is a documented 4xx naming the problem, and the session it was sent to
still tracks afterwards.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from framebroker.config import load_settings
from framebroker.errors import ProcessorLoadError
from framebroker.server import build_registry

from .images import jpeg_b64, scene
from .test_box_tracking import SEED_BOXES
from .test_rest_v1 import new_session

FRAMES = "/v1/sessions/{}/frames"


async def still_tracks(client: httpx.AsyncClient, sid: str) -> None:
    """Two frames of the seed's boxes: both rows are tracked (from the first frame of a
    session, from the second after other frames)."""
    for _ in range(2):
        r = await client.post(FRAMES.format(sid), json={"boxes": SEED_BOXES})
        assert r.status_code == 200, r.text
    assert [t["track_id"] for t in r.json()["tracks"]] == [1, 2]


async def test_the_document_lists_400_where_validation_fails_not_fastapis_422(
    client: httpx.AsyncClient,
) -> None:
    # GET /v1/faces?limit=0 answered 400 while the document promised 200 or 422.
    r = await client.get("/v1/faces", params={"limit": 0})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_input"
    doc = (await client.get("/openapi.json")).json()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert "422" not in operation["responses"], (method, path)
    faces = doc["paths"]["/v1/faces"]["get"]["responses"]["400"]
    assert faces["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert "HTTPValidationError" not in doc["components"]["schemas"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        # Overflowed to inf on the way to xyxy: the reply held null coordinates.
        ([1e308, 1e308, 1e308, 1e308, 0.9, 0], "boxes[0][0]"),
        ([-1e308, -1e308, 1e308, 1e308, 0.9, 0], "boxes[0][0]"),
        ([0, 0, 1e300, 1e300, 0.9, 0], "boxes[0][2]"),
        # Class ids past int64 were cast to garbage.
        ([0, 0, 5, 5, 0.9, 1e30], "boxes[0][5]"),
        ([0, 0, 5, 5, 0.9, 2**70], "boxes[0][5]"),
    ],
)
async def test_numbers_out_of_range_are_refused(
    client: httpx.AsyncClient, row: list[float], field: str
) -> None:
    sid = await new_session(client)
    body = {"boxes": [row], "image": jpeg_b64(scene(8, 8))}
    r = await client.post(FRAMES.format(sid), json=body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_boxes"
    assert r.json()["field"] == field
    await still_tracks(client, sid)


async def test_frames_must_be_sent_as_json(client: httpx.AsyncClient) -> None:
    # A text/plain body was read as JSON: a cross-site form could post frames unasked.
    sid = await new_session(client)
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        r = await client.post(
            FRAMES.format(sid),
            content=b'{"boxes": [[20, 23, 12, 24, 89, 0]]}',
            headers={"Content-Type": content_type},
        )
        assert r.status_code == 415, r.text
        assert r.json()["code"] == "unsupported_media_type"
        assert r.json()["field"] == "Content-Type"
    r = await client.post("/v1/sessions", content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = await client.post(
        FRAMES.format(sid),
        content=b'{"boxes": []}',
        headers={"Content-Type": "application/vnd.example+json; charset=utf-8"},
    )
    assert r.status_code == 200, r.text
    await still_tracks(client, sid)


@pytest.mark.parametrize("body", [b"xx", b"{", b'{"pipeline": ['])
async def test_a_session_body_that_is_not_json_is_named_so(
    client: httpx.AsyncClient, body: bytes
) -> None:
    # Answered {"error": "0: JSON decode error", "field": "0"}.
    r = await client.post(
        "/v1/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    reply: dict[str, Any] = r.json()
    assert reply["code"] == "invalid_json"
    assert reply["field"] == "body"
    assert reply["error"].startswith("body is not valid JSON")


async def test_tracks_lists_only_rows_a_track_owns(client: httpx.AsyncClient) -> None:
    # A pipeline without a tracker answered every row as a track with id -1.
    sid = await new_session(client, pipeline=["annotate"])
    r = await client.post(FRAMES.format(sid), json={"boxes": SEED_BOXES})
    assert r.status_code == 200, r.text
    assert r.json()["tracks"] == []
    assert r.json()["tracked_boxes"] == []


async def test_numbers_at_the_limits_are_tracked_and_drawn(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    row = [-1e9, -1e9, 1e9, 1e9, 100, 2**31 - 1]
    body = {"boxes": [row], "image": jpeg_b64(scene(8, 8))}
    r = await client.post(FRAMES.format(sid), json=body)
    assert r.status_code == 200, r.text
    assert r.json()["errors"] == []
    assert r.json()["annotated_image"]
    assert r.json()["tracked_boxes"] == [[*row, 1]]


# -- processor specs a request may send ------------------------------------------------------

REGISTRY = build_registry(load_settings(data_dir=Path("unused")))
LIGHT = ("bytetrack", "annotate", "line_counter", "traffic_events")
"""The processors that build without loading a model; their parameters are all checked at
construction, so each spec is fast to try."""
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["0", "x", "every", "interval", "name"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
values = st.integers(1, 60) | st.floats(0.05, 1) | json_values  # plausible ones often enough


def specs_of(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """``{"name": name, ...}`` with some of the processor's own parameters, any JSON values."""
    own = [*inspect.signature(REGISTRY.resolve(name)).parameters, "rate", "enabled", "ends_stage"]
    return st.fixed_dictionaries({"name": st.just(name)}, optional=dict.fromkeys(own, values))


@settings(
    max_examples=int(os.environ.get("FRAMEBROKER_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(spec=st.sampled_from(LIGHT).flatmap(specs_of))
@example(spec={"name": "annotate", "class_names": 1})  # AttributeError: a 500
@example(spec={"name": "annotate", "class_names": "x"})
@example(spec={"name": "annotate", "class_names": [1e308]})
def test_a_processor_spec_from_a_request_is_built_or_refused(spec: dict[str, Any]) -> None:
    """What ``POST /v1/sessions`` does with each ``pipeline`` entry: anything but a built
    pipeline or :class:`ProcessorLoadError` (a 400) would be a 500."""
    try:
        REGISTRY.check_request([spec])
        pipeline = REGISTRY.pipeline([spec])
    except ProcessorLoadError as exc:
        refusal = exc
    else:
        event("built")
        assert pipeline.names == [spec["name"]]
        return
    event("refused")
    assert refusal.message


async def test_a_spec_that_once_crashed_is_refused_over_http(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/sessions", json={"pipeline": [{"name": "annotate", "class_names": 1}]}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "processor_load_error"
    assert "class_names" in r.json()["error"]
