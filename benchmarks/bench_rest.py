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
import os
import time
from pathlib import Path

import cv2
import httpx
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


async def one_session(
    client: httpx.AsyncClient, sid: str, stop_at: float, image: str | None, out: list[float]
) -> None:
    step = 0
    while time.perf_counter() < stop_at:
        body: dict[str, object] = {"boxes": frame_boxes(step)}
        if image is not None:
            body["image"] = image
        t0 = time.perf_counter()
        r = await client.post("/", json=body, headers={"Session-Id": sid})
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text}")
        step += 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    url: str, pid: int, sessions: int, seconds: float, image: str | None
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=sessions, max_keepalive_connections=sessions)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        # Warm up: create the sessions.
        await asyncio.gather(
            *(
                client.post("/", json={"boxes": frame_boxes(0)}, headers={"Session-Id": f"b{i}"})
                for i in range(sessions)
            )
        )
        latencies: list[float] = []
        cpu0 = cpu_seconds(pid)
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(
            *(one_session(client, f"b{i}", stop_at, image, latencies) for i in range(sessions))
        )
        elapsed = time.perf_counter() - start
        server_cpu = cpu_seconds(pid) - cpu0
        for i in range(sessions):
            await client.delete("/", headers={"Session-Id": f"b{i}"})
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
