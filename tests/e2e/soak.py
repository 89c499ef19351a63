"""A soak: many short sessions over every transport against a real server, with fresh
session ids (and fresh WebRTC tracks) all the time, measuring what the server holds before
and after and checking every frame's fate against ``/metrics``.

Used by ``tests/e2e/test_soak.py`` (a short run in CI) and ``benchmarks/soak.py`` (the long
run, with its figures). The clients:

- seed 000 (``rest``): a fresh ``Session-Id``, five frames of boxes (one with a picture), end;
- seed 003 (``frames``): multipart frames of a new source every four frames;
- seed 001: listeners on ``/ws/live`` coming and going, each asking for faces once;
- seed 002 (``socketio``): a new id from ``/get_session_id``, a new python-socketio
  connection, two windows of ``process`` frames, both windows' ``result`` awaited, disconnect;
- seed 004 (``webrtc``): a new aiortc peer with a new synthetic camera track, signaled over
  ``/webrtc/ws``, streaming for a second or two, then ``end`` and its ``result``.

Every frame must be answered or counted as dropped, by the client and by the server alike:
see :func:`mismatches`. The server must be started with :func:`server_config` (and
``PYTHONPATH`` at the repository root, so it can import :class:`MeanColour`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import socketio
import websockets

from framebroker.core import Frame, ProcessContext, Processor
from framebroker.media.image import encode_jpeg, encode_jpeg_base64

from ..transports.webrtc_client import ColourTrack, client_peer, negotiate, recv_json

BOXES = [[100, 100, 40, 90, 90, 0], [300, 120, 42, 95, 85, 0]]
TRANSPORTS = ("rest", "frames", "socketio", "webrtc")
"""The ``transport`` labels of ``framebroker_frames_total`` the soak's clients feed."""
WINDOW_FRAMES = 5
WINDOWS = 2
WEBRTC_STREAM_S = 1.5
MODEL = "tests.e2e.soak:MeanColour"


class MeanColour(Processor):
    """The soak's WebRTC model: reads every pixel (so each frame is decoded), says little."""

    name: ClassVar[str] = "mean_colour"
    needs_image = True

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"mean": [round(float(v), 1) for v in frame.image.mean(axis=(0, 1))]}


def server_config(idle_timeout_s: float) -> str:
    """The TOML the soak's server runs with: short idle expiry (seed-003 sessions end only
    by it), small seed-002 windows through an in-process pipeline (so their frames show in
    ``/metrics``), the soak's model for WebRTC, and no per-client cap (one address plays
    every client)."""
    return f"""\
[limits]
session_idle_timeout_s = {idle_timeout_s}
max_sessions_per_client = 0

[analysis]
window_frames = {WINDOW_FRAMES}

[analysis.pipelines]
tracks = ["bytetrack"]

[webrtc]
models = ["{MODEL}"]
media_timeout_s = 5.0
"""


def server_env() -> dict[str, str]:
    """``PYTHONPATH`` for the server process, so it imports :data:`MODEL` as a user's model."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


# -- what the server holds -------------------------------------------------------------------

_FRAMES = re.compile(r"^framebroker_frames_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Footprint:
    """What the server process holds at one moment, and its frame counters so far."""

    rss_mb: float
    fds: int
    tasks: int
    sessions: int
    frames: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

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
        frames = {}
        for line in text.splitlines():
            if m := _FRAMES.match(line):
                labels = dict(_LABEL.findall(m["labels"]))
                frames[(labels["transport"], labels["outcome"])] = int(float(m["value"]))
        return cls(rss_kb / 1024, fds, int(tasks), int(sessions), frames)

    def frames_since(self, before: Footprint, transport: str) -> dict[str, int]:
        """Frames by outcome (received, processed, dropped, failed) between two footprints."""
        return {
            outcome: self.frames.get((transport, outcome), 0)
            - before.frames.get((transport, outcome), 0)
            for outcome in ("received", "processed", "dropped", "failed")
        }


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


# -- what the clients saw --------------------------------------------------------------------


@dataclass
class Count:
    """One transport's frames as its clients saw them.

    ``answered``: a 200, a ``process`` ack whose window was analysed, a WebRTC prediction;
    ``dropped``: a 503, a refused ack or a dropped window's frames. ``server_in``,
    ``server_processed`` and ``server_dropped`` are what the server's own replies said it
    took (seed-002 ``result`` events, WebRTC ``result`` stats); ``lost``: WebRTC frames sent
    that never reached the server (still in flight when the peer closed); ``unanalysed``:
    Socket.IO frames acknowledged whose window was dropped (counted in ``dropped`` too).
    """

    sessions: int = 0
    frames: int = 0
    answered: int = 0
    dropped: int = 0
    server_in: int = 0
    server_processed: int = 0
    server_dropped: int = 0
    lost: int = 0
    unanalysed: int = 0

    def add(self, other: Count) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Tally:
    by: dict[str, Count] = field(default_factory=lambda: {t: Count() for t in TRANSPORTS})
    listeners: int = 0
    reconnects: int = 0
    """Requests sent again because the server had just closed their idle kept-alive
    connection (the race every HTTP/1.1 client meets; the first try never reached it)."""
    failures: list[str] = field(default_factory=list)
    socketio_closed: list[float] = field(default_factory=list, repr=False)
    """When each Socket.IO connection closed (``time.monotonic()``), see :meth:`lingering`."""
    ping_interval_s: float = field(default=25.0, repr=False)

    def lingering(self, at: float) -> int:
        """Server tasks that closed Socket.IO connections may still hold at ``at``:
        python-engineio's ping task sleeps out its ping interval after a connection
        closes, one per connection (bounded, not a leak)."""
        return sum(1 for closed in self.socketio_closed if at - closed < self.ping_interval_s + 1)

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.by.values())

    @property
    def sessions(self) -> int:
        return sum(c.sessions for c in self.by.values())

    def fail(self, what: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(what)

    def http(self, transport: str, status: int, what: str) -> None:
        count = self.by[transport]
        count.frames += 1
        if status == 200:
            count.answered += 1
        elif status == 503:
            count.dropped += 1
        else:
            self.fail(f"{what}: HTTP {status}")

    def add(self, other: Tally) -> None:
        for name, count in other.by.items():
            self.by[name].add(count)
        self.listeners += other.listeners
        self.reconnects += other.reconnects
        self.failures += other.failures
        self.socketio_closed += other.socketio_closed
        self.ping_interval_s = other.ping_interval_s


def mismatches(tally: Tally, before: Footprint, after: Footprint) -> list[str]:
    """Where a frame's fate is unaccounted for, comparing the clients' counts with the
    server's ``/metrics`` between two settled footprints; empty when every frame adds up."""
    out = []
    for transport, c in tally.by.items():
        s = after.frames_since(before, transport)
        where = f"{transport}: client {c}, server {s}"
        if s["received"] != s["processed"] + s["dropped"] + s["failed"]:
            out.append(f"{where}: received is not processed + dropped + failed")
        if s["failed"]:
            out.append(f"{where}: frames failed")
        if c.frames != c.answered + c.dropped + c.lost:
            out.append(f"{where}: sent is not answered + dropped + lost")
        if transport in ("rest", "frames"):
            if (c.frames, c.answered, c.dropped) != (s["received"], s["processed"], s["dropped"]):
                out.append(f"{where}: client and server disagree")
        elif transport == "socketio":
            # Each acknowledged frame went through its stream's session; the in-process
            # pipeline (its sessions labelled "analysis") saw every frame of every analysed
            # window.
            if not s["received"] == s["processed"] == c.answered + c.unanalysed:
                out.append(f"{where}: received frames disagree")
            a = after.frames_since(before, "analysis")
            if not c.answered == c.server_in == a["received"] == a["processed"]:
                out.append(f"{where}, analysis {a}: analysed frames disagree")
        else:  # webrtc: one prediction per processed frame, and the results add up
            if c.answered != c.server_processed:
                out.append(f"{where}: predictions are not the frames processed")
            if (c.server_in, c.server_processed, c.server_dropped) != (
                s["received"],
                s["processed"],
                s["dropped"],
            ):
                out.append(f"{where}: the results' stats disagree with /metrics")
    return out


# -- the clients -----------------------------------------------------------------------------


async def _request(
    http: httpx.AsyncClient, t: Tally, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One request, sent once more on a new connection if the kept-alive one it went out on
    turned out closed by the server's idle timeout. Anything else propagates."""
    try:
        return await http.request(method, url, **kwargs)
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
        t.reconnects += 1
        return await http.request(method, url, **kwargs)


async def _tracking_worker(http: httpx.AsyncClient, image: str, stop: float, t: Tally) -> None:
    """Seed 000: a fresh session id, a few frames of boxes (one with a picture), then end."""
    while time.monotonic() < stop:
        headers = {"Session-Id": "soak-" + secrets.token_hex(6)}
        for i in range(5):
            body: dict[str, object] = {"boxes": BOXES}
            if i == 0:
                body["image"] = image
            r = await _request(http, t, "POST", "/", json=body, headers=headers)
            t.http("rest", r.status_code, "POST / (json)")
        r = await _request(http, t, "DELETE", "/", headers=headers)
        if r.status_code == 200:
            t.by["rest"].sessions += 1


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
            r = await _request(http, t, "POST", "/", files=files)
            t.http("frames", r.status_code, "POST / (multipart)")
        t.by["frames"].sessions += 1


async def _listener_worker(ws_url: str, stop: float, t: Tally) -> None:
    """Seed 001: listeners that come and go, each asking for faces once."""
    while time.monotonic() < stop:
        async with websockets.connect(ws_url, open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "get_all_faces", "limit": 5}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if "faces" not in reply:
                t.fail(f"get_all_faces: {reply}")
            t.listeners += 1
            await asyncio.sleep(0.2)


async def _socketio_session(url: str, sid: str, jpeg: bytes, t: Tally) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    results: list[dict[str, Any]] = []
    dropped_windows: list[int] = []
    done = asyncio.Event()

    def settled() -> None:
        if len(results) + len(dropped_windows) >= WINDOWS:
            done.set()

    async def on_result(data: Any) -> None:
        results.append(data)
        settled()

    async def on_error(data: Any) -> None:
        if isinstance(data, dict) and "window" in data:  # a window dropped, and said so
            if data.get("code") != "capacity_exceeded":
                t.fail(f"socketio window error: {data}")
            dropped_windows.append(int(data["window"]))
            settled()

    sio.on("result", on_result)
    sio.on("error", on_error)
    count = t.by["socketio"]
    acked = 0
    try:
        await sio.connect(f"{url}?session_id={sid}", transports=["websocket"], wait_timeout=10)
        t.ping_interval_s = float(sio.eio.ping_interval)
        for _ in range(WINDOWS * WINDOW_FRAMES):
            ack = await sio.call("process", jpeg, timeout=30)
            count.frames += 1
            if isinstance(ack, dict) and "frame" in ack:
                acked += 1
            elif isinstance(ack, dict) and ack.get("code") == "capacity_exceeded":
                count.dropped += 1
            else:
                t.fail(f"socketio process: {ack}")
                count.lost += 1
        await asyncio.wait_for(done.wait(), 60)
    finally:
        if sio.connected:
            await sio.disconnect()
        await sio.shutdown()
        t.socketio_closed.append(time.monotonic())
    in_dropped = WINDOW_FRAMES * len(dropped_windows)
    count.answered += acked - in_dropped
    count.dropped += in_dropped
    count.unanalysed += in_dropped
    count.server_in += sum(int(r["frames"]) for r in results)
    for r in results:
        if r["result"]["tracks"].get("frames") != r["frames"]:
            t.fail(f"socketio window {r['window']}: {r['result']}")
    count.sessions += 1


async def _socketio_worker(
    http: httpx.AsyncClient, url: str, jpeg: bytes, stop: float, t: Tally
) -> None:
    """Seed 002: a new id and a new connection each time, two windows of frames, results."""
    while time.monotonic() < stop:
        sid = (await http.get("/get_session_id")).json()["session_id"]
        try:
            await _socketio_session(url, sid, jpeg, t)
        except (TimeoutError, socketio.exceptions.SocketIOError) as exc:
            t.fail(f"socketio session: {exc!r}")


async def _webrtc_session(ws_url: str, colour: tuple[int, int, int], t: Tally) -> None:
    peer = client_peer(ColourTrack(colour=colour, size=(160, 120)), data_channel=False)
    count = t.by["webrtc"]
    predictions = 0
    result: dict[str, Any] | None = None
    try:
        async with websockets.connect(ws_url, open_timeout=10) as ws:
            await negotiate(peer, ws)
            ends = time.monotonic() + WEBRTC_STREAM_S
            give_up = ends + 60
            ended = False
            while result is None and time.monotonic() < give_up:
                if not ended and time.monotonic() >= ends:
                    await ws.send(json.dumps({"type": "end"}))
                    ended = True
                wait = max(0.05, ends - time.monotonic()) if not ended else 5.0
                with contextlib.suppress(TimeoutError):
                    msg = await recv_json(ws, wait)
                    if msg["type"] == "prediction":
                        predictions += 1
                    elif msg["type"] == "result":
                        result = msg
                    else:
                        t.fail(f"webrtc: {msg}")
    finally:
        await peer.close()
    if result is None:
        t.fail("webrtc: no result")
        return
    stats = result["stats"]
    sent = len(peer.track.sent)
    count.sessions += 1
    count.frames += sent
    count.answered += predictions
    count.server_in += stats["frames_in"]
    count.server_processed += stats["frames_processed"]
    count.server_dropped += stats["frames_dropped"]
    count.dropped += stats["frames_dropped"]  # overtaken by a newer frame, and counted so
    count.lost += sent - stats["frames_in"]  # still in flight when the peer closed


async def _webrtc_worker(ws_url: str, stop: float, t: Tally) -> None:
    """Seed 004: a new peer and camera track each time, streamed briefly, then ended."""
    rng = np.random.default_rng()
    while time.monotonic() < stop:
        colour = (int(rng.integers(256)), int(rng.integers(256)), int(rng.integers(256)))
        try:
            await _webrtc_session(ws_url, colour, t)
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            t.fail(f"webrtc session: {exc!r}")


async def churn(url: str, seconds: float, workers: int = 8) -> Tally:
    """Run the mix for ``seconds``: ``workers`` clients of each HTTP kind, half as many
    seed-001 listeners and seed-002 connections, a quarter as many WebRTC peers (at least
    one of each)."""
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    image = encode_jpeg_base64(picture, 80)
    raw = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8).tobytes()
    small = encode_jpeg(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), 80)
    tally = Tally()
    stop = time.monotonic() + seconds
    ws_url = url.replace("http", "ws", 1)
    limits = httpx.Limits(max_connections=4 * workers)
    half, quarter = max(1, workers // 2), max(1, workers // 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        clients: list[Awaitable[None]] = [
            *(_tracking_worker(http, image, stop, tally) for _ in range(workers)),
            *(_frames_worker(http, raw, stop, tally) for _ in range(workers)),
            *(_listener_worker(f"{ws_url}/ws/live", stop, tally) for _ in range(half)),
            *(_socketio_worker(http, url, small, stop, tally) for _ in range(half)),
            *(_webrtc_worker(f"{ws_url}/webrtc/ws", stop, tally) for _ in range(quarter)),
        ]
        await asyncio.gather(*clients)
    return tally


def settle(
    pid: int,
    url: str,
    sessions_at_most: int,
    tasks_at_most: int | None = None,
    timeout: float = 60,
) -> Footprint:
    """The footprint once frames-server sessions have idled out (they end by timeout) and,
    with ``tasks_at_most``, the event loop is back to that many tasks (a closed WebRTC peer's
    transports take a moment to wind down)."""
    deadline = time.monotonic() + timeout
    while True:
        now = Footprint.of(pid, url)
        calm = now.sessions <= sessions_at_most and (
            tasks_at_most is None or now.tasks <= tasks_at_most
        )
        if calm or time.monotonic() > deadline:
            return now
        time.sleep(0.5)
