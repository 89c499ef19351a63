"""Seed-003 frame server: 1920x1080 raw BGR frames POSTed one by one on loopback.

The client is extract-frames' own sending path (FramePoster: one kept-alive connection, the
multipart body written straight from the array), posting a decoded frame again and again,
one request at a time as the tool does. Each server is measured in the same run:

- framebroker `serve`, `POST /` multipart, one processor that only reads the image's shape
  (_noop_processor.py);
- Flask on werkzeug's threaded server, the handler the seed's users write
  (`request.files['image'].read()`, `np.frombuffer(...).reshape((1080, 1920, 3))`,
  `jsonify(frame)`);
- a bare socket server that reads each body into one buffer and answers ``{}``, no HTTP
  parsing: what no Python server on this machine can beat, given this client;
- the floor: one numpy copy of the 6,220,800 bytes of a frame, in this process.

The last rows run the whole tool (decode, scale to 1920x1080, post) on the bundled clip into
framebroker and into Flask. Server CPU per frame is read from /proc. Client and servers share
the same 2 cores, so the rates are what one machine does end to end, not a server alone.

    python benchmarks/bench_frames.py [--seconds 3] [--rounds 3]
                                      [--servers framebroker flask sink]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from _server import framebroker_server, free_port
from framebroker.client.poster import FramePoster
from framebroker.tools.extract_frames import frame_document, relative_timestamp_str

WIDTH, HEIGHT = 1920, 1080
FRAME_BYTES = WIDTH * HEIGHT * 3
SOURCE = {
    "type": "extract_frames",
    "file": "bench.mkv",
    "name": "bench.mkv",
    "video_fps": 60.0,
    "extract_fps": None,
    "width": WIDTH,
    "height": HEIGHT,
    "run": "bench",
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def game_frame() -> NDArray[np.uint8]:
    """A 1920x1080 BGR frame with structure (gradients, a HUD bar), not a constant."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0] = (x * 255 // WIDTH).astype(np.uint8)
    image[..., 1] = (y * 255 // HEIGHT).astype(np.uint8)
    image[..., 2] = ((x + y) % 256).astype(np.uint8)
    image[HEIGHT - 120 :, :, :] = (40, 200, 240)
    return image


def memcpy_floor(repeats: int = 200) -> float:
    """Seconds to copy one frame's bytes once, the median of ``repeats`` numpy copies."""
    src = game_frame()
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def post_frames(url: str, pid: int, seconds: float, *, check: bool = True) -> dict[str, float]:
    """Post the same frame back to back for ``seconds``; rates, latencies, server CPU.

    ``check``: the first reply must echo the frame and carry the processor's ``seen``."""
    image = game_frame()
    latencies: list[float] = []
    with FramePoster(url, timeout=30) as poster:

        def one(n: int) -> None:
            pts = n / 60
            document = frame_document(1_556_855_549.0, pts, n, SOURCE)
            t0 = time.perf_counter()
            reply = poster.post(orjson.dumps(document), image)
            latencies.append(time.perf_counter() - t0)
            if reply.status != 200:
                raise RuntimeError(
                    f"frame {n} ({relative_timestamp_str(pts)}): "
                    f"{reply.status} {reply.body[:300]!r}"
                )

        for n in range(5):  # warm up: connection, first-request paths
            one(n)
        if check:
            reply = poster.post(orjson.dumps(frame_document(0.0, 0.0, 0, SOURCE)), image)
            answer = orjson.loads(reply.body)
            if answer.get("seen") != {"shape": [HEIGHT, WIDTH, 3]} or answer["source"] != SOURCE:
                raise RuntimeError(f"{url}: unexpected reply {reply.body[:300]!r}")
        latencies.clear()
        cpu0 = cpu_seconds(pid)
        start = time.perf_counter()
        n = 5
        while time.perf_counter() - start < seconds:
            one(n)
            n += 1
        elapsed = time.perf_counter() - start
        server_cpu = cpu_seconds(pid) - cpu0
        connections = poster.connections
    lat = np.array(latencies) * 1000
    return {
        "frames": len(latencies),
        "fps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpu_ms": 1000 * server_cpu / len(latencies),
        "connections": connections,
    }


def serve_flask(port: int) -> None:
    """The seed's Flask server, as its README and test_server.py show it."""
    import json
    import logging

    from flask import Flask, Response, jsonify, request

    app = Flask("plugin")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    @app.post("/")
    def root() -> Response:
        image = np.frombuffer(request.files["image"].read(), dtype=np.uint8).reshape(
            (1080, 1920, 3)
        )
        frame: dict[str, Any] = json.load(request.files["frame"])
        frame["seen"] = {"shape": list(image.shape)}  # what _noop_processor returns
        return jsonify(frame)

    app.run("127.0.0.1", port, threaded=True)


def serve_sink(port: int) -> None:
    """No HTTP framework at all: read each request into one preallocated buffer, answer
    ``{}``. What a Python server cannot beat on this machine: the kernel's copies and the
    wake-ups, no parsing."""
    with socket.create_server(("127.0.0.1", port)) as listener:
        buffer = memoryview(bytearray(2 * FRAME_BYTES))
        while True:
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as stream:
                while True:
                    length = -1
                    while (line := stream.readline()) not in (b"\r\n", b""):
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                    if not line or length < 0:
                        break
                    got = 0
                    while got < length:
                        got += stream.readinto(buffer[got:length]) or 0
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 2\r\n\r\n{}"
                    )


@contextlib.contextmanager
def child_server(kind: str, timeout: float = 30) -> Iterator[tuple[str, int]]:
    """Yields (URL, pid) of this file running ``--serve-KIND PORT`` in a child process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, f"--serve-{kind}", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the {kind} server exited during start-up")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/", proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def noop_pipeline() -> Iterator[str]:
    """A config file whose frame pipeline is _noop_processor's, importable by the server."""
    here = str(Path(__file__).resolve().parent)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = here if not path else f"{here}{os.pathsep}{path}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "frames.toml"
        config.write_text('[frames]\npipeline = ["_noop_processor:ShapeOnly"]\n')
        yield str(config)


def whole_tool(url: str, pid: int, clip: Path) -> dict[str, float]:
    """The extract-frames tool in this process: every frame of ``clip`` decoded, scaled to
    1920x1080 and posted."""
    from framebroker.tools.extract_frames import ExtractOptions, extract

    options = ExtractOptions(str(clip), url, fps=None, quiet=True)
    cpu0 = cpu_seconds(pid)
    summary = extract(options)
    server_cpu = cpu_seconds(pid) - cpu0
    if summary.status != 0:
        raise RuntimeError(f"extract-frames to {url} exited with {summary.status}")
    return {
        "frames": summary.sent,
        "fps": summary.fps,
        "cpu_ms": 1000 * server_cpu / summary.sent,
    }


def demo_clip_path() -> Path:
    from framebroker.media.sources import demo_clip

    return demo_clip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="per server and round (default 3)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds, in turns (default 3)")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=["framebroker", "flask", "sink"],
        default=["framebroker", "flask", "sink"],
    )
    parser.add_argument("--serve-flask", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_flask is not None:
        serve_flask(args.serve_flask)
        return
    if args.serve_sink is not None:
        with contextlib.suppress(KeyboardInterrupt):
            serve_sink(args.serve_sink)
        return

    floor_s = memcpy_floor()
    clip = demo_clip_path()
    names = {
        "framebroker": "framebroker serve, POST / multipart",
        "flask": "Flask (werkzeug, threaded)",
        "sink": "bare socket, no HTTP parsing (a server's floor)",
    }
    short = {"framebroker": "framebroker", "flask": "Flask"}
    sending: dict[str, list[dict[str, float]]] = {kind: [] for kind in args.servers}
    tool: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        servers: dict[str, tuple[str, int]] = {}
        for kind in args.servers:
            if kind == "framebroker":
                config = stack.enter_context(noop_pipeline())
                url, pid = stack.enter_context(framebroker_server("--config", config))
                servers[kind] = (url + "/", pid)
            else:
                servers[kind] = stack.enter_context(child_server(kind))
        # Rounds take turns, so load from elsewhere on the machine falls on every server alike.
        for _ in range(args.rounds):
            for kind, (url, pid) in servers.items():
                result = post_frames(url, pid, args.seconds, check=kind != "sink")
                sending[kind].append(result)
        for kind, (url, pid) in servers.items():
            if kind != "sink":
                tool[kind] = whole_tool(url, pid, clip)

    print(
        f"\nseed-003 frames: {WIDTH}x{HEIGHT} raw BGR ({FRAME_BYTES:,} bytes) per POST, one "
        f"connection, one request at a time, loopback; {args.rounds} rounds of "
        f"{args.seconds:g} s per server, taken in turns\n"
    )
    print("| path | frames | frames/s | MB/s | p50 ms | p99 ms | server CPU ms/frame |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| memcpy of one frame (numpy, the floor) | – | {1 / floor_s:,.0f} "
        f"| {FRAME_BYTES / floor_s / 1e6:,.0f} | {floor_s * 1000:.2f} | – | {floor_s * 1000:.2f} |"
    )
    rates: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for kind, results in sending.items():
        frames = sum(r["frames"] for r in results)
        seconds = sum(r["frames"] / r["fps"] for r in results)
        rates[kind] = frames / seconds
        cpu = cpus[kind] = sum(r["cpu_ms"] * r["frames"] for r in results) / frames
        p50 = float(np.median([r["p50_ms"] for r in results]))
        p99 = max(r["p99_ms"] for r in results)
        print(
            f"| extract-frames sender → {names[kind]} | {frames:.0f} | {rates[kind]:.1f} "
            f"| {rates[kind] * FRAME_BYTES / 1e6:,.0f} | {p50:.2f} | {p99:.2f} | {cpu:.2f} |"
        )
    for kind, r in tool.items():
        print(
            f"| whole extract-frames ({clip.name}, {r['frames']:.0f} frames decoded and scaled "
            f"to 1080p) → {short[kind]} | {r['frames']:.0f} | {r['fps']:.1f} "
            f"| {r['fps'] * FRAME_BYTES / 1e6:,.0f} | – | – | {r['cpu_ms']:.2f} |"
        )
    if "framebroker" in rates and "flask" in rates:
        print(
            f"\nframebroker / Flask: {rates['framebroker'] / rates['flask']:.1f}x frames/s "
            "end to end (target: at least 3x); Flask spends "
            f"{cpus['flask'] / cpus['framebroker']:.1f}x the server CPU per frame"
        )


if __name__ == "__main__":
    main()
