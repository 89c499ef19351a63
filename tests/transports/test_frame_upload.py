"""Seed 003's frame server through the ASGI app: multipart in, frame plus outputs out."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from framebroker.config import Settings, load_settings
from framebroker.core.frame import Frame
from framebroker.core.processor import ProcessContext, Processor, Rate
from framebroker.errors import ConfigError
from framebroker.server import Services, build_app, build_compat_app

from .conftest import TEST_LIMITS
from .images import scene
from .test_box_tracking import SEED_BOXES, SEED_TRACKED

HERE = "tests.transports.test_frame_upload"


class FrameCounter(Processor):
    """Stateful: counts the frames of its session."""

    name = "counter"

    def __init__(self) -> None:
        self.frames = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.frames += 1
        return {"counter": {"frames": self.frames}}


class MeanColour(Processor):
    """Reads the pixels: their mean per channel and the array it was handed."""

    name = "colour"
    needs_image = True

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        image = frame.image
        return {
            "colour": {
                "mean_bgr": [round(float(m), 3) for m in image.reshape(-1, 3).mean(axis=0)],
                "shape": list(image.shape),
                "writeable": bool(image.flags.writeable),
            }
        }


class EverySecond(Processor):
    """Runs once per second of the frames' own clock."""

    name = "sampler"
    rate = Rate(interval=1.0)

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"sampler": {"at": frame.timestamp}}


class Troublemaker(Processor):
    """Fails when told to by the frame, or returns what JSON cannot hold, or edits the meta."""

    name = "trouble"

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        frame.meta["timestamp"] = -1.0  # must not leak into the echoed frame
        frame.meta.setdefault("source", {})
        if frame.meta.get("explode"):
            raise RuntimeError("boom")
        if frame.meta.get("unserialisable"):
            return {"weird": {1j}}
        return None


PIPELINE = [f"{HERE}:{name}" for name in ("FrameCounter", "MeanColour", "EverySecond")]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    limits = {**TEST_LIMITS, "max_body_bytes": 8_000_000, "max_image_pixels": 2_100_000}
    pipeline = [*PIPELINE, f"{HERE}:Troublemaker"]
    return load_settings(data_dir=tmp_path, limits=limits, frames={"pipeline": pipeline})


def raw(width: int, height: int, seed: int = 0) -> np.ndarray:
    return scene(width, height, seed)


def encoded(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return bytes(buf.tobytes())


def files(image: bytes, frame: Any) -> dict[str, Any]:
    document = frame if isinstance(frame, bytes) else json.dumps(frame).encode()
    return {
        "image": ("image.raw", image, "application/octet-stream"),
        "frame": ("frame.json", document, "application/json"),
    }


def seed_frame(frame_no: int = 51, **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": 1556855549.3732016 + frame_no / 30,
        "timestamp_str": "2019/05/03 03:52:29.37",
        "relative_timestamp_str": "00:00:00.00",
        "relative_timestamp": 0.0,
        "frame_no": frame_no,
        **extra,
    }


async def post_frame(
    client: httpx.AsyncClient,
    image: np.ndarray | bytes,
    frame: Any,
    *,
    sid: str | None = None,
    url: str = "/",
) -> httpx.Response:
    data = image.tobytes() if isinstance(image, np.ndarray) else image
    headers = {"Session-Id": sid} if sid is not None else {}
    return await client.post(url, files=files(data, frame), headers=headers)


# -- the seed's contract ----------------------------------------------------------------------


async def test_seed_frame_echoed_unchanged_with_processor_outputs(
    client: httpx.AsyncClient,
) -> None:
    image = raw(1920, 1080)
    frame = seed_frame(source={"file": "match.mkv", "video_fps": 60.0}, extracted={"hero": "x"})
    r = await post_frame(client, image, frame)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in frame} == frame
    assert list(body)[: len(frame)] == list(frame)  # frame fields first, in their order
    assert body["counter"] == {"frames": 1}
    colour = body["colour"]
    assert colour["shape"] == [1080, 1920, 3]  # the seed's default size
    assert colour["mean_bgr"] == pytest.approx(image.reshape(-1, 3).mean(axis=0), abs=1e-3)
    assert colour["writeable"] is False  # a view on the received bytes, not a copy
    report = body["framebroker"]
    assert report["ran"] == ["counter", "colour", "sampler", "trouble"]
    assert set(report["timings_ms"]) == set(report["ran"])
    assert report["frame_index"] == 0
    assert report["session_id"] == r.headers["Session-Id"]
    assert report["session_id"].startswith("frames-")
    assert set(body) == {*frame, "counter", "colour", "sampler", "framebroker"}


async def test_size_from_frame_or_source(client: httpx.AsyncClient) -> None:
    image = raw(64, 48)
    r = await post_frame(client, image, seed_frame(width=64, height=48))
    assert r.json()["colour"]["shape"] == [48, 64, 3]
    r = await post_frame(client, image, seed_frame(source={"width": 64, "height": 48}))
    assert r.json()["colour"]["shape"] == [48, 64, 3]
    # The frame's own fields win over the source's.
    r = await post_frame(client, raw(32, 96), seed_frame(width=32, height=96, source=[1, 2]))
    assert r.json()["colour"]["shape"] == [96, 32, 3]


@pytest.mark.parametrize("ext", [".png", ".jpg"])
async def test_png_and_jpeg_are_told_apart_by_their_bytes(
    client: httpx.AsyncClient, ext: str
) -> None:
    image = raw(160, 120)
    # The declared size describes raw pixels; a PNG or JPEG carries its own.
    r = await post_frame(client, encoded(image, ext), seed_frame(width=1920, height=1080))
    assert r.status_code == 200, r.text
    colour = r.json()["colour"]
    assert colour["shape"] == [120, 160, 3]
    assert colour["mean_bgr"] == pytest.approx(image.reshape(-1, 3).mean(axis=0), abs=2.0)


async def test_raw_pixels_that_start_like_a_jpeg_are_still_raw(client: httpx.AsyncClient) -> None:
    image = raw(64, 48)
    image[0, 0] = (0xFF, 0xD8, 0xFF)
    r = await post_frame(client, image, seed_frame(width=64, height=48))
    assert r.status_code == 200, r.text
    assert r.json()["colour"]["shape"] == [48, 64, 3]


async def test_json_post_on_the_same_path_is_still_seed_000(client: httpx.AsyncClient) -> None:
    r = await client.post("/", json={"boxes": SEED_BOXES}, headers={"Session-Id": "t"})
    assert r.status_code == 200, r.text
    assert r.json()["tracked_boxes"] == SEED_TRACKED
    r = await post_frame(client, raw(64, 48), seed_frame(width=64, height=48), sid="f")
    assert r.status_code == 200, r.text
    assert sorted((await client.get("/")).json()["sessions"]) == ["f", "t"]


# -- sessions and state -------------------------------------------------------------------------


async def test_one_session_per_source_keeps_processor_state(client: httpx.AsyncClient) -> None:
    a = {"file": "a.mkv", "width": 64, "height": 48}
    b = {"height": 48, "width": 64, "file": "b.mkv"}
    image = raw(64, 48)
    counts = []
    for frame_no in range(3):
        for source in (a, b, a):
            r = await post_frame(client, image, seed_frame(frame_no, source=source))
            counts.append((source["file"], r.json()["counter"]["frames"], r.headers["Session-Id"]))
    a_ids = {sid for name, _, sid in counts if name == "a.mkv"}
    b_ids = {sid for name, _, sid in counts if name == "b.mkv"}
    assert len(a_ids) == len(b_ids) == 1
    assert a_ids != b_ids
    assert [n for name, n, _ in counts if name == "a.mkv"] == [1, 2, 3, 4, 5, 6]
    assert [n for name, n, _ in counts if name == "b.mkv"] == [1, 2, 3]
    # Key order does not make another source.
    reordered = dict(reversed(list(a.items())))
    r = await post_frame(client, image, seed_frame(9, source=reordered))
    assert r.headers["Session-Id"] in a_ids


async def test_no_source_means_one_session_per_client_and_a_header_wins(
    client: httpx.AsyncClient,
) -> None:
    image = raw(64, 48)
    frame = seed_frame(width=64, height=48)
    first = await post_frame(client, image, frame)
    second = await post_frame(client, image, frame)
    assert first.headers["Session-Id"] == second.headers["Session-Id"]
    assert second.json()["counter"] == {"frames": 2}
    named = await post_frame(client, image, frame, sid="my-stream")
    assert named.headers["Session-Id"] == "my-stream"
    assert named.json()["counter"] == {"frames": 1}
    assert named.json()["framebroker"]["session_id"] == "my-stream"


async def test_rates_follow_the_frames_own_timestamps(client: httpx.AsyncClient) -> None:
    image = raw(64, 48)
    ran_at = []
    for t in (100.0, 100.4, 100.9, 101.0, 101.5, 102.2, 102.3):
        r = await post_frame(client, image, {"timestamp": t, "width": 64, "height": 48}, sid="s")
        report = r.json()["framebroker"]
        if "sampler" in report["ran"]:
            ran_at.append(t)
            assert r.json()["sampler"] == {"at": t}
        else:
            assert report["skipped"] == {"sampler": "not_due"}
            assert "sampler" not in r.json()
    # Posted much faster than realtime, yet once per second of video.
    assert ran_at == [100.0, 101.0, 102.2]


async def test_processor_errors_are_in_the_reply_and_the_session_goes_on(
    client: httpx.AsyncClient,
) -> None:
    image = raw(64, 48)
    frame = seed_frame(width=64, height=48, explode=True)
    r = await post_frame(client, image, frame, sid="s")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["framebroker"]["errors"] == [
        {"processor": "trouble", "error": "RuntimeError: boom"}
    ]
    assert {k: body[k] for k in frame} == frame  # its meta edits did not leak
    assert body["counter"] == {"frames": 1}

    r = await post_frame(
        client, image, seed_frame(width=64, height=48, unserialisable=True), sid="s"
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "weird" not in body
    [error] = body["framebroker"]["errors"]
    assert error["output"] == "weird"
    assert "JSON" in error["error"]
    assert body["counter"] == {"frames": 2}


async def test_frame_fields_win_over_outputs_of_the_same_name(client: httpx.AsyncClient) -> None:
    frame = seed_frame(width=64, height=48, counter="from the client", framebroker=[1])
    r = await post_frame(client, raw(64, 48), frame)
    body = r.json()
    assert body["counter"] == "from the client"
    assert body["framebroker"] == [1]  # the client's field, kept; no report then
    assert body["colour"]["shape"] == [48, 64, 3]


# -- the compatibility listener -----------------------------------------------------------------


@pytest.fixture
async def compat(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_compat_app("frames", services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:5000") as c:
        yield c


async def test_compat_listener_serves_frames_at_root_with_the_same_sessions(
    client: httpx.AsyncClient, compat: httpx.AsyncClient
) -> None:
    image = raw(64, 48)
    frame = seed_frame(source={"file": "x", "width": 64, "height": 48})
    r = await post_frame(compat, image, frame)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in frame} == frame
    r = await post_frame(client, image, frame)  # the main port: same services, same session
    assert r.json()["counter"] == {"frames": 2}
    r = await compat.post("/", json={"boxes": SEED_BOXES})
    assert r.status_code == 415
    assert r.json()["field"] == "Content-Type"
    assert "multipart/form-data" in r.json()["error"]
    assert (await compat.get("/")).status_code == 405


async def test_an_unknown_processor_in_the_settings_stops_start_up(
    tmp_path: Path, services: Services
) -> None:
    bad = load_settings(data_dir=tmp_path, frames={"pipeline": ["counter", "no.such:Thing"]})
    with pytest.raises(ConfigError, match=r"frames\.pipeline\[0\]: unknown processor 'counter'"):
        build_app(bad, services)
    with pytest.raises(ConfigError, match=r"pipeline\[0\]: a processor table needs a string"):
        load_settings(data_dir=tmp_path, frames={"pipeline": [{"every": 2}]})


def test_default_frames_pipeline_is_empty_and_5000_is_its_port(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.frames.pipeline == []
    assert (s.frames.default_width, s.frames.default_height) == (1920, 1080)
    assert s.compat_ports["frames"] == 5000


async def test_empty_pipeline_echoes(tmp_path: Path) -> None:
    plain = load_settings(data_dir=tmp_path / "plain", limits={"max_body_bytes": 8_000_000})
    svc = Services.build(plain)
    await svc.start()
    try:
        transport = httpx.ASGITransport(app=build_app(plain, svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://fb") as c:
            frame = seed_frame()
            r = await post_frame(c, raw(1920, 1080), frame)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body == {**frame, "framebroker": body["framebroker"]}
            assert body["framebroker"]["ran"] == []
    finally:
        await svc.stop()


# -- bad input ----------------------------------------------------------------------------------

SMALL = {"width": 64, "height": 48}


def truncated(ext: str) -> bytes:
    data = encoded(raw(64, 48), ext)
    return data[: len(data) * 2 // 3]


def multipart(parts: list[tuple[str, bytes]], boundary: str = "b0und") -> dict[str, Any]:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + content
        + b"\r\n"
        for name, content in parts
    )
    return {
        "content": body + f"--{boundary}--\r\n".encode(),
        "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    }


def unclosed(parts: list[tuple[str, bytes]]) -> dict[str, Any]:
    kwargs = multipart(parts)
    kwargs["content"] = kwargs["content"][:-10]
    return kwargs


def with_files(image: bytes, frame: Any) -> dict[str, Any]:
    return {"files": files(image, frame)}


GOOD_IMAGE = raw(64, 48).tobytes()

# (name, request kwargs, status, code, field, text the message must contain)
BAD: list[tuple[str, Callable[[], dict[str, Any]], int, str, str, str]] = [
    (
        "missing image",
        lambda: multipart([("frame", json.dumps(SMALL).encode())]),
        400, "invalid_input", "image", "missing multipart part 'image'",
    ),
    (
        "missing frame",
        lambda: multipart([("image", GOOD_IMAGE)]),
        400, "invalid_input", "frame", "missing multipart part 'frame'",
    ),
    (
        "frame not json",
        lambda: with_files(GOOD_IMAGE, b'{"width": 64, '),
        400, "invalid_json", "frame", "not valid JSON",
    ),
    (
        "frame empty",
        lambda: with_files(GOOD_IMAGE, b""),
        400, "invalid_json", "frame", "empty",
    ),
    (
        "frame an array",
        lambda: with_files(GOOD_IMAGE, [64, 48]),
        400, "invalid_input", "frame", "expected a JSON object, got array",
    ),
    (
        "frame a string",
        lambda: with_files(GOOD_IMAGE, "frame"),
        400, "invalid_input", "frame", "expected a JSON object, got string",
    ),
    (
        "one byte short",
        lambda: with_files(GOOD_IMAGE[:-1], SMALL),
        400, "invalid_image", "image", "needs width*height*3 = 9216 bytes, received 9215",
    ),
    (
        "default size, wrong count",
        lambda: with_files(GOOD_IMAGE, {"timestamp": 1.0}),
        400, "invalid_image", "image", "raw BGR 1920x1080 (from the default size",
    ),
    (
        "empty image",
        lambda: with_files(b"", SMALL),
        400, "invalid_image", "image", "received 0",
    ),
    (
        "zero width",
        lambda: with_files(GOOD_IMAGE, {"width": 0, "height": 48}),
        400, "invalid_input", "frame.width", "expected a positive integer, got 0",
    ),
    (
        "negative source height",
        lambda: with_files(GOOD_IMAGE, {"source": {"width": 64, "height": -48}}),
        400, "invalid_input", "frame.source.height", "got -48",
    ),
    (
        "width as text",
        lambda: with_files(GOOD_IMAGE, {"width": "64", "height": 48}),
        400, "invalid_input", "frame.width", "got '64'",
    ),
    (
        "width without height",
        lambda: with_files(GOOD_IMAGE, {"width": 64}),
        400, "invalid_input", "frame.height", "give width and height together",
    ),
    (
        "huge declared size",
        lambda: with_files(GOOD_IMAGE, {"width": 100_000, "height": 100_000}),
        413, "payload_too_large", "frame.width", "limit of 2100000 pixels",
    ),
    (
        "truncated png",
        lambda: with_files(truncated(".png"), SMALL),
        400, "invalid_image", "image", "PNG is truncated",
    ),
    (
        "truncated jpeg",
        lambda: with_files(truncated(".jpg"), SMALL),
        400, "invalid_image", "image", "JPEG is truncated",
    ),
    (
        "body over the limit",
        lambda: with_files(b"\0" * 8_000_001, SMALL),
        413, "payload_too_large", "body", "over the limit of 8000000 bytes",
    ),
    (
        "no closing boundary",
        lambda: unclosed([("image", GOOD_IMAGE), ("frame", b"{}")]),
        400, "invalid_input", "body", "truncated",
    ),
    (
        "part sent twice",
        lambda: multipart([("image", GOOD_IMAGE), ("image", GOOD_IMAGE), ("frame", b"{}")]),
        400, "invalid_input", "image", "sent more than once",
    ),
    (
        "too many parts",
        lambda: multipart([(f"p{i}", b"x") for i in range(17)]),
        413, "payload_too_large", "body", "more than 16 parts",
    ),
    (
        "no boundary",
        lambda: {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}},
        400, "invalid_input", "Content-Type", "needs a boundary",
    ),
    (
        "not multipart, not json",
        lambda: {"content": b"x", "headers": {"Content-Type": "image/png"}},
        415, "unsupported_media_type", "Content-Type", "multipart/form-data",
    ),
]  # fmt: skip


async def count(client: httpx.AsyncClient, sid: str) -> int:
    r = await post_frame(client, GOOD_IMAGE, seed_frame(**SMALL), sid=sid)
    assert r.status_code == 200, r.text
    frames: int = r.json()["counter"]["frames"]
    return frames


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "code", "field", "text"), BAD, ids=[c[0] for c in BAD]
)
async def test_bad_frame_is_refused_and_nothing_is_lost(
    client: httpx.AsyncClient,
    name: str,
    request_kwargs: Callable[[], dict[str, Any]],
    status: int,
    code: str,
    field: str,
    text: str,
) -> None:
    assert await count(client, "victim") == 1
    assert await count(client, "bystander") == 1

    kwargs = request_kwargs()
    headers = {**kwargs.pop("headers", {}), "Session-Id": "victim"}
    bad = await client.post("/", headers=headers, **kwargs)
    assert bad.status_code == status, bad.text
    body = bad.json()
    assert (body["code"], body["field"]) == (code, field)
    assert text in body["error"]
    # The same request naming a session that does not exist creates nothing.
    again = request_kwargs()
    headers = {**again.pop("headers", {}), "Session-Id": "ghost"}
    assert (await client.post("/", headers=headers, **again)).status_code == status

    for expected in (2, 3):
        assert await count(client, "victim") == expected
        assert await count(client, "bystander") == expected
    assert sorted((await client.get("/")).json()["sessions"]) == ["bystander", "victim"]


# -- the body as it arrives: raw ASGI -----------------------------------------------------------


class Upload:
    """Drives the ASGI app with a body in chunks, recording how much of it was read."""

    def __init__(
        self,
        chunks: list[bytes],
        content_type: str,
        *,
        declare_length: bool = True,
        disconnect_after: int | None = None,
    ) -> None:
        self.chunks = chunks
        self.headers = [(b"content-type", content_type.encode())]
        if declare_length:
            length = sum(map(len, chunks))
            self.headers.append((b"content-length", str(length).encode()))
        self.disconnect_after = disconnect_after
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        limit = len(self.chunks) if self.disconnect_after is None else self.disconnect_after
        if self.pulled >= limit:
            return {"type": "http.disconnect"}
        self.pulled += 1
        more = self.pulled < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.pulled - 1], "more_body": more}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, app: Any) -> tuple[int, dict[str, Any]]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/", "raw_path": b"/",
            "query_string": b"", "root_path": "", "headers": self.headers,
            "client": ("127.0.0.1", 40000), "server": ("framebroker", 80),
        }  # fmt: skip
        await app(scope, self.receive, self.send)
        status = next(m["status"] for m in self.sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return status, json.loads(body)


def in_chunks(image: bytes, frame: Any, size: int = 65536) -> tuple[list[bytes], str]:
    """A real client's multipart body, cut as a server would receive it."""
    request = httpx.Request("POST", "http://x/", files=files(image, frame))
    body = request.read()
    return [body[i : i + size] for i in range(0, len(body), size)], request.headers["content-type"]


def big_upload(**kwargs: Any) -> Upload:
    return Upload(*in_chunks(b"\0" * 20_000_000, seed_frame()), **kwargs)


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    settings: Settings, services: Services
) -> None:
    upload = big_upload()
    status, body = await upload.run(build_app(settings, services))
    assert (status, body["code"]) == (413, "payload_too_large")
    assert upload.pulled == 0


async def test_a_streamed_body_over_the_limit_is_refused_as_it_passes(
    settings: Settings, services: Services
) -> None:
    upload = big_upload(declare_length=False)
    status, body = await upload.run(build_app(settings, services))
    assert (status, body["code"]) == (413, "payload_too_large")
    assert upload.pulled * 65536 <= 8_000_000 + 65536  # stopped at the limit, not at 20 MB


async def test_a_client_gone_mid_upload_leaks_nothing(
    settings: Settings, services: Services, client: httpx.AsyncClient
) -> None:
    app = build_app(settings, services)
    chunks, content_type = in_chunks(raw(1920, 1080).tobytes(), seed_frame(source={"a": 1}))
    assert await count(client, "bystander") == 1

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            upload = Upload(chunks, content_type, disconnect_after=40)
            status, reply = await upload.run(app)
            assert status == 400
            assert "disconnected" in reply["error"]
        gc.collect()
        # Each attempt held a 6 MB block; none of them is still alive.
        assert tracemalloc.get_traced_memory()[0] - before < 1_000_000
    finally:
        tracemalloc.stop()
    assert sorted(services.broker.manager.ids()) == ["bystander"]
    assert await count(client, "bystander") == 2
    status, reply = await Upload(chunks, content_type).run(app)
    assert status == 200
    assert reply["colour"]["shape"] == [1080, 1920, 3]
