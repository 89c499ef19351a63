"""LiveClient and SyncLiveClient against the real people counter (the bundled clip, looped),
including a server that is killed and started again under the client's feet, and a listener
that holds all the connections it may."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from framebroker.client import (
    Backoff,
    ConnectionFailed,
    ConnectionLost,
    InvalidRequest,
    LiveClient,
    LiveEvent,
    LiveFrame,
    LiveStats,
    NotFound,
    ServiceUnavailable,
    SyncLiveClient,
    TrackingClient,
    Unauthorized,
)
from framebroker.media.sources import demo_clip

from ...in_process import free_port
from ..server import RunningServer
from .conftest import (
    KEY,
    TIGHT_CONNECTIONS,
    Keyed,
    Tight,
    leaves_no_socket_open,
    loop_threads,
    server_on,
)

FAST = Backoff(initial_s=0.2, max_s=1.0)


class Live:
    def __init__(self, port: int, data: Path) -> None:
        self.port = port
        self.data = data
        self.url = f"ws://127.0.0.1:{port}/ws/live"

    def serve(self):  # type: ignore[no-untyped-def]
        return server_on(self.port, self.data, "--source", f"door={demo_clip()}", "--loop")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, RunningServer]]:
    setup = Live(free_port(), tmp_path_factory.mktemp("live"))
    with setup.serve() as running:
        yield setup, running


async def first_of(client: LiveClient, kind: type, limit: int = 200) -> object:
    for _ in range(limit):
        message = await asyncio.wait_for(anext(client), 30)
        if isinstance(message, kind):
            return message
    raise AssertionError(f"no {kind.__name__} in {limit} messages")


async def test_frames_stats_and_faces(live: tuple[Live, RunningServer]) -> None:
    setup, _ = live
    async with LiveClient(setup.url, source="door") as client:
        frame = await first_of(client, LiveFrame)
        assert isinstance(frame, LiveFrame)
        assert frame.image().shape == (480, 640, 3)
        stats = await first_of(client, LiveStats)
        assert isinstance(stats, LiveStats)
        assert stats.count_in >= 0
        assert stats.timestamp
        faces = await client.get_all_faces(limit=5)
        assert len(faces) <= 5
        for face in faces:
            assert face.jpeg.startswith(b"\xff\xd8")
            assert (await client.get_face(face.face_id)).jpeg == face.jpeg
        with pytest.raises(NotFound) as missing:
            await client.get_face(10**9)
        assert (missing.value.code, missing.value.field) == ("face_not_found", "face_id")
        with pytest.raises(InvalidRequest) as bad:
            await client.get_all_faces(limit=10_000)
        assert bad.value.status == 400
        # The socket is still good after the refusals.
        assert isinstance(await first_of(client, LiveStats), LiveStats)


def test_the_sync_client_iterates_and_asks_for_faces(live: tuple[Live, RunningServer]) -> None:
    setup, _ = live
    with SyncLiveClient(setup.url, source="door") as client:
        seen: dict[type, object] = {}
        for message in client.messages(timeout=30):
            seen.setdefault(type(message), message)
            if LiveFrame in seen and LiveStats in seen:
                break
        frame = seen[LiveFrame]
        assert isinstance(frame, LiveFrame)
        assert frame.image().shape == (480, 640, 3)
        faces = client.get_all_faces(limit=5)
        assert len(faces) <= 5
        for face in faces:
            assert client.get_face(face.face_id).jpeg == face.jpeg
        with pytest.raises(NotFound) as missing:
            client.get_face(10**9)
        assert (missing.value.code, missing.value.field) == ("face_not_found", "face_id")
        # The plain ``for message in client`` goes on where the last iteration stopped.
        assert isinstance(next(iter(client)), LiveFrame | LiveStats | LiveEvent)
        assert client.frames_dropped >= 0
    assert loop_threads() == []
    assert list(client) == []  # a closed client's iteration ends, as the async one's
    with pytest.raises(ConnectionLost):
        client.get_all_faces()
    client.close()  # twice: nothing more


def test_the_example_prints_the_counts(live: tuple[Live, RunningServer]) -> None:
    setup, _ = live
    example = Path(__file__).resolve().parents[3] / "examples" / "count_people.py"
    assert len(example.read_text().splitlines()) < 30
    proc = subprocess.Popen(
        [sys.executable, str(example), setup.url, "door"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first counts come within half a second
        assert re.fullmatch(r"in \d+  out \d+\n", line), (line, proc.stderr)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


async def test_reconnects_after_the_server_is_killed_and_restarted(
    live: tuple[Live, RunningServer],
) -> None:
    """Last of the tests on ``live``: its server is stopped at the end."""
    setup, running = live
    async with LiveClient(setup.url, backoff=FAST) as client:
        await first_of(client, LiveStats)
        running.stop(signal.SIGKILL)
        # While it is down: the others cannot connect, and a listener that may not
        # reconnect ends with the lost connection.
        with (
            TrackingClient(setup.url.replace("ws://", "http://"), retries=1) as tracking,
            pytest.raises(ConnectionFailed, match="connection refused"),
        ):
            tracking.list_sessions()
        with pytest.raises(ConnectionFailed):
            await LiveClient(setup.url, retries=0).connect()
        with setup.serve():
            stats = await first_of(client, LiveStats)
            assert isinstance(stats, LiveStats)
            assert client.reconnects == 1


async def test_a_listener_that_may_not_reconnect_raises_connection_lost(
    tmp_path: Path,
) -> None:
    port = free_port()
    with server_on(port, tmp_path) as running:
        client = LiveClient(f"ws://127.0.0.1:{port}/ws/live", max_reconnects=1, backoff=FAST)
        await client.connect()
        try:
            running.stop(signal.SIGKILL)
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(anext(client), 30)
            with pytest.raises(ConnectionLost):
                await client.get_all_faces()
        finally:
            await client.close()


async def test_the_key_goes_first_and_a_wrong_one_is_told_at_once(keyed: Keyed) -> None:
    async with LiveClient(keyed.url, api_key=KEY, verify=keyed.cafile) as client:
        assert isinstance(await client.get_all_faces(), list)
    wrong = LiveClient(keyed.url, api_key="wrong-" + "x" * 20, verify=keyed.cafile)
    with leaves_no_socket_open(), pytest.raises(Unauthorized) as refused:
        await asyncio.wait_for(wrong.connect(), 5)
    assert refused.value.status == 401


async def test_no_server_is_a_connection_failed_that_leaves_nothing_open() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws/live"
    with leaves_no_socket_open(), pytest.raises(ConnectionFailed, match="connection refused"):
        await LiveClient(url, retries=1, backoff=FAST).connect()


def test_the_sync_client_raises_the_lost_connection_from_its_iteration(tmp_path: Path) -> None:
    port = free_port()
    with server_on(port, tmp_path) as running:
        url = f"ws://127.0.0.1:{port}/ws/live"
        with SyncLiveClient(url, max_reconnects=1, backoff=FAST) as client:
            running.stop(signal.SIGKILL)
            with pytest.raises(ConnectionLost):
                for _ in client.messages(timeout=30):
                    pass
    assert loop_threads() == []


def test_the_sync_client_is_told_a_wrong_key_and_leaves_no_thread(keyed: Keyed) -> None:
    with SyncLiveClient(keyed.url, api_key=KEY, verify=keyed.cafile) as client:
        assert isinstance(client.get_all_faces(), list)
    with (
        pytest.raises(Unauthorized) as refused,
        SyncLiveClient(keyed.url, api_key="wrong-" + "x" * 20, verify=keyed.cafile, timeout=5),
    ):
        pass
    assert refused.value.status == 401
    assert loop_threads() == []


async def test_503_when_the_listener_holds_max_connections(tight: Tight) -> None:
    """Every open socket counts against ``limits.max_connections``; one more is refused in
    its handshake with 503 and ``Retry-After``, which a client that may retry waits out."""
    url = f"{tight.ws}/ws/live"
    held: list[LiveClient] = []
    try:
        for _ in range(TIGHT_CONNECTIONS + 1):
            client = LiveClient(url, retries=0)
            try:
                await client.connect()
            except ServiceUnavailable:
                break
            held.append(client)
        assert 0 < len(held) <= TIGHT_CONNECTIONS
        with leaves_no_socket_open(), pytest.raises(ServiceUnavailable) as full:
            await LiveClient(url, retries=0).connect()
        assert (full.value.status, full.value.code) == (503, "too_many_connections")
        assert full.value.retry_after_s == 1
        with (
            leaves_no_socket_open(),
            pytest.raises(ServiceUnavailable),
            SyncLiveClient(url, retries=0),
        ):
            pass
        assert loop_threads() == []
        patient = LiveClient(url, retries=3)
        waiting = asyncio.create_task(patient.connect())
        await asyncio.sleep(0.3)
        await held.pop().close()  # a place frees up while it waits out Retry-After
        await asyncio.wait_for(waiting, 10)
        held.append(patient)
        assert isinstance(await patient.get_all_faces(), list)
    finally:
        for client in held:
            await client.close()
