"""VideoAnalysisClient and SyncVideoAnalysisClient against the real Socket.IO server over
HTTPS (custom CA, API key), windows of 2 frames."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from framebroker.client import (
    ConnectionFailed,
    ConnectionLost,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    SyncVideoAnalysisClient,
    Timeout,
    Unauthorized,
    VideoAnalysisClient,
)
from framebroker.media.sources import demo_clip

from ...in_process import free_port
from ...transports.images import scene
from .conftest import KEY, MAX_SESSIONS, Keyed, killable, leaves_no_socket_open, loop_threads


def client(keyed: Keyed, **kwargs: object) -> VideoAnalysisClient:
    kwargs.setdefault("api_key", KEY)
    return VideoAnalysisClient(keyed.url, verify=keyed.cafile, **kwargs)  # type: ignore[arg-type]


async def test_frames_in_windows_out(keyed: Keyed) -> None:
    async with client(keyed) as analysis:
        assert analysis.session_id
        echoed = await analysis.test({"hello": 1})
        assert echoed == {"data": {"hello": 1}, "session_id": analysis.session_id}
        acks = [await analysis.process(scene(64, 48)) for _ in range(3)]
        assert [(a.frame, a.window) for a in acks] == [(0, 0), (1, 0), (2, 1)]
        assert acks[0].size == [64, 48]
        result = await analysis.next_result(10)
        assert (result.session_id, result.window, result.frames) == (analysis.session_id, 0, 2)
        assert result.result == {}  # no services or pipelines configured
        assert (await analysis.options())["processes"] == []
        assert await analysis.batch(demo_clip()) == {}
    with pytest.raises(ConnectionLost):
        await analysis.process(scene(64, 48))


async def test_a_wrong_key_is_401_and_an_unknown_session_404(keyed: Keyed) -> None:
    """Each refusal leaves no socket open, the refused Socket.IO handshakes' TLS
    connections included (aiohttp closes those a round trip after it returns)."""
    with leaves_no_socket_open(), pytest.raises(Unauthorized) as refused:
        await client(keyed, api_key="wrong-" + "x" * 20, session_id="whatever").connect()
    assert refused.value.code == "unauthorized"
    with leaves_no_socket_open(), pytest.raises(Unauthorized):  # the HTTP side asks too
        await client(keyed, api_key=None).connect()
    with leaves_no_socket_open(), pytest.raises(NotFound) as unknown:
        await client(keyed, session_id="not-a-session-id").connect()
    assert unknown.value.code == "session_not_found"


async def test_no_server_is_a_connection_failed_that_leaves_nothing_open() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with leaves_no_socket_open(), pytest.raises(ConnectionFailed, match="cannot connect"):
        await VideoAnalysisClient(url, session_id="given", retries=0).connect()
    with leaves_no_socket_open(), pytest.raises(ConnectionFailed):
        await VideoAnalysisClient(url, retries=0).connect()  # asking for the id


async def test_a_frame_over_the_limit_is_413_and_the_session_goes_on(keyed: Keyed) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    async with client(keyed) as analysis:
        with pytest.raises(PayloadTooLarge) as big:
            await analysis.process(noise)
        assert (big.value.status, big.value.field) == (413, "image")
        assert (await analysis.process(scene(32, 24))).frame == 0


async def burst(analysis: VideoAnalysisClient) -> None:
    for _ in range(10):
        await analysis.process(scene(32, 24))


async def test_429_is_waited_out_or_raised(keyed: Keyed) -> None:
    async with client(keyed, retries=0) as eager:
        with pytest.raises(RateLimited) as limited:  # a burst of 4, then 4 a second
            await burst(eager)
        assert limited.value.code == "frame_rate_exceeded"
        assert limited.value.retry_after_s is not None
    async with client(keyed) as patient:
        started = time.monotonic()
        for _ in range(6):
            await patient.process(scene(32, 24))
        assert time.monotonic() - started >= 0.2


async def test_503_when_the_server_holds_its_streams(keyed: Keyed) -> None:
    """Socket.IO streams count against ``max_sessions`` on their own. Neither the refused
    client nor the closed ones leave a socket open."""
    held = []
    with leaves_no_socket_open():
        try:
            for _ in range(MAX_SESSIONS):
                analysis = client(keyed, retries=0)
                try:
                    await analysis.connect()
                except ServiceUnavailable:
                    break
                held.append(analysis)
            with leaves_no_socket_open(), pytest.raises(ServiceUnavailable) as full:
                await client(keyed, retries=0).connect()
            assert full.value.code == "capacity_exceeded"
        finally:
            for analysis in held:
                await analysis.close()


def test_the_sync_client_sends_frames_and_iterates_the_windows(keyed: Keyed) -> None:
    with SyncVideoAnalysisClient(keyed.url, api_key=KEY, verify=keyed.cafile) as analysis:
        assert analysis.session_id
        assert analysis.test({"hello": 1}) == {
            "data": {"hello": 1},
            "session_id": analysis.session_id,
        }
        acks = [analysis.process(scene(64, 48)) for _ in range(4)]
        assert [(a.frame, a.window) for a in acks] == [(0, 0), (1, 0), (2, 1), (3, 1)]
        first = analysis.next_result(10)
        assert (first.session_id, first.window, first.frames) == (analysis.session_id, 0, 2)
        # The iteration ends when no result comes for its timeout.
        assert [r.window for r in analysis.results(timeout=3)] == [1]
        with pytest.raises(Timeout):
            analysis.next_result(0.2)
        assert analysis.options()["processes"] == []
        assert analysis.batch(demo_clip()) == {}
        assert analysis.errors == []
    assert loop_threads() == []
    with pytest.raises(ConnectionLost):
        analysis.process(scene(64, 48))


def test_the_sync_client_raises_the_servers_refusals(keyed: Keyed) -> None:
    with (
        pytest.raises(Unauthorized) as refused,
        SyncVideoAnalysisClient(
            keyed.url, api_key="wrong-" + "x" * 20, session_id="whatever", verify=keyed.cafile
        ),
    ):
        pass
    assert refused.value.code == "unauthorized"
    assert loop_threads() == []
    with (
        leaves_no_socket_open(),
        pytest.raises(NotFound),
        SyncVideoAnalysisClient(keyed.url, api_key=KEY, session_id="x", verify=keyed.cafile),
    ):
        pass
    noise = np.random.default_rng(1).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    with SyncVideoAnalysisClient(keyed.url, api_key=KEY, verify=keyed.cafile) as analysis:
        with pytest.raises(PayloadTooLarge) as big:
            analysis.process(noise)
        assert (big.value.status, big.value.field) == (413, "image")
        assert analysis.process(scene(32, 24)).frame == 0


async def test_a_server_that_dies_ends_the_results_with_connection_lost(tmp_path: Path) -> None:
    """A session id serves one connection, so a dropped one is not reopened: the results
    and the next frame raise ConnectionLost."""
    with killable(tmp_path) as running:
        async with VideoAnalysisClient(running.url, timeout=5) as analysis:
            await analysis.process(scene(32, 24))
            running.stop(signal.SIGKILL)
            with pytest.raises(ConnectionLost):
                async for _ in analysis.results(timeout=20):
                    pass
            with pytest.raises(ConnectionLost):
                await analysis.process(scene(32, 24))
