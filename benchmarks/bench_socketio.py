"""Seed 002 under load: Socket.IO frames into 30-frame H.264 windows, each sent to a service.

Measured against framebroker and, in the same run, a minimal Flask-SocketIO server doing the
same work the seed's way (its stack: Flask-SocketIO in threading mode on Werkzeug, PIL to
decode, a per-session list of frames, the window encoded in memory with the same PyAV
settings, ``requests`` to post it, ``emit('result')``):

- frames/s pushed by 1 and by 10 sessions (640x480 JPEG, each session keeps up to 4 frames
  awaiting their acks, every 30 frames a window goes to the service);
- time from a window's last frame being sent to its ``result`` arriving (one session,
  frames sent one after the other);
- time to encode one 30-frame 640x480 window in this process: framebroker's encoder against
  OpenCV's ``VideoWriter`` (mp4v) through a temporary file, what a Flask app usually does.

The analysis service is a small threaded HTTP server in a process of its own that reads the
upload and answers its size. Clients, servers and service share the same cores, so the
rates are a floor.

    python benchmarks/bench_socketio.py [--seconds 5] [--windows 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import socketio

from _server import framebroker_server, free_port

WINDOW = 30
WIDTH, HEIGHT = 640, 480
IN_FLIGHT = 4
HERE = Path(__file__).resolve()


def frames(n: int = WINDOW) -> list[np.ndarray]:
    """A moving camera-like picture: a blurred noise field sliding right, and a disc."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (HEIGHT, WIDTH * 2, 3), np.uint8), (0, 0), 3)
    out = []
    for i in range(n):
        img = np.ascontiguousarray(base[:, i * 8 : i * 8 + WIDTH])
        cv2.circle(img, (100 + 12 * i, 240), 60, (40, 180, 220), -1)
        out.append(img)
    return out


def jpegs() -> list[bytes]:
    return [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in frames()]


# -- the analysis service (own process) ---------------------------------------------------------


def serve_analysis(port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            answer = json.dumps({"bytes": len(body)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client gone at the end of a run

    Server(("127.0.0.1", port), Handler).serve_forever()


# -- the seed's stack: Flask-SocketIO (own process) ---------------------------------------------


def serve_flask(port: int, service_url: str) -> None:
    import av
    import requests
    from flask import Flask, request
    from flask_socketio import SocketIO, emit
    from PIL import Image

    app = Flask(__name__)
    app.config["SECRET_KEY"] = "bench"
    sio = SocketIO(app, async_mode="threading", max_http_buffer_size=16_000_000)
    frames_by_session: dict[str, list[Image.Image]] = {}

    def images_to_video_in_memory(images: list[Image.Image]) -> bytes:
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height = images[0].size
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
            stream.codec_context.thread_count = 1
            for img in images:
                frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        return buf.getvalue()

    @sio.on("process")
    def process(data: bytes) -> dict[str, Any]:
        session_id = request.args.get("session_id", "")
        image = Image.open(io.BytesIO(data)).convert("RGB")
        reply = {"first_pixel": list(image.getpixel((0, 0))), "size": list(image.size)}
        window = frames_by_session.setdefault(session_id, [])
        window.append(image)
        if len(window) >= WINDOW:
            frames_by_session[session_id] = []
            video = images_to_video_in_memory(window)
            answer = requests.post(
                service_url, files={"file": ("video.mp4", video, "video/mp4")}, timeout=30
            ).json()
            emit("result", {"result": {"svc": answer}})
        return reply

    @sio.on("disconnect")
    def disconnect(reason: Any = None) -> None:
        frames_by_session.pop(request.args.get("session_id", ""), None)

    sio.run(app, host="127.0.0.1", port=port, allow_unsafe_werkzeug=True, log_output=False)


@contextlib.contextmanager
def subprocess_server(*args: str, ready_url: str) -> Iterator[int]:
    # Werkzeug's banner and request log would interleave with the table.
    proc = subprocess.Popen(
        [sys.executable, str(HERE), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited during start-up")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(ready_url, timeout=1)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start")
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- clients -------------------------------------------------------------------------------------


async def session_ids(url: str, n: int, framebroker: bool) -> list[str]:
    if not framebroker:
        return [f"flask-{i}-{time.monotonic_ns()}" for i in range(n)]
    async with httpx.AsyncClient(base_url=url) as http:
        return [(await http.get("/get_session_id")).json()["session_id"] for _ in range(n)]


async def push(url: str, sid: str, images: list[bytes], stop_at: float, counts: list[int]) -> None:
    client = socketio.AsyncClient(reconnection=False)
    results = 0

    async def on_result(_: Any = None) -> None:
        nonlocal results
        results += 1

    client.on("result", on_result)
    await client.connect(f"{url}?session_id={sid}", transports=["websocket"], wait_timeout=10)
    slots = asyncio.Semaphore(IN_FLIGHT)
    acked = 0
    errors = 0

    def on_ack(reply: Any = None) -> None:
        nonlocal acked, errors
        if isinstance(reply, dict) and "error" in reply:
            errors += 1
        else:
            acked += 1
        slots.release()

    i = 0
    try:
        while time.perf_counter() < stop_at:
            await slots.acquire()
            await client.emit("process", images[i % len(images)], callback=on_ack)
            i += 1
        for _ in range(IN_FLIGHT):
            await asyncio.wait_for(slots.acquire(), 30)
    finally:
        await client.disconnect()
        await client.shutdown()
    counts.append(acked)
    if errors:
        raise RuntimeError(f"{errors} frames were refused")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(
    url: str, pid: int, sessions: int, seconds: float, framebroker: bool
) -> tuple[float, float]:
    """Frames per second, and the server's CPU milliseconds per frame."""
    images = jpegs()
    sids = await session_ids(url, sessions, framebroker)
    counts: list[int] = []
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    await asyncio.gather(*(push(url, s, images, start + seconds, counts) for s in sids))
    elapsed = time.perf_counter() - start
    done = sum(counts)
    return done / elapsed, 1000 * (cpu_seconds(pid) - cpu0) / max(done, 1)


async def window_latency(url: str, windows: int, framebroker: bool) -> list[float]:
    images = jpegs()
    (sid,) = await session_ids(url, 1, framebroker)
    client = socketio.AsyncClient(reconnection=False)
    results: asyncio.Queue[float] = asyncio.Queue()

    async def on_result(_: Any = None) -> None:
        results.put_nowait(time.perf_counter())

    client.on("result", on_result)
    await client.connect(f"{url}?session_id={sid}", transports=["websocket"], wait_timeout=10)
    out = []
    try:
        for _ in range(windows):
            for i, image in enumerate(images):
                if i == len(images) - 1:
                    sent = time.perf_counter()
                await client.call("process", image, timeout=30)
            out.append(await asyncio.wait_for(results.get(), 30) - sent)
    finally:
        await client.disconnect()
        await client.shutdown()
    return out


# -- encoding ------------------------------------------------------------------------------------


def encode_times(repeat: int) -> dict[str, float]:
    from framebroker.media.encode import encode_mp4

    window = frames()
    ours, opencv = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        encode_mp4(window)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "w.mp4")
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (WIDTH, HEIGHT))
            for f in window:
                writer.write(f)
            writer.release()
            Path(path).read_bytes()
        opencv.append(time.perf_counter() - t0)
    return {"framebroker": statistics.median(ours), "opencv": statistics.median(opencv)}


# -- main ----------------------------------------------------------------------------------------


def run_server(url: str, pid: int, args: argparse.Namespace, framebroker: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (1, 10):
        out[f"fps_{n}"], out[f"cpu_{n}"] = asyncio.run(
            throughput(url, pid, n, args.seconds, framebroker)
        )
    lat = asyncio.run(window_latency(url, args.windows, framebroker))
    out["lat_p50"] = statistics.median(lat) * 1000
    out["lat_max"] = max(lat) * 1000
    return out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-analysis":
        with contextlib.suppress(KeyboardInterrupt):
            serve_analysis(int(sys.argv[2]))
        return None
    if len(sys.argv) > 3 and sys.argv[1] == "--serve-flask":
        with contextlib.suppress(KeyboardInterrupt):
            serve_flask(int(sys.argv[2]), sys.argv[3])
        return None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()

    service_port = free_port()
    service_url = f"http://127.0.0.1:{service_port}/analyse"
    encode = encode_times(10)
    with subprocess_server(
        "--serve-analysis", str(service_port), ready_url=f"http://127.0.0.1:{service_port}/"
    ):
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "bench.toml"
            config.write_text(
                f"[analysis]\nwindow_frames = {WINDOW}\n"
                f'[analysis.services]\nsvc = "{service_url}"\n'
            )
            with framebroker_server("--config", str(config)) as (url, pid):
                ours = run_server(url, pid, args, framebroker=True)
        flask_port = free_port()
        flask_url = f"http://127.0.0.1:{flask_port}"
        with subprocess_server(
            "--serve-flask", str(flask_port), service_url, ready_url=f"{flask_url}/"
        ) as flask_pid:
            theirs = run_server(flask_url, flask_pid, args, framebroker=False)

    print(
        f"\nSeed 002: {WIDTH}x{HEIGHT} JPEG frames over Socket.IO (websocket), windows of "
        f"{WINDOW} frames to H.264 and to one local service; {args.seconds:.0f} s per rate, "
        f"{args.windows} windows for latency\n"
    )
    print("| measure | framebroker | Flask-SocketIO (seed stack) |")
    print("|---|---:|---:|")
    print(f"| frames/s, 1 session | {ours['fps_1']:.0f} | {theirs['fps_1']:.0f} |")
    print(f"| frames/s, 10 sessions | {ours['fps_10']:.0f} | {theirs['fps_10']:.0f} |")
    for n in (1, 10):
        print(
            f"| server CPU ms/frame, {n} session{'s' if n > 1 else ''} | "
            f"{ours[f'cpu_{n}']:.2f} | {theirs[f'cpu_{n}']:.2f} |"
        )
    print(
        f"| last frame sent -> result, p50 ms | {ours['lat_p50']:.0f} | {theirs['lat_p50']:.0f} |"
    )
    print(
        f"| last frame sent -> result, max ms | {ours['lat_max']:.0f} | {theirs['lat_max']:.0f} |"
    )
    print(f"\nEncoding one {WINDOW}-frame {WIDTH}x{HEIGHT} window (median of 10)\n")
    print("| encoder | ms |")
    print("|---|---:|")
    print(
        f"| framebroker (PyAV libx264 ultrafast, zerolatency, in memory) | "
        f"{encode['framebroker'] * 1000:.0f} |"
    )
    print(f"| OpenCV VideoWriter mp4v via a temporary file | {encode['opencv'] * 1000:.0f} |")
    return None


if __name__ == "__main__":
    main()
