"""WebRTCClient and SyncWebRTCClient against the real model broker over WSS and HTTPS
(custom CA, API key): the test model reads back the frame number drawn into each picture."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from framebroker.client import (
    ConnectionFailed,
    ConnectionLost,
    NotFound,
    PayloadTooLarge,
    Prediction,
    RateLimited,
    ServiceUnavailable,
    StreamResult,
    SyncWebRTCClient,
    TrackingClient,
    Unauthorized,
    WebRTCClient,
)

from ...in_process import free_port
from ...tools.clips import picture, write_clip
from .conftest import KEY, Keyed, Tight, killable, leaves_no_socket_open, loop_threads
from .test_tracking_client import server_full


async def test_arrays_over_the_websocket_predictions_then_the_result(keyed: Keyed) -> None:
    client = WebRTCClient(f"{keyed.ws}/webrtc/ws", api_key=KEY, verify=keyed.cafile)
    frames = (picture(i) for i in range(20))
    async with client.stream(frames, fps=20) as stream:
        assert stream.session_id
        messages = [message async for message in stream]
    predictions = [m for m in messages if isinstance(m, Prediction)]
    assert predictions
    assert all(p.model == "frame_number" for p in predictions)
    drawn = [p.data["drawn_index"] for p in predictions]
    assert drawn == sorted(drawn)
    assert isinstance(messages[-1], StreamResult)
    assert stream.result is messages[-1]
    assert stream.result.data["frames_seen"] >= len(predictions)
    assert stream.result.data["last_drawn"] <= 19


async def test_a_file_with_the_offer_over_https(keyed: Keyed, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", seconds=1, fps=10)
    client = WebRTCClient(keyed.url, api_key=KEY, verify=keyed.cafile, timeout=20)
    async with client.stream(str(clip)) as stream:
        async for message in stream:
            if isinstance(message, Prediction):
                assert message.data["drawn_index"] >= 0
    assert stream.result is not None
    assert stream.result.reason == "client_ended"


async def test_a_wrong_key_is_401_over_either_signaling(keyed: Keyed) -> None:
    """A refused stream leaves no socket open: signaling, HTTP, and the peer connection's
    own (ICE) sockets; the same when ``open()`` is called outside ``async with``."""
    for url in (f"{keyed.ws}/webrtc/ws", keyed.url):
        client = WebRTCClient(url, api_key="wrong-" + "x" * 20, verify=keyed.cafile)
        with leaves_no_socket_open(), pytest.raises(Unauthorized) as refused:
            async with client.stream(picture(i) for i in range(5)):
                pass
        assert refused.value.status == 401
        with leaves_no_socket_open(), pytest.raises(Unauthorized):
            await client.stream(picture(i) for i in range(5)).open()


async def test_no_server_is_a_connection_failed_that_leaves_nothing_open() -> None:
    port = free_port()
    for url in (f"ws://127.0.0.1:{port}/webrtc/ws", f"http://127.0.0.1:{port}"):
        client = WebRTCClient(url, retries=0)
        with leaves_no_socket_open(), pytest.raises(ConnectionFailed):
            async with client.stream(picture(i) for i in range(5)):
                pass


async def test_503_when_the_server_is_full(keyed: Keyed) -> None:
    client = WebRTCClient(f"{keyed.ws}/webrtc/ws", api_key=KEY, verify=keyed.cafile, retries=0)
    tracking = TrackingClient(keyed.url, api_key=KEY, verify=keyed.cafile, retries=0)
    with (
        tracking,
        server_full(tracking),
        leaves_no_socket_open(),
        pytest.raises(ServiceUnavailable) as full,
    ):
        async with client.stream(picture(i) for i in range(5)):
            pass
    assert full.value.status == 503


def test_the_sync_client_streams_arrays_and_iterates_to_the_result(keyed: Keyed) -> None:
    client = SyncWebRTCClient(f"{keyed.ws}/webrtc/ws", api_key=KEY, verify=keyed.cafile)
    with client.stream((picture(i) for i in range(20)), fps=20) as stream:
        assert stream.session_id
        messages = list(stream)
    assert loop_threads() == []
    predictions = [m for m in messages if isinstance(m, Prediction)]
    assert predictions
    assert stream.predictions == len(predictions)
    drawn = [p.data["drawn_index"] for p in predictions]
    assert drawn == sorted(drawn)
    assert isinstance(messages[-1], StreamResult)
    assert stream.result is messages[-1]
    assert stream.result.data["frames_seen"] >= len(predictions)


def test_the_sync_client_ends_a_file_early_over_https(keyed: Keyed, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", seconds=3, fps=10)
    client = SyncWebRTCClient(keyed.url, api_key=KEY, verify=keyed.cafile, timeout=20)
    with client.stream(str(clip)) as stream:
        for message in stream:
            if isinstance(message, Prediction):
                stream.end()  # the result, now: the rest of the file is not sent
    assert stream.result is not None
    assert stream.result.reason == "client_ended"
    assert loop_threads() == []


def test_the_sync_client_raises_a_refused_offer_and_leaves_no_thread(keyed: Keyed) -> None:
    client = SyncWebRTCClient(
        f"{keyed.ws}/webrtc/ws", api_key="wrong-" + "x" * 20, verify=keyed.cafile
    )
    with pytest.raises(Unauthorized) as refused, client.stream(picture(i) for i in range(5)):
        pass
    assert refused.value.status == 401
    assert loop_threads() == []


async def test_429_when_the_client_holds_its_share_of_sessions(tight: Tight) -> None:
    """``limits.max_sessions_per_client`` is 1: while one stream is open, another offer from
    the same address is refused with 429 over either signaling, before any ICE work."""
    holder = WebRTCClient(f"{tight.ws}/webrtc/ws")
    async with holder.stream((picture(i % 50) for i in range(100_000)), fps=5) as held:
        assert held.session_id
        for url in (f"{tight.ws}/webrtc/ws", tight.url):
            client = WebRTCClient(url, retries=0)
            with pytest.raises(RateLimited) as limited:
                async with client.stream(picture(i) for i in range(5)):
                    pass
            assert (limited.value.status, limited.value.code) == (429, "client_session_limit")
            assert limited.value.body.get("limit") == "max_sessions_per_client"

        def offer_from_the_sync_client() -> None:  # off this test's loop, which runs the holder
            sync = SyncWebRTCClient(f"{tight.ws}/webrtc/ws", retries=0)
            with sync.stream(picture(i) for i in range(5)):
                pass

        with pytest.raises(RateLimited):
            await asyncio.to_thread(offer_from_the_sync_client)
    assert loop_threads() == []


async def test_a_server_that_dies_mid_stream_is_connection_lost(tmp_path: Path) -> None:
    with killable(tmp_path / "server") as running:
        client = WebRTCClient(f"{running.url.replace('http', 'ws')}/webrtc/ws", timeout=10)
        async with client.stream((picture(i % 50) for i in range(100_000)), fps=10) as stream:
            async for message in stream:
                if isinstance(message, Prediction):
                    break
            running.stop(signal.SIGKILL)
            with pytest.raises(ConnectionLost):
                async for _ in stream:
                    pass


async def test_an_offer_to_a_wrong_path_is_404(keyed: Keyed) -> None:
    """The only 404 of this API: signaling has none (a WebSocket to no route is refused
    with 403 by the server, before any signaling)."""
    client = WebRTCClient(f"{keyed.url}/nowhere", api_key=KEY, verify=keyed.cafile)
    with leaves_no_socket_open(), pytest.raises(NotFound) as missing:
        async with client.stream(picture(i) for i in range(5)):
            pass
    assert missing.value.status == 404


async def test_an_offer_over_max_message_bytes_is_413(tmp_path: Path) -> None:
    """An SDP offer is a few kilobytes: over a limit of 1 KB, either signaling refuses it."""
    with killable(tmp_path, "[webrtc]\nmax_message_bytes = 1024\n") as running:
        for url in (f"{running.url.replace('http', 'ws')}/webrtc/ws", running.url):
            client = WebRTCClient(url, retries=0)
            with leaves_no_socket_open(), pytest.raises(PayloadTooLarge) as big:
                async with client.stream(picture(i) for i in range(5)):
                    pass
            assert big.value.status == 413
