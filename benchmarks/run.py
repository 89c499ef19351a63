"""Run every benchmark and print their tables: `python benchmarks/run.py`.

Each benchmark is also runnable alone (`python benchmarks/bench_tracker.py --help`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "bench_tracker.py",
    "bench_rest.py",
    "bench_people.py",
    "bench_people_parts.py",
    "bench_live_fanout.py",
    "bench_frames.py",
    "bench_socketio.py",
    "bench_webrtc.py",
    "bench_store.py",
    "bench_cluster_bus.py",
    "bench_cluster.py",
]


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"\n## {name}\n", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / name)], cwd=HERE) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
