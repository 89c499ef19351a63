"""The versioned resource API and its OpenAPI document."""

from __future__ import annotations

import httpx

from .images import decode_b64, jpeg_b64, scene
from .test_box_tracking import SEED_BOXES, walking


async def new_session(client: httpx.AsyncClient, **body: object) -> str:
    r = await client.post("/v1/sessions", json=body or None)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v1/sessions/{r.json()['id']}"
    return str(r.json()["id"])


async def test_session_lifecycle(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    listed = (await client.get("/v1/sessions")).json()["sessions"]
    assert [s["id"] for s in listed] == [sid]
    assert listed[0]["pipeline"] == ["bytetrack", "annotate"]
    assert listed[0]["state"] == "active"

    for step in range(3):
        r = await client.post(f"/v1/sessions/{sid}/frames", json={"boxes": walking(step)})
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["frame_index"] == 2
    assert [t["track_id"] for t in body["tracks"]] == [1, 2]
    assert body["tracks"][0]["box"] == walking(2)[0][:4]
    assert body["tracks"][0]["row_index"] == 0
    assert body["tracked_boxes"] == [[*row, i + 1] for i, row in enumerate(walking(2))]
    assert set(body["timings"]) == {"bytetrack", "annotate"}
    assert body["annotated_image"] is None

    info = (await client.get(f"/v1/sessions/{sid}")).json()
    assert info["stats"]["frames_processed"] == 3

    ended = await client.delete(f"/v1/sessions/{sid}")
    assert ended.status_code == 200
    summary = ended.json()["summary"]
    assert summary["results"]["tracker"] == {"frames": 3, "tracks_started": 2}
    assert summary["reason"] == "deleted"

    # Ended sessions are still readable from the store.
    record = (await client.get(f"/v1/sessions/{sid}")).json()
    assert record["state"] == "ended"
    assert record["summary"]["stats"]["frames_processed"] == 3
    assert (await client.get("/v1/sessions")).json()["sessions"] == []


async def test_frames_with_an_image(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    img = scene(200, 100)
    r = await client.post(
        f"/v1/sessions/{sid}/frames", json={"boxes": SEED_BOXES, "image": jpeg_b64(img)}
    )
    assert r.status_code == 200, r.text
    assert decode_b64(r.json()["annotated_image"]).shape == img.shape


async def test_tracker_parameters_per_session(client: httpx.AsyncClient) -> None:
    # With a new-track threshold above every score, nothing ever becomes a track.
    sid = await new_session(client, pipeline=[{"name": "bytetrack", "new_track_thresh": 0.99}])
    r = await client.post(f"/v1/sessions/{sid}/frames", json={"boxes": SEED_BOXES})
    assert r.json()["tracks"] == []


async def test_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/sessions/nope/frames", json={"boxes": []})
    assert r.status_code == 404
    assert r.json()["code"] == "session_not_found"
    assert (await client.get("/v1/sessions/nope")).status_code == 404
    assert (await client.delete("/v1/sessions/nope")).status_code == 404

    r = await client.post("/v1/sessions", json={"pipeline": ["no-such-processor"]})
    assert r.status_code == 400
    assert "unknown processor" in r.json()["error"]
    r = await client.post("/v1/sessions", json={"pipelin": []})
    assert r.status_code == 400
    assert r.json()["field"] == "pipelin"

    sid = await new_session(client)
    r = await client.post(f"/v1/sessions/{sid}/frames", json={"boxes": [], "extra": 1})
    assert r.status_code == 400
    assert r.json()["field"] == "extra"
    r = await client.post(f"/v1/sessions/{sid}/frames", content=b"{")
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_json"
    assert (await client.get("/v1/nothing")).json()["code"] == "not_found"


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert set(paths) >= {
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/frames",
    }
    frames = paths["/v1/sessions/{session_id}/frames"]["post"]
    schema = frames["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["boxes"]
    assert "404" in frames["responses"]


async def test_a_request_cannot_name_code_or_files(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/sessions", json={"pipeline": [{"name": "shutil:rmtree", "path": "/x"}]}
    )
    assert r.status_code == 400
    assert "only registered processors" in r.json()["error"]
    r = await client.post("/v1/sessions", json={"pipeline": ["tests.core.helpers:Counter"]})
    assert r.status_code == 400
    r = await client.post(
        "/v1/sessions", json={"pipeline": [{"name": "detect", "model": "/etc/passwd"}]}
    )
    assert r.status_code == 400
    assert "may only be set in the server's configuration" in r.json()["error"]
    assert (await client.get("/v1/sessions")).json()["sessions"] == []
