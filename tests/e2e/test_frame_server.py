"""Seed 003 over real sockets: the server as `serve --compat` runs it, a real httpx client."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ..transports.images import scene
from ..transports.test_box_tracking import SEED_BOXES, SEED_TRACKED
from .server import compat_flags, free_port, running_server

ROOT = Path(__file__).resolve().parents[2]
PROCESSORS = "tests.transports.test_frame_upload"


def seed_frame(frame_no: int) -> dict[str, Any]:
    """What the seed's extract_frames posts, `source` included."""
    return {
        "timestamp": 1556855549.3732016 + frame_no / 30,
        "timestamp_str": "2019/05/03 03:52:29.37",
        "relative_timestamp_str": "00:00:00.00",
        "relative_timestamp": frame_no / 30,
        "frame_no": frame_no,
        "source": {"file": "M:\\Videos\\fractals.mkv", "video_fps": 30.0, "extract_fps": 1},
    }


def files(image: np.ndarray, frame: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": ("image.raw", image.tobytes(), "application/octet-stream"),
        "frame": ("frame.json", json.dumps(frame), "application/json"),
    }


def raw_request(port: int, head: bytes, body: bytes, *, close_early: bool = False) -> bytes:
    """Send a request by hand; with ``close_early``, hang up before the body is complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        if close_early:
            return b""
        # Read the head, then the body its Content-Length announces (it may come separately).
        reply = b""
        while b"\r\n\r\n" not in reply and (chunk := s.recv(65536)):
            reply += chunk
        head_end = reply.find(b"\r\n\r\n") + 4
        length = next(
            (int(line.split(b":", 1)[1]) for line in reply[:head_end].split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            0,
        )  # fmt: skip
        while len(reply) - head_end < length and (chunk := s.recv(65536)):
            reply += chunk
        return reply


def test_frame_upload_through_the_compat_listener_and_the_main_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server imports the test processors by module:attr, as a user's plugin would be.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    config = tmp_path / "framebroker.toml"
    config.write_text(
        f'[frames]\npipeline = ["{PROCESSORS}:FrameCounter", "{PROCESSORS}:MeanColour"]\n'
    )
    port = free_port()
    args = ("--config", str(config), *compat_flags(frames=port))
    image = scene(1920, 1080)
    mean = image.reshape(-1, 3).mean(axis=0)
    with running_server(tmp_path / "data", *args) as server, httpx.Client(timeout=30) as c:
        frames_url = f"http://127.0.0.1:{port}/"
        for i in range(3):
            frame = seed_frame(51 + i)
            r = c.post(frames_url, files=files(image, frame))
            assert r.status_code == 200, r.text
            body = r.json()
            assert {k: body[k] for k in frame} == frame  # every field, unmodified
            assert body["counter"] == {"frames": i + 1}  # one session for the one source
            assert body["colour"]["shape"] == [1080, 1920, 3]
            assert body["colour"]["mean_bgr"] == pytest.approx(mean, abs=1e-3)
            assert body["framebroker"]["ran"] == ["counter", "colour"]

        # The main port takes the same multipart at / and reaches the same session, while
        # JSON at / is still seed 000.
        r = c.post(f"{server.url}/", files=files(image, seed_frame(60)))
        assert r.json()["counter"] == {"frames": 4}
        r = c.post(f"{server.url}/", json={"boxes": SEED_BOXES}, headers={"Session-Id": "x"})
        assert r.json()["tracked_boxes"] == SEED_TRACKED

        # Too large: refused from the headers, before the 100 MB arrive.
        head = (
            b"POST / HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=abc\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        started = time.monotonic()
        reply = raw_request(port, head, b"--abc\r\n")
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"payload_too_large" in reply
        assert time.monotonic() - started < 5

        # A client that hangs up halfway through a frame: nothing else notices.
        request = httpx.Request("POST", frames_url, files=files(image, seed_frame(70)))
        body_bytes = request.read()
        head = (
            f"POST / HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: {request.headers['content-type']}\r\n"
            f"Content-Length: {len(body_bytes)}\r\n\r\n"
        ).encode()
        for _ in range(3):
            raw_request(port, head, body_bytes[: len(body_bytes) // 2], close_early=True)
        r = c.post(frames_url, files=files(image, seed_frame(71)))
        assert r.status_code == 200, r.text
        assert r.json()["counter"] == {"frames": 5}
        sessions = c.get(f"{server.url}/").json()["sessions"]
        assert len(sessions) == 2  # the source's session and seed 000's "x"

    assert server.proc.returncode == 0, server.output()
    assert "Traceback" not in server.output(), server.output()
