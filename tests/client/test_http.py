"""A connection the server drops mid-request: a frame is not sent twice, a read is."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from framebroker.client import Backoff, ConnectionLost, FramesClient, TrackingClient


class Dropper:
    """Accepts connections, reads a little of each request, and hangs up without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.recv(65536)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dropper() -> Iterator[Dropper]:
    server = Dropper()
    yield server
    server.close()


FAST = Backoff(initial_s=0.01, max_s=0.02)


def test_a_dropped_frame_is_raised_at_once_a_dropped_read_retried(dropper: Dropper) -> None:
    with TrackingClient(dropper.url, retries=2, backoff=FAST) as client:
        with pytest.raises(ConnectionLost):
            client.track("s", [[1, 2, 3, 4, 0.9, 0]])
        assert dropper.accepted == 1
        with pytest.raises(ConnectionLost):
            client.list_sessions()
        assert dropper.accepted == 1 + 3


def test_the_frames_client_reports_a_dropped_connection(dropper: Dropper) -> None:
    with (
        FramesClient(f"{dropper.url}/", retries=2, backoff=FAST) as frames,
        pytest.raises(ConnectionLost, match="the connection was lost"),
    ):
        frames.post(np.zeros((4, 4, 3), np.uint8))
