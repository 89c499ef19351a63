"""Seed-000 REST on several processes: `serve --workers 1` against `--workers 2` on one
machine, a cluster of 1, 2 and 4 nodes, and what a request that lands on a node that does not
run its session costs (it is relayed to the owner).

Each session posts 30-box frames back to back, boxes only, over one keep-alive connection,
with the same minimal client as bench_rest.py. Three tables:

1. One machine: the plain `framebroker serve` (one process, SQLite, no cluster), the baseline
   a user has today, beside `serve --workers 1` and `serve --workers 2` (a supervisor, its
   workers each on a listening socket of its own on the port, a private redis-server,
   SQLite shared). A session is made by its first request, on the worker its connection
   landed on, so every request goes to the session's owner; how the kernel spread the
   connections shows in each worker's share of the CPU.
2. The cluster as it grows: N = 1, 2, 4 `serve --cluster` nodes, each on a loopback address
   of its own (127.0.0.1, .2, ...), sharing one redis-server and one PostgreSQL database
   (both started here: the tests' own helpers); the sessions spread evenly over the nodes,
   each request sent to its session's node (what a front proxy routing on the id's node
   prefix does).
3. Cross-node overhead: on the 2 nodes, the same sessions with each request sent to the
   other node, which relays it to the owner; with 32 sessions and with one.

CPU is user + system time per request, read from /proc: of every framebroker process (the
supervisor and its workers, or the nodes), of Redis (the private one, or the cluster's)
apart, and of this script, the load generator. It shares the cores with the servers, so
requests/s is a floor, and on a 2-core machine a second process competes with the client
for the cores rather than adding one.

    python benchmarks/bench_cluster.py [--seconds 5] [--sessions 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.redis_server, tests.postgres: the tests' own

from tests.postgres import running_postgres  # noqa: E402
from tests.redis_server import running_redis  # noqa: E402

from _server import framebroker_server, process_tree, wait_for_workers  # noqa: E402
from bench_rest import Connection, cpu_seconds, frame_boxes  # noqa: E402

SECRET = "bench-cluster-secret-of-32-characters"
NODES = (1, 2, 4)


def serve(
    *args: str, name: str, host: str = "127.0.0.1"
) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """`framebroker serve ARGS` as node ``name`` on a free port of ``host``: (URL, pid)."""
    return framebroker_server("--node-id", name, *args, env={"SECRET_KEY": SECRET}, host=host)


@dataclass
class Processes:
    """Whose CPU a row counts: the framebroker processes (by role) and Redis."""

    framebroker: dict[int, str]
    redis: list[int] = field(default_factory=list)

    @classmethod
    def of_supervisor(cls, pid: int) -> Processes:
        """A `serve --workers` supervisor, its workers and its private redis-server."""
        tree = process_tree(pid)
        redis = [p for p, name in tree.items() if name == "redis-server"]
        workers = sorted(p for p in tree if p != pid and p not in redis)
        roles = {pid: "supervisor"} | {p: f"worker {i}" for i, p in enumerate(workers)}
        return cls(roles, redis)


async def one_session(
    urls: list[str], sid: str, stop_at: float, out: list[float], home: str
) -> None:
    """Make the session on ``home``, then post frames to ``urls`` in turn. When ``home`` is
    the first of ``urls`` the session is made over that connection (under ``--workers`` a
    second connection may land on another worker)."""
    headers = {"Content-Type": "application/json", "Session-Id": sid}
    conns = [await Connection.open(u) for u in urls]
    first = conns[0] if home == urls[0] else await Connection.open(home)
    status, reply = await first.request("POST", json.dumps({"boxes": []}).encode(), headers)
    if first is not conns[0]:
        first.close()
    if status != 200:
        raise RuntimeError(f"{status}: {reply[:200]!r}")
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


@dataclass
class Row:
    name: str
    sessions: int
    requests: int
    req_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    """Every framebroker process's CPU per request."""
    redis_us: float | None
    client_ms: float
    share: dict[str, float]
    """Each framebroker process's share of their CPU, by role."""

    def line(self) -> str:
        redis = "—" if self.redis_us is None else f"{self.redis_us:.0f}"
        return (
            f"| {self.name} | {self.sessions} | {self.requests} | {self.req_s:.0f} "
            f"| {self.p50_ms:.2f} | {self.p99_ms:.2f} | {self.cpu_ms:.3f} | {redis} "
            f"| {self.client_ms:.3f} |"
        )


async def load(
    name: str, plan: list[tuple[str, list[str]]], procs: Processes, seconds: float, tag: str
) -> Row:
    """``plan``: per session, the node that makes it and the nodes its frames go to."""
    latencies: list[float] = []
    me = os.getpid()
    watched = [*procs.framebroker, *procs.redis, me]
    cpu0 = {p: cpu_seconds(p) for p in watched}
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(
        *(
            one_session(urls, f"{tag}{i}", stop_at, latencies, home)
            for i, (home, urls) in enumerate(plan)
        )
    )
    elapsed = time.perf_counter() - start
    cpu = {p: cpu_seconds(p) - cpu0[p] for p in watched}
    fb = sum(cpu[p] for p in procs.framebroker)
    lat = np.array(latencies) * 1000
    n = len(latencies)
    return Row(
        name=name,
        sessions=len(plan),
        requests=n,
        req_s=n / elapsed,
        p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99)),
        cpu_ms=1000 * fb / n,
        redis_us=1e6 * sum(cpu[p] for p in procs.redis) / n if procs.redis else None,
        client_ms=1000 * cpu[me] / n,
        share={role: cpu[p] / fb if fb else 0.0 for p, role in procs.framebroker.items()},
    )


def run(name: str, plan: list[tuple[str, list[str]]], procs: Processes, s: float, tag: str) -> Row:
    row = asyncio.run(load(name, plan, procs, s, tag))
    print(f"  {row.line()}", file=sys.stderr, flush=True)
    return row


def one_machine(n: int, s: float) -> list[Row]:
    rows = []
    with serve(name="single") as (url, pid):
        rows.append(run("`serve`", [(url, [url])] * n, Processes({pid: "server"}), s, "s"))
        rows.append(run("`serve`, 1 session", [(url, [url])], Processes({pid: "server"}), s, "t"))
    for workers in (1, 2):
        with serve("--workers", str(workers), name=f"w{workers}") as (url, pid):
            wait_for_workers(url, workers)
            procs = Processes.of_supervisor(pid)
            name = f"`serve --workers {workers}`"
            rows.append(run(name, [(url, [url])] * n, procs, s, f"k{workers}."))
    return rows


def cluster(n: int, s: float) -> tuple[list[tuple[int, Row]], list[Row]]:
    """The curve over :data:`NODES` and, on 2 nodes, the relayed requests."""
    curve: list[tuple[int, Row]] = []
    relayed: list[Row] = []
    with (
        running_redis() as redis,
        running_postgres(durable=True) as pg,
        contextlib.ExitStack() as nodes,
    ):
        flags = ("--cluster", redis.url, "--database-url", pg.create_database("bench"))
        urls: list[str] = []
        pids: dict[int, str] = {}
        for k in NODES:
            while len(urls) < k:  # node i on 127.0.0.<i+1>, as if on a machine of its own
                i = len(urls)
                url, pid = nodes.enter_context(serve(*flags, name=f"n{i}", host=f"127.0.0.{i + 1}"))
                urls.append(url)
                pids[pid] = f"node {i}"
            procs = Processes(dict(pids), [redis.pid])
            spread = [(urls[i % k], [urls[i % k]]) for i in range(n)]
            curve.append((k, run(f"{k} node{'s' * (k > 1)}", spread, procs, s, f"c{k}.")))
            if k == 2:
                a, b = urls
                across = [(a, [b]) if i % 2 else (b, [a]) for i in range(n)]
                relayed += [
                    run("2 nodes, non-owner", across, procs, s, "x"),
                    run("2 nodes, owner, 1 session", [(a, [a])], procs, s, "y"),
                    run("2 nodes, non-owner, 1 session", [(a, [b])], procs, s, "z"),
                ]
    return curve, relayed


HEADER = (
    "| setup | sessions | requests | req/s | p50 ms | p99 ms | framebroker CPU ms/req "
    "| Redis CPU µs/req | client CPU ms/req |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def shares(row: Row) -> str:
    workers = {role: x for role, x in row.share.items() if role != "supervisor"}
    return " / ".join(f"{100 * x:.0f} %" for x in workers.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=32)
    args = parser.parse_args()
    n, s = args.sessions, args.seconds
    machine = one_machine(n, s)
    curve, relayed = cluster(n, s)
    cores = len(os.sched_getaffinity(0))

    print(
        f"\nSeed-000 REST /: 30 boxes per frame, no image, {s:g} s per row, loopback. The load "
        f"generator (this script, one process) shares the {cores} cores with the servers and "
        "Redis: its CPU is the last column, and requests/s is what is left to the servers.\n"
    )
    print("One machine: one process against `--workers` (SQLite, a private Redis)\n")
    print(HEADER)
    for row in machine:
        print(row.line())
    single, _, one, two = machine
    print(
        f"\n2 workers / 1 worker: {two.req_s / one.req_s:.2f}x requests/s (target 1.7x); "
        f"p99 {one.p99_ms:.1f} → {two.p99_ms:.1f} ms (target: no worse). "
        f"2 workers / `serve`: {two.req_s / single.req_s:.2f}x. "
        f"Workers' shares of the framebroker CPU with 2 workers: {shares(two)}."
    )

    print(
        f"\nThe cluster as it grows: N nodes on 127.0.0.1..N, one Redis, one PostgreSQL, "
        f"{n} sessions spread evenly, each request to its session's node\n"
    )
    print("| nodes " + HEADER.removeprefix("| setup "))
    for _, row in curve:
        print(row.line())
    base = curve[0][1]
    print(
        "\nrequests/s against 1 node: "
        + ", ".join(f"{k} nodes {row.req_s / base.req_s:.2f}x" for k, row in curve[1:])
    )

    print(
        "\nCross-node overhead: 2 nodes, each request to the node that runs its session "
        "(owner) or to the other (non-owner, which relays it)\n"
    )
    print(HEADER)
    owner = curve[NODES.index(2)][1]
    owner.name = "2 nodes, owner"
    for row in (owner, *relayed):
        print(row.line())
    across, one_owner, one_across = relayed
    for label, a, b in ((f"{n} sessions", owner, across), ("1 session", one_owner, one_across)):
        print(
            f"\nadded by the relay, {label}: +{b.p50_ms - a.p50_ms:.2f} ms p50, "
            f"+{b.cpu_ms - a.cpu_ms:.3f} ms framebroker CPU and "
            f"+{(b.redis_us or 0) - (a.redis_us or 0):.0f} µs Redis CPU per request"
        )


if __name__ == "__main__":
    main()
