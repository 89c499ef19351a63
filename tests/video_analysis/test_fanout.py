"""The fan-out against real local HTTP services and a real broker."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from framebroker.config import load_settings
from framebroker.errors import InvalidInput
from framebroker.media.encode import encode_mp4
from framebroker.media.sampling import read_frames
from framebroker.media.sources import demo_clip
from framebroker.plugins import ProcessorRegistry
from framebroker.runtime import Broker, BrokerConfig
from framebroker.server import build_registry
from framebroker.video_analysis.fanout import (
    Fanout,
    HttpService,
    HttpServices,
    InProcessPipelines,
    Video,
    jsonable,
)

from ..runtime.processors import Broken, FrameSize
from ..transports.images import scene
from .analysis_services import AnalysisServices, refused_url


def frames(n: int = 5, w: int = 64, h: int = 48) -> list[np.ndarray]:
    return [scene(w, h, seed=i) for i in range(n)]


@pytest.fixture(scope="module")
def services() -> Iterator[AnalysisServices]:
    with AnalysisServices() as s:
        yield s


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    reg = ProcessorRegistry()
    reg.register("frame_size", FrameSize)
    reg.register("broken", Broken)
    b = Broker(reg, config=BrokerConfig(max_workers=2))
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def http(services: AnalysisServices) -> AsyncIterator[HttpServices]:
    h = HttpServices(
        [
            HttpService("decode", services.url("/decode")),
            HttpService("slow", services.url("/slow?seconds=30"), timeout_s=0.5),
            HttpService("fail", services.url("/fail"), retries=2),
            HttpService("garbage", services.url("/garbage")),
            HttpService("refused", refused_url(), retries=1),
        ],
        backoff_s=0.01,
    )
    yield h
    await h.aclose()


async def test_each_failure_is_its_own_entry_and_the_rest_answer(
    http: HttpServices, services: AnalysisServices
) -> None:
    video = Video(data=encode_mp4(frames(7, 96, 64)), filename="w.mp4")
    before = services.count("/fail")
    t0 = time.perf_counter()
    result = await http.send(video)
    elapsed = time.perf_counter() - t0
    assert list(result) == ["decode", "slow", "fail", "garbage", "refused"]
    assert result["decode"] == {
        "frames": 7,
        "width": 96,
        "height": 64,
        "bytes": len(video.data or b""),
        "filename": "w.mp4",
    }
    assert result["slow"]["code"] == "service_timeout"
    assert "0.5 s" in result["slow"]["error"]
    assert result["fail"]["code"] == "service_error"
    assert result["fail"]["status"] == 500
    assert result["fail"]["attempts"] == 3  # one try and two retries
    assert services.count("/fail") - before == 3
    assert result["garbage"]["code"] == "invalid_answer"
    assert "text/html" in result["garbage"]["error"]
    assert result["refused"]["code"] == "service_unavailable"
    assert result["refused"]["attempts"] == 2
    # All at once: the slow one's deadline bounds the whole call.
    assert elapsed < 2.0


async def test_retries_recover_from_a_transient_503(services: AnalysisServices) -> None:
    h = HttpServices(
        [HttpService("flaky", services.url("/flaky?fails=2&key=a"), retries=2)], backoff_s=0.01
    )
    try:
        result = await h.send(Video(data=encode_mp4(frames(3))))
    finally:
        await h.aclose()
    assert result["flaky"]["frames"] == 3


async def test_a_4xx_is_not_retried(services: AnalysisServices) -> None:
    h = HttpServices([HttpService("nope", services.url("/missing"), retries=3)], backoff_s=0.01)
    try:
        result = await h.send(Video(data=b"x"))
    finally:
        await h.aclose()
    assert result["nope"]["status"] == 404
    assert result["nope"]["attempts"] == 1


async def test_the_deadline_covers_the_retries(services: AnalysisServices) -> None:
    h = HttpServices(
        [HttpService("fail", services.url("/fail"), retries=10, timeout_s=0.3)], backoff_s=0.2
    )
    t0 = time.perf_counter()
    try:
        result = await h.send(Video(data=b"x"))
    finally:
        await h.aclose()
    assert time.perf_counter() - t0 < 1.0
    assert 1 <= result["fail"]["attempts"] < 10


async def test_large_answers_are_refused(services: AnalysisServices) -> None:
    h = HttpServices([HttpService("decode", services.url("/decode"))], max_answer_bytes=10)
    try:
        result = await h.send(Video(data=encode_mp4(frames(2))))
    finally:
        await h.aclose()
    assert result["decode"]["code"] == "invalid_answer"
    assert "limit of 10" in result["decode"]["error"]


async def test_requests_in_flight_are_bounded(services: AnalysisServices) -> None:
    h = HttpServices(
        [HttpService(f"s{i}", services.url("/slow?seconds=0.3")) for i in range(4)],
        max_concurrency=2,
    )
    t0 = time.perf_counter()
    try:
        result = await h.send(Video(data=b"x"))
    finally:
        await h.aclose()
    assert all(a == {"slow": True} for a in result.values())
    assert time.perf_counter() - t0 >= 0.55  # two rounds of two


async def test_a_file_video_is_read_afresh_for_each_attempt(
    services: AnalysisServices, tmp_path: Path
) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(frames(4)))
    h = HttpServices(
        [HttpService("flaky", services.url("/flaky?fails=1&key=file"), retries=1)],
        backoff_s=0.01,
    )
    try:
        result = await h.send(Video(path=path, filename="clip.mp4"))
    finally:
        await h.aclose()
    assert result["flaky"]["frames"] == 4
    assert result["flaky"]["filename"] == "clip.mp4"


async def test_pipelines_keep_state_across_windows_and_end_with_a_summary(
    broker: Broker,
) -> None:
    pipes = InProcessPipelines(broker, {"sizes": ["frame_size"], "bad": ["broken"]})
    pipes.check()
    first = await pipes.run("s1", frames(3))
    second = await pipes.run("s1", frames(2))
    assert [r["seen"] for r in first["sizes"]["results"]] == [1, 2, 3]
    assert [r["seen"] for r in second["sizes"]["results"]] == [4, 5]
    assert first["sizes"]["results"][0]["size"] == [64, 48]
    assert isinstance(first["sizes"]["results"][0]["mean"], float)  # numpy made JSON-able
    assert first["bad"]["frames"] == 3
    assert first["bad"]["errors"][0]["error"] == "RuntimeError: model crashed"
    assert len(broker.manager) == 2
    summaries = await pipes.end("s1")
    assert summaries["sizes"] == {"total": 5}
    assert len(broker.manager) == 0


async def test_a_pipeline_session_swept_as_idle_starts_again(broker: Broker) -> None:
    pipes = InProcessPipelines(broker, {"sizes": ["frame_size"]})
    await pipes.run("s", frames(1))
    for sid in broker.manager.ids():
        await broker.end(sid, reason="idle")
    again = await pipes.run("s", frames(1))
    assert again["sizes"]["results"][0]["seen"] == 1
    await pipes.end("s")


async def test_run_stream_ends_its_sessions_and_truncates(broker: Broker) -> None:
    pipes = InProcessPipelines(broker, {"sizes": ["frame_size"]})

    async def gen() -> AsyncIterator[np.ndarray]:
        for f in frames(5):
            yield f

    out = await pipes.run_stream(gen(), max_frames=3)
    assert out["sizes"]["frames"] == 3
    assert out["sizes"]["truncated"] is True
    assert out["sizes"]["summary"] == {"total": 3}
    assert len(broker.manager) == 0


async def test_fanout_merges_services_and_pipelines_under_one_set_of_names(
    broker: Broker, services: AnalysisServices
) -> None:
    http = HttpServices([HttpService("decode", services.url("/decode"))])
    fan = Fanout(http, InProcessPipelines(broker, {"sizes": ["frame_size"]}))
    try:
        assert fan.names == ["decode", "sizes"]
        assert fan.select(None) == ["decode", "sizes"]
        assert fan.select(["sizes", "sizes"]) == ["sizes"]
        with pytest.raises(InvalidInput, match="unknown"):
            fan.select(["nope"])
        assert [o["kind"] for o in fan.options()] == ["service", "pipeline"]
        fs = frames(4)
        result = await fan.window("s", Video(data=encode_mp4(fs)), fs, ["sizes", "decode"])
        assert list(result) == ["sizes", "decode"]
        assert result["decode"]["frames"] == 4
        assert result["sizes"]["frames"] == 4
        only = await fan.window("s", Video(data=encode_mp4(fs)), fs, ["decode"])
        assert list(only) == ["decode"]
        await fan.end("s")
    finally:
        await fan.aclose()
    with pytest.raises(ValueError, match="both"):
        Fanout(HttpServices([HttpService("x", "http://h")]), InProcessPipelines(broker, {"x": []}))


async def test_many_windows_of_many_streams_at_once(
    broker: Broker, services: AnalysisServices
) -> None:
    http = HttpServices([HttpService("decode", services.url("/decode"))], max_concurrency=4)
    fan = Fanout(http, InProcessPipelines(broker, {"sizes": ["frame_size"]}))
    fs = frames(3)
    video = Video(data=encode_mp4(fs))
    try:
        results = await asyncio.gather(
            *(fan.window(f"s{i}", video, fs, fan.names) for i in range(12))
        )
    finally:
        for i in range(12):
            await fan.end(f"s{i}")
        await fan.aclose()
    assert all(r["decode"]["frames"] == 3 and r["sizes"]["frames"] == 3 for r in results)


def test_jsonable() -> None:
    assert jsonable({"a": np.arange(3), "b": np.float64(1.5), "c": Path("/x")}) == {
        "a": [0, 1, 2],
        "b": 1.5,
        "c": "/x",
    }
    with pytest.raises(ValueError, match="exactly one"):
        Video()
    with pytest.raises(ValueError, match="timeout_s"):
        HttpService("a", "http://h", timeout_s=0)


async def test_a_detecting_pipeline_answers_boxes_class_names_and_track_ids(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path)
    b = Broker(build_registry(settings), config=BrokerConfig(max_workers=2))
    await b.start()
    try:
        pipes = InProcessPipelines(b, {"people": ["detect", "bytetrack"]})
        clip = [image for image, _, _ in itertools.islice(read_frames(str(demo_clip())), 12)]
        answer = (await pipes.run("s", clip))["people"]
        assert answer["frames"] == 12
        last = answer["results"][-1]
        assert last["detections"] == len(last["tracks"]) > 0  # the detector's own count too
        person = last["tracks"][0]
        assert person["class_id"] == 0
        assert person["class_name"] == "person"
        x1, y1, x2, y2 = person["box"]
        assert 0 <= x1 < x2 <= 640
        assert 0 <= y1 < y2 <= 480
        assert 0 < person["score"] <= 1
        assert any(t["track_id"] is not None for t in last["tracks"])  # confirmed tracks
        await pipes.end("s")
    finally:
        await b.stop()
