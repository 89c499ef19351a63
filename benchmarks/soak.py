"""Soak: 50 concurrent clients (seed-000 and seed-003 sessions with fresh ids all the time,
seed-001 listeners coming and going) against one server for 10 minutes; prints the server's
memory, file descriptors, event-loop tasks and open sessions over time, and the frame tally.

    python benchmarks/soak.py [--minutes 10] [--workers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.e2e.soak: the same scenario CI runs briefly

from tests.e2e.soak import Footprint, Tally, churn, settle  # noqa: E402

from _server import framebroker_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=20, help="clients of each HTTP kind")
    parser.add_argument("--sample-s", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "soak.toml"
        config.write_text("[limits]\nsession_idle_timeout_s = 2.0\n")
        with framebroker_server("--config", str(config)) as (url, pid):
            asyncio.run(churn(url, 10, workers=4))  # warm up
            rows: list[tuple[str, Footprint]] = [("start", settle(pid, url, 0))]
            total = Tally()
            started = time.monotonic()
            end = started + 60 * args.minutes
            while time.monotonic() < end:
                step = min(args.sample_s, end - time.monotonic())
                t = asyncio.run(churn(url, step, workers=args.workers))
                for name in ("frames", "answered", "dropped", "sessions", "listeners"):
                    setattr(total, name, getattr(total, name) + getattr(t, name))
                total.failures += t.failures
                minute = (time.monotonic() - started) / 60
                rows.append((f"{minute:.1f} min (busy)", Footprint.of(pid, url)))
            rows.append(("end, settled", settle(pid, url, 0)))
    print(f"\nSoak: {args.minutes:g} min, {args.workers} clients per HTTP kind and "
          f"{max(1, args.workers // 2)} listeners, loopback\n")  # fmt: skip
    print("| when | RSS MB | open fds | loop tasks | sessions |")
    print("|---|---:|---:|---:|---:|")
    for when, f in rows:
        print(f"| {when} | {f.rss_mb:.1f} | {f.fds} | {f.tasks} | {f.sessions} |")
    print(
        f"\nframes {total.frames}: answered {total.answered}, dropped (503) {total.dropped}, "
        f"other {total.frames - total.answered - total.dropped}; sessions {total.sessions}; "
        f"listeners {total.listeners}; failures {total.failures[:5]}"
    )


if __name__ == "__main__":
    main()
