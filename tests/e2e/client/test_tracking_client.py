"""TrackingClient and AsyncTrackingClient against the real server over HTTPS with a custom
CA and an API key: the happy path, and every refusal a client can meet."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from framebroker.client import (
    AsyncTrackingClient,
    Backoff,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    TrackingClient,
    TransportError,
    Unauthorized,
)

from ...transports.images import scene
from .conftest import KEY, MAX_BODY, MAX_SESSIONS, Keyed, killable, leaves_no_socket_open

FAST = Backoff(initial_s=0.05, max_s=0.2)


def walking(step: int) -> list[list[float]]:
    return [[20 + 4 * step, 30, 40, 80, 0.9, 0], [300 - 4 * step, 60, 40, 80, 0.8, 2]]


@pytest.fixture
def client(keyed: Keyed) -> Iterator[TrackingClient]:
    with TrackingClient(keyed.url, api_key=KEY, verify=keyed.cafile, backoff=FAST) as c:
        yield c


def test_tracks_boxes_draws_class_names_and_converts_to_supervision(
    client: TrackingClient,
) -> None:
    session = client.create_session(class_names={0: "person", 2: "car"})
    assert session.state == "active"
    assert session.pipeline == ["bytetrack", "annotate"]
    image = scene(640, 480)
    for step in range(3):
        result = client.track(session.id, walking(step), image=image)
    assert {t.track_id for t in result.tracks} == {1, 2}
    first = next(t for t in result.tracks if t.row_index == 0)
    assert first.box == (28.0, 30.0, 40.0, 80.0)
    assert first.xyxy == (28.0, 30.0, 68.0, 110.0)
    assert first.class_id == 0
    annotated = result.annotated_image()
    assert annotated is not None
    assert annotated.shape == image.shape
    assert result.annotated_jpeg is not None
    assert result.annotated_jpeg.startswith(b"\xff\xd8")
    detections = result.to_supervision()
    assert isinstance(detections, sv.Detections)
    assert sorted(detections.tracker_id.tolist()) == [1, 2]

    # supervision Detections go in as xyxy boxes, and the tracks go on.
    sent = sv.Detections(
        xyxy=np.array([[40.0, 30, 80, 110], [280, 60, 320, 140]]),
        confidence=np.array([0.9, 0.8]),
        class_id=np.array([0, 2]),
    )
    again = client.track(session.id, sent)
    assert {t.track_id for t in again.tracks} == {1, 2}
    assert again.tracks[0].box_format == "xyxy"

    assert session.id in {s.id for s in client.list_sessions()}
    ended = client.end_session(session.id)
    assert ended.state == "ended"
    assert ended.summary is not None
    assert client.get_session(session.id).summary is not None


def test_class_names_are_drawn_instead_of_numbers(client: TrackingClient) -> None:
    """The label's width tells ``#1 person`` from ``#1 0``: more label pixels are filled."""
    image = np.full((240, 320, 3), 255, np.uint8)
    filled = []
    for names in (None, ["person"]):
        session = client.create_session(class_names=names)
        for step in range(2):
            result = client.track(session.id, [[100 + step, 100, 60, 100, 0.9, 0]], image=image)
        annotated = result.annotated_image()
        assert annotated is not None
        label_band = annotated[60:100, 90:240]
        filled.append(int((np.abs(label_band.astype(int) - 255).sum(axis=2) > 60).sum()))
        client.end_session(session.id)
    assert filled[1] > filled[0] * 1.5, filled


async def test_the_async_client_does_the_same(keyed: Keyed) -> None:
    async with AsyncTrackingClient(keyed.url, api_key=KEY, verify=keyed.cafile) as client:
        session = await client.create_session()
        for step in range(3):
            result = await client.track(session.id, np.array(walking(step)))
        assert [t.track_id for t in result.tracks] == [1, 2]
        assert result.annotated_jpeg is None
        with pytest.raises(NotFound) as missing:
            await client.track("no-such-session", walking(0))
        assert missing.value.code == "session_not_found"
        assert (await client.end_session(session.id)).state == "ended"


def test_a_missing_or_wrong_key_is_401(keyed: Keyed) -> None:
    """A refused client, once closed, leaves no socket open, sync or async."""
    for key in (None, "wrong-" + "x" * 20):
        with (
            leaves_no_socket_open(),
            TrackingClient(keyed.url, api_key=key, verify=keyed.cafile) as client,
        ):
            with pytest.raises(Unauthorized) as refused:
                client.list_sessions()
            assert refused.value.status == 401
            assert refused.value.code == "unauthorized"


async def test_the_async_client_is_refused_and_closes_its_connections(keyed: Keyed) -> None:
    with leaves_no_socket_open():
        async with AsyncTrackingClient(keyed.url, verify=keyed.cafile) as client:
            with pytest.raises(Unauthorized):
                await client.create_session()


def test_an_untrusted_certificate_cannot_connect(keyed: Keyed) -> None:
    with (
        leaves_no_socket_open(),
        TrackingClient(keyed.url, api_key=KEY, retries=0) as client,
        pytest.raises(ConnectionFailed, match="certificate is not trusted"),
    ):
        client.list_sessions()
    with TrackingClient(keyed.url, api_key=KEY, verify=False) as client:
        client.list_sessions()


def test_404_and_400_carry_the_server_code_and_field(client: TrackingClient) -> None:
    with pytest.raises(NotFound) as missing:
        client.get_session("never-was")
    assert (missing.value.code, missing.value.field) == ("session_not_found", "session_id")
    session = client.create_session()
    with pytest.raises(InvalidRequest) as bad:
        client.track(session.id, [[1, 2, 3, 4, 0.5, 0], [1, 2, 3]])
    assert bad.value.status == 400
    assert (bad.value.code, bad.value.field) == ("invalid_boxes", "boxes[1]")
    client.end_session(session.id)


def test_a_body_over_the_limit_is_413(client: TrackingClient) -> None:
    session = client.create_session()
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    with pytest.raises(PayloadTooLarge) as big:
        client.track(session.id, walking(0), image=noise)
    assert big.value.status == 413
    assert big.value.code == "payload_too_large"
    assert str(MAX_BODY) in big.value.message
    client.end_session(session.id)


def burst(client: TrackingClient, session_id: str) -> None:
    for step in range(10):
        client.track(session_id, walking(step))


def test_429_says_when_to_retry_and_the_client_waits_that_long(keyed: Keyed) -> None:
    with TrackingClient(keyed.url, api_key=KEY, verify=keyed.cafile, retries=0) as eager:
        session = eager.create_session()
        with pytest.raises(RateLimited) as limited:  # a burst of 4, then 4 a second
            burst(eager, session.id)
        assert limited.value.code == "frame_rate_exceeded"
        assert limited.value.retry_after_s is not None
        assert limited.value.retry_after_s >= 1
    with TrackingClient(keyed.url, api_key=KEY, verify=keyed.cafile) as patient:
        started = time.monotonic()
        result = patient.track(session.id, walking(11))  # waits for Retry-After, then works
        assert time.monotonic() - started >= 0.9
        assert result.frame_index >= 0
        patient.end_session(session.id)


@contextlib.contextmanager
def server_full(client: TrackingClient) -> Iterator[None]:
    """Sessions until the server holds ``max_sessions``; ended afterwards."""
    made = []
    try:
        for _ in range(MAX_SESSIONS):
            try:
                made.append(client.create_session().id)
            except ServiceUnavailable:
                break
        yield
    finally:
        for sid in made:
            client.end_session(sid)


def test_503_when_the_server_is_full_is_retried_then_raised(keyed: Keyed) -> None:
    with TrackingClient(keyed.url, api_key=KEY, verify=keyed.cafile, retries=0) as client:
        with server_full(client):
            with pytest.raises(ServiceUnavailable) as full:
                client.create_session()
            assert full.value.status == 503
            assert full.value.code == "capacity_exceeded"
            slow = TrackingClient(
                keyed.url,
                api_key=KEY,
                verify=keyed.cafile,
                retries=2,
                backoff=Backoff(initial_s=0.2, jitter=0),
            )
            started = time.monotonic()
            with slow, pytest.raises(ServiceUnavailable):
                slow.create_session()
            assert time.monotonic() - started >= 0.2 + 0.4
        client.end_session(client.create_session().id)  # room again


def test_a_server_that_dies_is_a_transport_error(tmp_path: Path) -> None:
    """The kept-alive connection is dropped under the client: the next call cannot connect
    (tried again with backoff, then raised), whether it tracks a frame or reads."""
    with killable(tmp_path) as running, TrackingClient(running.url, backoff=FAST) as client:
        session = client.create_session()
        client.track(session.id, walking(0))
        running.stop(signal.SIGKILL)
        with pytest.raises(ConnectionFailed, match="connection refused"):
            client.track(session.id, walking(1))
        with pytest.raises(TransportError):
            client.list_sessions()
