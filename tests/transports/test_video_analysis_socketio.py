"""Seed 002 over Socket.IO and HTTP, with the real python-socketio client, the real app on a
loopback port, and real local analysis services (issue 5, sections 1 to 4)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import socketio

from framebroker.media.encode import encode_mp4
from framebroker.transports.video_analysis_socketio import ack_hook_fits

from ..video_analysis.analysis_services import AnalysisServices, refused_url
from .images import png_b64 as png
from .images import scene
from .socketio_harness import Client, Served, b64, connected, jpeg, serve

SIZES = "tests.runtime.processors:FrameSize"


@pytest.fixture(scope="module")
def services() -> Iterator[AnalysisServices]:
    with AnalysisServices() as s:
        yield s


def all_kinds(services: AnalysisServices) -> dict[str, Any]:
    return {
        "services": {
            "decode": services.url("/decode"),
            "slow": {"url": services.url("/slow?seconds=30"), "timeout_s": 0.5},
            "fail": {"url": services.url("/fail"), "retries": 1},
            "refused": {"url": refused_url(), "retries": 1},
        },
        "pipelines": {"sizes": [SIZES]},
    }


@contextlib.asynccontextmanager
async def peer(served: Served) -> AsyncIterator[Client]:
    """Another client, connected and with one frame through, to show it is unaffected."""
    async with connected(served.url, f"session_id={await served.session_id()}") as other:
        assert "size" in await other.frame()
        yield other


async def still_fine(other: Client) -> None:
    reply = await other.frame(scene(64, 48, seed=9))
    assert reply["size"] == [64, 48], reply


# -- section 1: HTTP endpoints ---------------------------------------------------------------


async def test_options_and_session_ids(tmp_path: Path, services: AnalysisServices) -> None:
    async with (
        serve(tmp_path, **all_kinds(services)) as served,
        httpx.AsyncClient(base_url=served.url) as http,
    ):
        options = (await http.get("/options")).json()
        assert options["processes"] == ["decode", "slow", "fail", "refused", "sizes"]
        kinds = {d["name"]: d["kind"] for d in options["details"]}
        assert kinds["sizes"] == "pipeline"
        assert kinds["decode"] == "service"
        a = (await http.get("/get_session_id")).json()["session_id"]
        b = (await http.get("/get_session_id")).json()["session_id"]
        assert a != b
        assert len(a) > 40


async def test_batch_upload_goes_to_every_service_and_pipeline(
    tmp_path: Path, services: AnalysisServices
) -> None:
    video = encode_mp4([scene(96, 64, seed=i) for i in range(6)])
    async with (
        serve(tmp_path, **all_kinds(services)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as http,
    ):
        r = await http.post("/batch", files={"file": ("clip.mp4", video, "video/mp4")})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert list(result) == ["decode", "slow", "fail", "refused", "sizes"]
        assert result["decode"]["frames"] == 6
        assert result["decode"]["filename"] == "clip.mp4"
        assert (result["decode"]["width"], result["decode"]["height"]) == (96, 64)
        assert result["slow"]["code"] == "service_timeout"
        assert result["fail"]["status"] == 500
        assert result["refused"]["code"] == "service_unavailable"
        assert result["sizes"]["frames"] == 6
        assert result["sizes"]["summary"] == {"total": 6}
        # A raw body works too, and processes= picks names.
        r = await http.post(
            "/batch?processes=decode",
            content=video,
            headers={"Content-Type": "video/mp4"},
        )
        assert r.json() == {"result": {"decode": {**result["decode"], "filename": "video.mp4"}}}
        assert list((tmp_path / "uploads").iterdir()) == []  # temporary files are gone


async def test_batch_refuses_bad_uploads_clearly(
    tmp_path: Path, services: AnalysisServices
) -> None:
    video = encode_mp4([scene(64, 48)] * 3)
    async with (
        serve(tmp_path, services={"decode": services.url("/decode")}, max_buffer_size=4096) as s,
        httpx.AsyncClient(base_url=s.url) as http,
    ):
        big = encode_mp4([scene(320, 240, seed=i) for i in range(10)])
        assert len(big) > 4096
        r = await http.post("/batch", files={"file": ("a.mp4", big, "video/mp4")})
        assert r.status_code == 413
        assert r.json()["code"] == "payload_too_large"

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        r = await http.post("/batch", content=chunked(), headers={"Content-Type": "video/mp4"})
        assert r.status_code == 413
        r = await http.post("/batch", files={"file": ("a.txt", b"hello", "text/plain")})
        assert r.status_code == 400
        assert "not a usable video" in r.json()["error"]
        assert str(tmp_path) not in r.json()["error"]
        r = await http.post("/batch", files={"other": (None, b"x")})
        assert r.status_code == 400
        assert r.json()["field"] == "file"
        r = await http.post("/batch", content=b"", headers={"Content-Type": "video/mp4"})
        assert r.status_code == 400
        assert "empty" in r.json()["error"]
        r = await http.post("/batch", json={"video": "x"})
        assert r.status_code == 415
        r = await http.post("/batch?processes=nope", content=video)
        assert r.status_code == 400
        assert "unknown" in r.json()["error"]
        assert len(video) < 4096
        r = await http.post("/batch", files={"file": ("a.mp4", video, "video/mp4")})
        assert r.json()["result"]["decode"]["frames"] == 3
        assert list((tmp_path / "uploads").iterdir()) == []


async def test_uploads_at_once_are_bounded(tmp_path: Path, services: AnalysisServices) -> None:
    slow = {"slow": {"url": services.url("/slow?seconds=1"), "timeout_s": 5}}
    video = encode_mp4([scene(64, 48)] * 2)
    async with (
        serve(tmp_path, services=slow, max_concurrent_batches=1) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as http,
    ):
        first = asyncio.create_task(http.post("/batch", content=video))
        await asyncio.sleep(0.3)
        second = await http.post("/batch", content=video)
        assert second.status_code == 503
        assert second.json()["code"] == "capacity_exceeded"
        assert (await first).json() == {"result": {"slow": {"slow": True}}}
        assert (await http.post("/batch", content=video)).status_code == 200


# -- section 2: Socket.IO sessions -------------------------------------------------------------


async def test_end_ends_at_once_and_a_plain_disconnect_waits_for_a_reconnect(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, reconnect_grace_s=30) as served:
        sessions = served.app.state.services.broker
        done, left = await served.session_id(), await served.session_id()
        async with connected(served.url, f"session_id={done}") as client:
            await client.frame()
            assert await client.sio.call("end", timeout=5) == {"session_id": done, "ended": True}
        async with connected(served.url, f"session_id={left}") as client:
            await client.frame()
            await client.sio.disconnect()  # no end: it may come back
        live = [s.id for s in await sessions.live()]
        assert done not in live
        assert left in live


async def test_a_dropped_connection_that_comes_back_carries_on_with_its_window(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, window_frames=3, reconnect_grace_s=10) as served:
        sid = await served.session_id()
        client = Client()
        client.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.1)
        for name in ("result", "error"):
            client.sio.on(name, client._recorder(name))
        back = asyncio.Event()
        client.sio.on("connect", back.set)
        try:
            await client.connect(served.url, f"session_id={sid}")
            first = [await client.frame() for _ in range(2)]
            assert [(r["frame"], r["window"]) for r in first] == [(0, 0), (1, 0)]
            back.clear()
            await client.sio.eio.ws.close()  # the network drops; python-socketio reconnects
            await asyncio.wait_for(back.wait(), 10)
            third = await client.frame()
            assert (third["frame"], third["window"]) == (2, 0)  # the same session, same window
            result = await client.next("result")
            assert (result["session_id"], result["window"], result["frames"]) == (sid, 0, 3)
        finally:
            await client.close()


async def test_a_session_not_reconnected_within_the_grace_period_ends(tmp_path: Path) -> None:
    async with serve(tmp_path, reconnect_grace_s=0.3) as served:
        sid = await served.session_id()
        async with connected(served.url, f"session_id={sid}") as client:
            await client.frame()
            await client.sio.eio.ws.close()  # dropped, and this client does not reconnect
            for _ in range(100):
                if not client.sio.connected:
                    break
                await asyncio.sleep(0.02)
        sessions = served.app.state.services.broker
        assert sid in [s.id for s in await sessions.live()]  # kept for a reconnect...
        for _ in range(100):
            if sid not in [s.id for s in await sessions.live()]:
                break
            await asyncio.sleep(0.05)
        assert sid not in [s.id for s in await sessions.live()]  # ...then ended
        late = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await late.connect(served.url, f"session_id={sid}")
        await late.close()
        assert late.refusal["data"]["code"] == "session_not_found"  # and its id used up


async def test_a_session_end_to_end(tmp_path: Path, services: AnalysisServices) -> None:
    async with serve(tmp_path, window_frames=3, **all_kinds(services)) as served:
        sid = await served.session_id()
        async with connected(served.url, f"session_id={sid}") as client:
            echo = await client.sio.call("test", {"hello": 1}, timeout=5)
            assert echo == {"data": {"hello": 1}, "session_id": sid}
            assert await client.next("test") == echo

            image = scene(64, 48)
            image[0, 0] = (10, 20, 30)  # BGR
            replies = [
                await client.frame(image),
                await client.sio.call("process", "data:image/png;base64," + png(image), timeout=10),
                await client.sio.call("process", {"image": jpeg(image)}, timeout=10),
            ]
            assert [(r["frame"], r["window"]) for r in replies] == [(0, 0), (1, 0), (2, 0)]
            assert replies[0]["size"] == [64, 48]
            assert replies[1]["first_pixel"] == [30, 20, 10]  # RGB, as PIL gives it

            result = await client.next("result")
            assert result["session_id"] == sid
            assert (result["window"], result["frames"], result["closed_by"]) == (0, 3, "frames")
            assert result["size"] == [64, 48]
            answers = result["result"]
            assert answers["decode"]["frames"] == 3
            assert (answers["decode"]["width"], answers["decode"]["height"]) == (64, 48)
            assert answers["slow"]["code"] == "service_timeout"
            assert answers["fail"]["code"] == "service_error"
            assert answers["refused"]["code"] == "service_unavailable"
            assert [x["seen"] for x in answers["sizes"]["results"]] == [1, 2, 3]

            for i in range(3):  # the pipeline keeps its state into the next window
                await client.frame(scene(64, 48, seed=i))
            second = await client.next("result")
            assert second["window"] == 1
            assert second["first_frame"] == 3
            assert [x["seen"] for x in second["result"]["sizes"]["results"]] == [4, 5, 6]
            # The stream is a session of the one directory, beside its pipeline's session.
            manager = served.app.state.services.broker.manager
            assert len(manager) == 2
            assert sid in manager
        # Disconnect ends the session: its pipeline session ends and its id is used up.
        for _ in range(100):
            if len(served.app.state.services.broker.manager) == 0:
                break
            await asyncio.sleep(0.05)
        assert len(served.app.state.services.broker.manager) == 0
        again = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await again.connect(served.url, f"session_id={sid}")
        await again.close()
        assert again.refusal["data"]["code"] == "session_not_found"


async def test_processes_query_picks_names_and_emit_result_off(
    tmp_path: Path, services: AnalysisServices
) -> None:
    async with serve(tmp_path, window_frames=2, **all_kinds(services)) as served:
        query = f"session_id={await served.session_id()}&processes=decode,sizes"
        async with connected(served.url, query) as client:
            await client.frame()
            await client.frame()
            assert sorted((await client.next("result"))["result"]) == ["decode", "sizes"]
        bad = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await bad.connect(served.url, f"session_id={await served.session_id()}&processes=x")
        await bad.close()
        assert "unknown" in bad.refusal["data"]["error"]

    async with (
        serve(tmp_path, window_frames=2, emit_result=False, services={}) as served,
        connected(served.url, f"session_id={await served.session_id()}") as client,
    ):
        await client.frame()
        await client.frame()
        stream = served.analysis.streams.streams()[0]
        await stream.drain()
        assert stream.windows_done == 1
        await asyncio.sleep(0.1)
        assert client.pending("result") == []


async def test_configured_ids_a_custom_query_name_and_auth(tmp_path: Path) -> None:
    async with serve(
        tmp_path, allowed_session_ids=["cam-1", "cam-2", "cam-3"], session_id_name="sid_key"
    ) as served:
        async with connected(served.url, "sid_key=cam-1") as a:
            assert (await a.sio.call("test", None))["session_id"] == "cam-1"
        async with connected(served.url, auth={"sid_key": "cam-2"}) as b:
            assert (await b.sio.call("test", None))["session_id"] == "cam-2"
        # Long-polling first, then the upgrade: the client library's default.
        async with connected(served.url, "sid_key=cam-3", transports=None) as c:
            assert (await c.frame())["size"] == [64, 48]
            assert (await c.sio.call("test", None))["session_id"] == "cam-3"


async def test_generated_ids_on_connect(tmp_path: Path) -> None:
    async with serve(tmp_path, generate_session_id_on_connect=True) as served:
        async with connected(served.url) as client:
            made = (await client.next("session", timeout=5))["session_id"]
            assert (await client.sio.call("test", "x"))["session_id"] == made
        async with connected(served.url, "session_id=unknown-id") as client:
            other = (await client.next("session", timeout=5))["session_id"]
            assert other not in ("unknown-id", made)


async def test_timed_windows_close_without_another_frame(
    tmp_path: Path, services: AnalysisServices
) -> None:
    decode = {"decode": services.url("/decode")}
    async with (
        serve(tmp_path, window_frames=100, window_seconds=0.3, services=decode) as served,
        connected(served.url, f"session_id={await served.session_id()}") as client,
    ):
        await client.frame()
        await client.frame()
        result = await client.next("result", timeout=5)
        assert (result["frames"], result["closed_by"]) == (2, "seconds")
        assert result["result"]["decode"]["frames"] == 2


# -- section 4: bad input, each with another session unaffected --------------------------------


async def test_unknown_and_missing_ids_are_refused_with_a_reason(tmp_path: Path) -> None:
    async with serve(tmp_path) as served, peer(served) as other:
        for query, code in (
            ("session_id=made-up", "session_not_found"),
            ("", "invalid_input"),
            ("session_id=" + (await served.session_id())[:-2] + "AA", "session_not_found"),
        ):
            client = Client()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(served.url, query)
            await client.close()
            assert client.refusal["data"]["code"] == code, client.refusal
            assert client.refusal["message"]
        await still_fine(other)


async def test_an_id_serves_one_connection(tmp_path: Path) -> None:
    async with serve(tmp_path) as served:
        sid = await served.session_id()
        async with connected(served.url, f"session_id={sid}") as first:
            second = Client()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await second.connect(served.url, f"session_id={sid}")
            await second.close()
            assert second.refusal["data"]["code"] == "session_conflict"
            await still_fine(first)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"GIF89a not an image", "unsupported_media_type"),
        ("not base64 !!!", "invalid_image"),
        (jpeg(scene(64, 48))[:300], "invalid_image"),
        ({"picture": b"x"}, "invalid_image"),
        (12345, "invalid_image"),
        ({"image": None}, "invalid_image"),
    ],
)
async def test_bad_frames_get_errors_and_change_nothing(
    tmp_path: Path, payload: Any, code: str
) -> None:
    async with serve(tmp_path, window_frames=2) as served, peer(served) as other:
        async with connected(served.url, f"session_id={await served.session_id()}") as client:
            await client.frame()
            reply = await client.sio.call("process", payload, timeout=10)
            assert reply["code"] in (code, "invalid_input"), reply
            assert reply["event"] == "process"
            # Once, as the ack the client asked for; without one, as an error event.
            await client.sio.emit("process", payload)
            assert (await client.next("error"))["code"] == reply["code"]
            assert client.pending("error") == []
            good = await client.frame()
            assert (good["frame"], good["window"]) == (1, 0)  # the bad frame took no place
        await still_fine(other)


async def test_an_oversized_frame_is_refused_and_the_connection_stays(tmp_path: Path) -> None:
    async with serve(tmp_path, max_frame_bytes=20_000) as served, peer(served) as other:
        async with connected(served.url, f"session_id={await served.session_id()}") as client:
            noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)
            big = jpeg(noise, 95)
            assert 20_000 < len(big) < 1_000_000
            reply = await client.sio.call("process", big, timeout=10)
            assert reply["code"] == "payload_too_large"
            reply = await client.sio.call("process", b64(big), timeout=10)
            assert reply["code"] == "payload_too_large"
            assert (await client.frame())["frame"] == 0
        await still_fine(other)


async def test_a_frame_of_a_new_size_starts_a_new_window(
    tmp_path: Path, services: AnalysisServices
) -> None:
    async with (
        serve(tmp_path, window_frames=3, services={"decode": services.url("/decode")}) as served,
        peer(served) as other,
    ):
        async with connected(served.url, f"session_id={await served.session_id()}") as client:
            await client.frame(scene(64, 48))
            await client.frame(scene(64, 48))
            moved = await client.frame(scene(80, 60))
            assert moved["window"] == 1
            first = await client.next("result")
            assert (first["frames"], first["size"], first["closed_by"]) == (2, [64, 48], "size")
            assert first["result"]["decode"]["frames"] == 2
            await client.frame(scene(80, 60))
            await client.frame(scene(80, 60))
            second = await client.next("result")
            assert (second["frames"], second["size"]) == (3, [80, 60])
            assert (second["result"]["decode"]["width"], second["result"]["decode"]["height"]) == (
                80,
                60,
            )
        await still_fine(other)


async def test_a_disconnect_mid_window_loses_nothing_for_others(
    tmp_path: Path, services: AnalysisServices
) -> None:
    kinds = {"services": {"decode": services.url("/decode")}, "pipelines": {"sizes": [SIZES]}}
    async with (
        serve(tmp_path, window_frames=3, **kinds) as served,
        connected(served.url, f"session_id={await served.session_id()}") as other,
    ):
        async with connected(served.url, f"session_id={await served.session_id()}") as leaving:
            await leaving.frame()
            await other.frame()
            await leaving.frame()
        # It left with a half-full window: dropped, its pipeline session ended.
        for _ in range(100):
            if len(served.analysis.streams) == 1:
                break
            await asyncio.sleep(0.02)
        assert len(served.analysis.streams) == 1
        await other.frame()
        await other.frame()
        result = await other.next("result")
        assert result["result"]["decode"]["frames"] == 3
        assert [x["seen"] for x in result["result"]["sizes"]["results"]] == [1, 2, 3]


async def test_a_flooding_client_gets_errors_not_a_queue(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, window_frames=1000, max_inflight_events=2) as served,
        peer(served) as other,
        connected(served.url, f"session_id={await served.session_id()}") as flood,
    ):
        frame = jpeg(scene(320, 240))
        for _ in range(60):
            await flood.sio.emit("process", frame)  # no waiting for replies
        errors: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            while True:
                errors.append(await flood.next("error", timeout=2))
        stream = served.analysis.streams.streams()[-1]
        assert errors, "expected capacity errors"
        assert {e["code"] for e in errors} == {"capacity_exceeded"}
        assert stream.frames_refused == len(errors)
        assert stream.inflight == 0
        assert stream.frames_accepted + len(errors) == 60
        await still_fine(other)
        assert (await flood.frame())["frame"] == stream.frames_accepted - 1


async def test_windows_beyond_the_analysis_limit_are_dropped_and_reported(
    tmp_path: Path, services: AnalysisServices
) -> None:
    slow = {"slow": {"url": services.url("/slow?seconds=1"), "timeout_s": 5}}
    async with (
        serve(tmp_path, window_frames=1, max_windows_in_flight=1, services=slow) as served,
        peer(served) as other,
    ):
        async with connected(served.url, f"session_id={await served.session_id()}") as client:
            await client.frame()
            await client.frame()  # the first window is still with the slow service
            error = await client.next("error")
            assert error["code"] == "capacity_exceeded"
            assert error["window"] == 1
            result = await client.next("result", timeout=10)
            assert result["window"] == 0
            assert result["result"]["slow"] == {"slow": True}
        await still_fine(other)


def test_the_ack_hook_fits_the_installed_python_socketio() -> None:
    # If a release renames or reshapes it, errors would go out twice: this says so first.
    assert ack_hook_fits()
