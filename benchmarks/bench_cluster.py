"""Seed-000 REST on a cluster: one node against two, and what a request that lands on a node
that does not run its session costs (it is relayed to the owner).

Nodes are `framebroker serve --cluster` processes on loopback, sharing one redis-server and
one PostgreSQL database (both started here: the tests' own helpers), beside a plain
`framebroker serve` (SQLite, no cluster) as the baseline a user has today. Each session posts
30-box frames back to back, boxes only, with the same minimal client as bench_rest.py.

Rows:
- `single`: the plain server, every session on it;
- `1 node`: one cluster node (its sessions snapshotted every second, its Redis idle);
- `2 nodes, owner`: sessions spread over two nodes, each request sent to the node that runs
  its session (what a front proxy routing on the id's node prefix does);
- `2 nodes, non-owner`: the same sessions, each request sent to the other node, which
  relays it.

CPU is every framebroker process's user + system time (and Redis's) per request. The client
shares the 2 cores with the servers, so requests/s is a floor, and on this machine a second
node competes with the client for the cores rather than adding one.

    python benchmarks/bench_cluster.py [--seconds 5] [--sessions 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.redis_server, tests.postgres: the tests' own

from tests.postgres import running_postgres  # noqa: E402
from tests.redis_server import running_redis  # noqa: E402

from _server import framebroker_server  # noqa: E402
from bench_rest import Connection, cpu_seconds, frame_boxes  # noqa: E402

SECRET = "bench-cluster-secret-of-32-characters"


def serve(*args: str, name: str) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """`framebroker serve ARGS` as node ``name`` on a free port: (URL, pid)."""
    return framebroker_server("--node-id", name, *args, env={"SECRET_KEY": SECRET})


async def one_session(
    urls: list[str], sid: str, stop_at: float, out: list[float], home: str
) -> None:
    """Make the session on ``home``, then post frames to ``urls`` in turn."""
    headers = {"Content-Type": "application/json", "Session-Id": sid}
    first = await Connection.open(home)
    status, reply = await first.request("POST", json.dumps({"boxes": []}).encode(), headers)
    first.close()
    if status != 200:
        raise RuntimeError(f"{status}: {reply[:200]!r}")
    conns = [await Connection.open(u) for u in urls]
    try:
        step = 0
        while time.perf_counter() < stop_at:
            payload = json.dumps({"boxes": frame_boxes(step)}).encode()
            t0 = time.perf_counter()
            status, reply = await conns[step % len(conns)].request("POST", payload, headers)
            out.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{status}: {reply[:200]!r}")
            step += 1
        await conns[0].request("DELETE", b"", {"Session-Id": sid})
    finally:
        for conn in conns:
            conn.close()


async def load(
    plan: list[tuple[str, list[str]]], pids: list[int], seconds: float, tag: str
) -> dict[str, float]:
    """``plan``: per session, the node that makes it and the nodes its frames go to."""
    latencies: list[float] = []
    cpu0 = sum(cpu_seconds(p) for p in pids)
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(
        *(
            one_session(urls, f"{tag}{i}", stop_at, latencies, home)
            for i, (home, urls) in enumerate(plan)
        )
    )
    elapsed = time.perf_counter() - start
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "req_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpu_ms": 1000 * cpu / len(latencies),
    }


def row(name: str, sessions: int, r: dict[str, float]) -> str:
    return (
        f"| {name} | {sessions} | {r['requests']:.0f} | {r['req_s']:.0f} | {r['p50_ms']:.2f} "
        f"| {r['p99_ms']:.2f} | {r['cpu_ms']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=32)
    args = parser.parse_args()
    n, s = args.sessions, args.seconds
    lines = []
    with serve(name="single") as (url, pid):
        lines.append(
            row("single (no cluster)", n, asyncio.run(load([(url, [url])] * n, [pid], s, "s")))
        )
        lines.append(row("single, 1 session", 1, asyncio.run(load([(url, [url])], [pid], s, "t"))))
    with running_redis() as redis, running_postgres(durable=True) as pg:
        db = pg.create_database("bench")
        flags = ("--cluster", redis.url, "--database-url", db)
        with serve(*flags, name="a") as (a, pa):
            pids = [pa, redis.pid]
            lines.append(row("1 node", n, asyncio.run(load([(a, [a])] * n, pids, s, "o"))))
            with serve(*flags, name="b") as (b, pb):
                pids = [pa, pb, redis.pid]
                spread = [(a, [a]) if i % 2 else (b, [b]) for i in range(n)]
                lines.append(row("2 nodes, owner", n, asyncio.run(load(spread, pids, s, "w"))))
                across = [(a, [b]) if i % 2 else (b, [a]) for i in range(n)]
                lines.append(row("2 nodes, non-owner", n, asyncio.run(load(across, pids, s, "x"))))
                one = asyncio.run(load([(a, [a])], pids, s, "y"))
                lines.append(row("2 nodes, owner, 1 session", 1, one))
                relayed = asyncio.run(load([(a, [b])], pids, s, "z"))
                lines.append(row("2 nodes, non-owner, 1 session", 1, relayed))
    print(f"\nSeed-000 REST /: 30 boxes per frame, no image, {s:.0f} s per row, loopback\n")
    print("| setup | sessions | requests | req/s | p50 ms | p99 ms | CPU ms/req (all processes) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for line in lines:
        print(line)
    print(
        f"\ncross-node overhead, 1 session: +{relayed['p50_ms'] - one['p50_ms']:.2f} ms p50, "
        f"+{relayed['cpu_ms'] - one['cpu_ms']:.3f} ms CPU per request"
    )


if __name__ == "__main__":
    main()
