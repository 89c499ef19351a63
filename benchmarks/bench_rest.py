"""Seed-000 REST API under load: N sessions posting 30-box frames concurrently on loopback.

Each session posts its frames back to back (a client waits for each answer, as a tracker
client does); the table gives requests per second over all sessions and the latency
percentiles seen by the clients. The client runs on the same 2 cores as the server, so the
numbers are a floor for what the server alone could do.

    python benchmarks/bench_rest.py [--seconds 5] [--sessions 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from _server import framebroker_server

BOXES_PER_FRAME = 30


def frame_boxes(step: int, n: int = BOXES_PER_FRAME) -> list[list[float]]:
    """n people walking across a 640x480 view on a grid, xywh, percent scores."""
    rows = []
    for i in range(n):
        x = (37 * i + 3 * step) % 600
        y = 20 + (i % 6) * 75
        rows.append([float(x), float(y), 30.0, 70.0, 60.0 + (i % 4) * 10, 0])
    return rows


def image_b64() -> str:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3)  # camera-like, compressible
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


class Connection:
    """A minimal HTTP/1.1 keep-alive client, so the load generator costs less than the server.

    httpx spends more CPU per request than the server does; on a shared 2-core machine that
    would measure the client.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def request(self, method: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = f"{method} / HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def one_session(
    url: str, sid: str, stop_at: float, image: str | None, out: list[float]
) -> None:
    conn = await Connection.open(url)
    headers = {"Content-Type": "application/json", "Session-Id": sid}
    try:
        step = 0
        while time.perf_counter() < stop_at:
            body: dict[str, object] = {"boxes": frame_boxes(step)}
            if image is not None:
                body["image"] = image
            payload = json.dumps(body).encode()
            t0 = time.perf_counter()
            status, reply = await conn.request("POST", payload, headers)
            out.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{status}: {reply[:200]!r}")
            step += 1
        await conn.request("DELETE", b"", {"Session-Id": sid})
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    url: str, pid: int, sessions: int, seconds: float, image: str | None
) -> dict[str, float]:
    latencies: list[float] = []
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(
        *(one_session(url, f"b{i}", stop_at, image, latencies) for i in range(sessions))
    )
    elapsed = time.perf_counter() - start
    server_cpu = cpu_seconds(pid) - cpu0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "req_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpu_ms": 1000 * server_cpu / len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    image = image_b64()
    rows = []
    with framebroker_server() as (url, pid):
        for with_image in (False, True):
            for n in args.sessions:
                res = asyncio.run(load(url, pid, n, args.seconds, image if with_image else None))
                rows.append((n, "640x480 JPEG" if with_image else "none", res))
    print(f"\nREST /: {BOXES_PER_FRAME} boxes per frame, {args.seconds:.0f} s per row, loopback\n")
    print("| sessions | image | requests | req/s | p50 ms | p99 ms | server CPU ms/req |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, img, r in rows:
        print(
            f"| {n} | {img} | {r['requests']:.0f} | {r['req_s']:.0f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['cpu_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
