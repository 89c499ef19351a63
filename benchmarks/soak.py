"""Soak: short sessions over every transport against one server for 10 minutes.

Fresh ids (and fresh WebRTC tracks) all the time: seed-000 and seed-003 HTTP clients,
seed-001 listeners coming and going, seed-002 Socket.IO connections and seed-004 WebRTC
peers, the scenario of ``tests/e2e/soak.py``. Prints the
server's memory, file descriptors, event-loop tasks and open sessions over time, and each
transport's frames as the clients counted them and as ``/metrics`` did.

    python benchmarks/soak.py [--minutes 10] [--workers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.e2e.soak: the same scenario CI runs briefly

from tests.e2e.soak import (  # noqa: E402
    TRANSPORTS,
    Footprint,
    Tally,
    churn,
    mismatches,
    server_config,
    server_env,
    settle,
)

from _server import framebroker_server  # noqa: E402

TASKS = 4
"""Tasks past the idle server's allowed at the end: Engine.IO's first connection starts two
that live as long as the server, plus two of slack (see ``tests/e2e/test_soak.py``)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=20,
        help="clients of each HTTP kind; half as many listeners and Socket.IO clients, a "
        "quarter as many WebRTC peers",
    )
    parser.add_argument("--sample-s", type=float, default=60.0)
    args = parser.parse_args()
    os.environ.update(server_env())  # the server imports the soak's WebRTC model
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "soak.toml"
        config.write_text(server_config(idle_timeout_s=2.0))
        with framebroker_server("--config", str(config)) as (url, pid):
            idle = Footprint.of(pid, url)
            warm = asyncio.run(churn(url, 10, workers=4))
            # Closed Socket.IO connections hold a sleeping task for Engine.IO's ping
            # interval; the settled rows wait those out.
            allowed = idle.tasks + TASKS
            start = settle(pid, url, 0, tasks_at_most=allowed, timeout=90)
            rows: list[tuple[str, Footprint]] = [("start, settled", start)]
            total = Tally()
            started = time.monotonic()
            end = started + 60 * args.minutes
            while time.monotonic() < end:
                step = min(args.sample_s, end - time.monotonic())
                total.add(asyncio.run(churn(url, step, workers=args.workers)))
                minute = (time.monotonic() - started) / 60
                rows.append((f"{minute:.1f} min (busy)", Footprint.of(pid, url)))
            final = settle(pid, url, 0, tasks_at_most=allowed, timeout=90)
            rows.append(("end, settled", final))
    report(args, rows, total, warm.failures, mismatches(total, start, final), start, final)


def report(
    args: argparse.Namespace,
    rows: list[tuple[str, Footprint]],
    total: Tally,
    warm_failures: list[str],
    unaccounted: list[str],
    start: Footprint,
    final: Footprint,
) -> None:
    half, quarter = max(1, args.workers // 2), max(1, args.workers // 4)
    print(
        f"\nSoak: {args.minutes:g} min, {args.workers} clients per HTTP kind, {half} seed-001 "
        f"listeners, {half} Socket.IO clients, {quarter} WebRTC peers, loopback, "
        f"{os.cpu_count()} cores\n"
    )
    print("| when | RSS MB | open fds | loop tasks | sessions |")
    print("|---|---:|---:|---:|---:|")
    for when, f in rows:
        print(f"| {when} | {f.rss_mb:.1f} | {f.fds} | {f.tasks} | {f.sessions} |")
    print(
        "\n| transport | sessions | frames sent | answered | dropped | lost in flight "
        "| /metrics received | processed | dropped |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for transport in TRANSPORTS:
        c = total.by[transport]
        s = final.frames_since(start, transport)
        print(
            f"| {transport} | {c.sessions} | {c.frames} | {c.answered} | {c.dropped} "
            f"| {c.lost} | {s['received']} | {s['processed']} | {s['dropped']} |"
        )
    print(
        "\nanswered: a 200, a Socket.IO ack whose window was analysed, a WebRTC prediction; "
        "dropped: a 503, a refused ack, a dropped window's frames, a WebRTC frame overtaken "
        "by a newer one; lost in flight: WebRTC frames sent that never arrived (in flight "
        "when the peer closed). Socket.IO frames reach /metrics through the in-process "
        "window pipeline."
    )
    print(f"seed-001 listeners: {total.listeners}")
    print(f"HTTP requests sent again after an idle keep-alive close: {total.reconnects}")
    print(f"every frame accounted for: {'yes' if not unaccounted else 'NO'}")
    for line in unaccounted:
        print(f"  {line}")
    failures = warm_failures + total.failures
    print(f"failures: {len(failures)} {failures[:5]}")


if __name__ == "__main__":
    main()
