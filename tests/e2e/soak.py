"""A soak: many short sessions over the HTTP and WebSocket transports against a real server,
with fresh session ids all the time, measuring what the server holds before and after.

Used by ``tests/e2e/test_soak.py`` (a short run in CI) and ``benchmarks/soak.py`` (the long
run, with its figures). Every frame must be answered: a 200, or a 503 that the server counts
as dropped; anything else is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets

from framebroker.media.image import encode_jpeg_base64

BOXES = [[100, 100, 40, 90, 90, 0], [300, 120, 42, 95, 85, 0]]


@dataclass
class Footprint:
    """What the server process holds at one moment."""

    rss_mb: float
    fds: int
    tasks: int
    sessions: int

    @classmethod
    def of(cls, pid: int, url: str) -> Footprint:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        text = httpx.get(f"{url}/metrics", timeout=10).text
        tasks = _gauge(text, "framebroker_event_loop_tasks")
        sessions = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("framebroker_sessions{")
        )
        return cls(rss_kb / 1024, fds, int(tasks), int(sessions))


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


@dataclass
class Tally:
    frames: int = 0
    answered: int = 0
    dropped: int = 0
    sessions: int = 0
    listeners: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, status: int, what: str) -> None:
        self.frames += 1
        if status == 200:
            self.answered += 1
        elif status == 503:
            self.dropped += 1
        elif len(self.failures) < 20:
            self.failures.append(f"{what}: HTTP {status}")


async def _tracking_worker(http: httpx.AsyncClient, image: str, stop: float, t: Tally) -> None:
    """Seed 000: a fresh session id, a few frames of boxes (one with a picture), then end."""
    while time.monotonic() < stop:
        headers = {"Session-Id": "soak-" + secrets.token_hex(6)}
        for i in range(5):
            body: dict[str, object] = {"boxes": BOXES}
            if i == 0:
                body["image"] = image
            r = await http.post("/", json=body, headers=headers)
            t.check(r.status_code, "POST / (json)")
        r = await http.delete("/", headers=headers)
        if r.status_code == 200:
            t.sessions += 1


async def _frames_worker(http: httpx.AsyncClient, raw: bytes, stop: float, t: Tally) -> None:
    """Seed 003: multipart frames of a new source every few frames (a new session each)."""
    while time.monotonic() < stop:
        source = {"file": f"clip-{secrets.token_hex(6)}.mp4", "width": 160, "height": 120}
        for n in range(4):
            frame = {"timestamp": time.time(), "frame_no": n, "source": source}
            files = {
                "frame": ("frame.json", json.dumps(frame), "application/json"),
                "image": ("image.raw", raw, "application/octet-stream"),
            }
            r = await http.post("/", files=files)
            t.check(r.status_code, "POST / (multipart)")
        t.sessions += 1


async def _listener_worker(ws_url: str, stop: float, t: Tally) -> None:
    """Seed 001: listeners that come and go, each asking for faces once."""
    while time.monotonic() < stop:
        async with websockets.connect(ws_url, open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "get_all_faces", "limit": 5}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if "faces" not in reply and len(t.failures) < 20:
                t.failures.append(f"get_all_faces: {reply}")
            t.listeners += 1
            await asyncio.sleep(0.2)


async def churn(url: str, seconds: float, workers: int = 8) -> Tally:
    """Run the mix for ``seconds`` with ``workers`` clients of each HTTP kind."""
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    image = encode_jpeg_base64(picture, 80)
    raw = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8).tobytes()
    tally = Tally()
    stop = time.monotonic() + seconds
    ws_url = url.replace("http", "ws") + "/ws/live"
    limits = httpx.Limits(max_connections=4 * workers)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(
            *(_tracking_worker(http, image, stop, tally) for _ in range(workers)),
            *(_frames_worker(http, raw, stop, tally) for _ in range(workers)),
            *(_listener_worker(ws_url, stop, tally) for _ in range(max(1, workers // 2))),
        )
    return tally


def settle(pid: int, url: str, sessions_at_most: int, timeout: float = 60) -> Footprint:
    """The footprint once frames-server sessions have idled out (they end by timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        now = Footprint.of(pid, url)
        if now.sessions <= sessions_at_most or time.monotonic() > deadline:
            return now
        time.sleep(0.5)
