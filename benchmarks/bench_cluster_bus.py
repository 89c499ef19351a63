"""The cluster bus (framebroker.cluster.bus) between simulated nodes on loopback: Redis's CPU
per message and the latency a subscriber on another node sees, for pub/sub frames and stream
events, as the cluster grows from 1 to 2 to 4 nodes.

Each node is its own process with its own RedisBus, publishes one source (``live/cam<i>/...``)
at a fixed rate and subscribes to ``live/*``, as a console on every node would: a full mesh,
so every message goes to N - 1 other nodes (with 1 node, Redis carries it to nobody: the row
is what publishing alone costs). Frames are 56 KB of base64 text (a pushed 640x480 JPEG) at
30 a second per node, over pub/sub; events are small dicts at 200 a second per node, over
the stream. Latency is from ``publish()`` to the subscriber's ``drain()`` on the other node
(one machine, one clock). ``lost`` compares what arrived with what was sent times N - 1.

The ``raw`` rows are the same traffic written the way one would with redis-py alone (a
``PUBLISH`` or ``XADD`` per message, a pub/sub reader, an ``XREAD`` loop), for comparison:
what the bus adds (envelopes, mailboxes, deduplication) and saves (pipelined writes).
Redis, the nodes and this script share the machine's cores, so on 2 cores the 4-node rows
measure contention too.

    python benchmarks/bench_cluster_bus.py [--seconds 4] [--nodes 1 2 4] [--raw-nodes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.redis_server: the tests' own redis-server

from tests.redis_server import RedisServer  # noqa: E402

FRAME_TEXT = base64.b64encode(bytes(range(256)) * 168).decode()  # 57 344 chars, a pushed frame
RATES = {"frames": 30.0, "events": 200.0}


# -- one node (a child process) --------------------------------------------------------------


async def run_node(args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    from framebroker.cluster.bus import RedisBus
    from framebroker.cluster.connection import connect
    from framebroker.cluster.keys import Keys

    redis: Redis = connect(args.url, timeout_s=2.0)
    keys = Keys("bench")
    suffix = "frame" if args.kind == "frames" else "event"
    topic = f"live/cam{args.node}/{suffix}"
    latencies: list[float] = []
    sent = 0
    start, end = args.start_at + args.warmup, args.start_at + args.warmup + args.seconds

    def payload(now: float) -> dict[str, Any]:
        if args.kind == "frames":
            return {"jpeg_b64": FRAME_TEXT, "t": now, "node": args.node}
        return {"data": {"line": "door", "direction": "in", "n": sent}, "t": now, "node": args.node}

    def note(message_payload: dict[str, Any], now: float) -> None:
        if message_payload["node"] != args.node and start <= message_payload["t"] < end:
            latencies.append(now - message_payload["t"])

    async def pace(send: Any) -> None:
        nonlocal sent
        period = 1.0 / RATES[args.kind]
        next_at = args.start_at
        while (now := time.time()) < end + 0.2:
            if now >= next_at:
                await send(payload(now))
                if start <= now < end:
                    sent += 1
                next_at += period
            await asyncio.sleep(max(0.0, next_at - time.time()))

    if args.impl == "framebroker":
        bus = RedisBus(redis, keys=keys, node=f"n{args.node}", maxlen=4096, outbox=4096)
        await bus.start()
        feed = bus.subscribe("live/*", maxlen=4096)
        await bus.synced()

        async def send(p: dict[str, Any]) -> None:
            bus.publish(topic, p)

        async def receive() -> None:
            while time.time() < end + 1.0:
                try:
                    async with asyncio.timeout(0.2):
                        await feed.wait()
                except TimeoutError:
                    continue
                now = time.time()
                for m in feed.drain():
                    note(m.payload, now)

        await asyncio.gather(pace(send), receive())
        await bus.close()
        dropped = feed.dropped
    else:
        import orjson

        channel = keys.channel(topic)

        async def send(p: dict[str, Any]) -> None:
            if args.kind == "frames":
                await redis.publish(channel, orjson.dumps(p))
            else:
                await redis.xadd(keys.events, {"m": orjson.dumps(p)}, maxlen=10_000)

        async def receive() -> None:
            if args.kind == "frames":
                pubsub = redis.pubsub()
                await pubsub.psubscribe(keys.channel_pattern("live/"))
                while time.time() < end + 1.0:
                    m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                    if m is not None:
                        note(orjson.loads(m["data"]), time.time())
                await pubsub.aclose()
            else:
                position: Any = "$"
                while time.time() < end + 1.0:
                    read: Any = await redis.xread({keys.events: position}, count=512, block=200)
                    now = time.time()
                    for _, entries in read or []:
                        for entry_id, values in entries:
                            position = entry_id
                            note(orjson.loads(values[b"m"]), now)

        reader = asyncio.create_task(receive())
        await asyncio.sleep(0.3)  # subscribed before the start
        await pace(send)
        await reader
        dropped = 0
    await redis.aclose()
    return {"sent": sent, "latencies": latencies, "dropped": dropped}


# -- the parent ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def redis_cpu_seconds(url: str) -> float:
    """Redis's own account of its CPU time (``INFO cpu``, to the microsecond: /proc counts
    in 10 ms ticks, too coarse for a few seconds of a mostly idle server)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info: Any = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def measure(
    server: RedisServer, kind: str, impl: str, nodes: int, seconds: float
) -> dict[str, Any]:
    server.restart(kill=False)  # each row starts on an empty Redis
    warmup = 1.0
    start_at = time.time() + 2.5  # the children import and subscribe first
    node_args = ["--url", server.url, "--kind", kind, "--impl", impl, "--seconds", str(seconds)]
    node_args += ["--start-at", repr(start_at), "--warmup", str(warmup)]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--node", str(i), *node_args],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(nodes)
    ]
    time.sleep(max(0.0, start_at + warmup - time.time()))
    cpu0 = redis_cpu_seconds(server.url)
    time.sleep(seconds)
    cpu = redis_cpu_seconds(server.url) - cpu0
    results = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        if child.returncode != 0:
            raise RuntimeError(f"node exited with {child.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    sent = sum(r["sent"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    expected = sent * (nodes - 1)
    return {
        "kind": kind,
        "impl": impl,
        "nodes": nodes,
        "sent_s": sent / seconds,
        "delivered_s": len(latencies) / seconds,
        "cpu_us_sent": 1e6 * cpu / max(sent, 1),
        "cpu_us_delivered": 1e6 * cpu / len(latencies) if latencies else None,
        "p50_ms": 1000 * percentile(latencies, 0.5) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else None,
        "lost_pct": 100 * (1 - len(latencies) / expected) if expected else None,
    }


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--raw-nodes", type=int, nargs="*", default=[2])
    parser.add_argument("--kinds", nargs="+", default=["frames", "events"], choices=list(RATES))
    # a node's own arguments (the children)
    parser.add_argument("--node", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=list(RATES), help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["framebroker", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node is not None:
        print(json.dumps(asyncio.run(run_node(args))))
        return

    rows = []
    server = RedisServer()
    server.start()
    try:
        for kind in args.kinds:
            for nodes in args.nodes:
                rows.append(measure(server, kind, "framebroker", nodes, args.seconds))
            for nodes in args.raw_nodes:
                rows.append(measure(server, kind, "raw", nodes, args.seconds))
    finally:
        server.close()
    rate = ", ".join(f"{k} {RATES[k]:g}/s" for k in args.kinds)
    print(f"\nCluster bus on one redis-server ({rate} per node; every node listens to all)\n")
    print(
        "| kind | impl | nodes | sent/s | delivered/s | Redis CPU µs/sent "
        "| Redis CPU µs/delivered | p50 ms | p99 ms | lost % |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['impl']} | {r['nodes']} | {r['sent_s']:.0f} "
            f"| {r['delivered_s']:.0f} | {r['cpu_us_sent']:.1f} "
            f"| {fmt(r['cpu_us_delivered'], '.1f')} | {fmt(r['p50_ms'], '.2f')} "
            f"| {fmt(r['p99_ms'], '.2f')} | {fmt(r['lost_pct'], '.1f')} |"
        )


if __name__ == "__main__":
    main()
