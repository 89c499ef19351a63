"""FramesClient and AsyncFramesClient against the real frame server (multipart ``POST /``)
over HTTPS with an API key."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from framebroker.client import (
    AsyncFramesClient,
    Backoff,
    FramesClient,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    TrackingClient,
    TransportError,
    Unauthorized,
)
from framebroker.client.images import encode_image

from ...transports.images import scene
from .conftest import KEY, MAX_BODY, Keyed, killable, leaves_no_socket_open
from .test_tracking_client import server_full


def test_posts_an_array_raw_and_gets_the_merged_reply(keyed: Keyed) -> None:
    image = scene(64, 48)
    with FramesClient(f"{keyed.url}/", api_key=KEY, verify=keyed.cafile) as frames:
        reply = frames.post(image, {"frame_no": 7, "timestamp": 12.5})
        # The array's size was declared for it, and every field comes back unchanged.
        assert reply["frame_no"] == 7
        assert (reply["width"], reply["height"]) == (64, 48)
        assert "session_id" in reply["framebroker"]
        again = frames.post(encode_image(image), {"frame_no": 8, "session": "s"})
        assert again["frame_no"] == 8
        assert frames.connections == 1


async def test_the_async_client_streams_the_same_frames(keyed: Keyed) -> None:
    async with AsyncFramesClient(
        f"{keyed.url}/", api_key=KEY, verify=keyed.cafile, session_id="async-frames"
    ) as frames:
        first = await frames.post(scene(32, 24), {"frame_no": 1})
        second = await frames.post(scene(32, 24), {"frame_no": 2})
    assert first["framebroker"]["session_id"] == second["framebroker"]["session_id"]
    assert second["framebroker"]["frame_index"] == 1


def test_a_missing_key_is_401_and_a_wrong_path_404(keyed: Keyed) -> None:
    """A refused client, once closed, leaves no socket open, sync or async."""
    with leaves_no_socket_open(), FramesClient(f"{keyed.url}/", verify=keyed.cafile) as frames:
        with pytest.raises(Unauthorized) as refused:
            frames.post(scene(32, 24))
        assert refused.value.code == "unauthorized"
    with FramesClient(f"{keyed.url}/nowhere", api_key=KEY, verify=keyed.cafile) as frames:
        with pytest.raises(NotFound) as missing:
            frames.post(scene(32, 24))
        assert missing.value.status == 404


async def test_the_async_client_is_refused_and_closes_its_connections(keyed: Keyed) -> None:
    with leaves_no_socket_open():
        async with AsyncFramesClient(f"{keyed.url}/", verify=keyed.cafile) as frames:
            with pytest.raises(Unauthorized):
                await frames.post(scene(32, 24))


def test_a_frame_over_the_body_limit_is_413(keyed: Keyed) -> None:
    big = np.zeros((600, 800, 3), np.uint8)  # 1.44 MB raw
    assert big.nbytes > MAX_BODY
    with FramesClient(f"{keyed.url}/", api_key=KEY, verify=keyed.cafile) as frames:
        with pytest.raises(PayloadTooLarge) as refused:
            frames.post(big, {"frame_no": 0})
        assert refused.value.status == 413


def burst(frames: FramesClient, image: np.ndarray) -> None:
    for i in range(10):
        frames.post(image, {"frame_no": i})


def test_429_is_waited_out_or_raised_with_retry_after(keyed: Keyed) -> None:
    image = scene(32, 24)
    with FramesClient(
        f"{keyed.url}/", api_key=KEY, verify=keyed.cafile, retries=0, session_id="burst"
    ) as eager:
        with pytest.raises(RateLimited) as limited:  # a burst of 4, then 4 a second
            burst(eager, image)
        assert limited.value.code == "frame_rate_exceeded"
        assert limited.value.retry_after_s is not None
    with FramesClient(
        f"{keyed.url}/", api_key=KEY, verify=keyed.cafile, session_id="burst"
    ) as patient:
        started = time.monotonic()
        for i in range(10, 16):
            patient.post(image, {"frame_no": i})
        assert time.monotonic() - started >= 0.9


def test_503_when_the_server_holds_its_sessions(keyed: Keyed) -> None:
    tracking = TrackingClient(keyed.url, api_key=KEY, verify=keyed.cafile, retries=0)
    frames = FramesClient(
        f"{keyed.url}/",
        api_key=KEY,
        verify=keyed.cafile,
        retries=1,
        backoff=Backoff(initial_s=0.05),
        session_id="one-too-many",
    )
    with tracking, frames, server_full(tracking):
        with pytest.raises(ServiceUnavailable) as full:
            frames.post(scene(32, 24))
        assert full.value.code == "capacity_exceeded"


def test_a_server_that_dies_is_a_transport_error(tmp_path: Path) -> None:
    """The kept-alive connection is dropped under the client: the next frame is not sent
    twice, but raised as a lost or failed connection."""
    with killable(tmp_path) as running, FramesClient(f"{running.url}/", retries=1) as frames:
        assert frames.post(scene(32, 24), {"frame_no": 0})["frame_no"] == 0
        running.stop(signal.SIGKILL)
        with pytest.raises(TransportError):
            frames.post(scene(32, 24), {"frame_no": 1})
