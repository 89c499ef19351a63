"""People counter end to end on vtest (640x480, 2 cores) against the detector alone.

End to end = the server reading the clip itself (decode, detect, track, count, faces,
annotate, JPEG) with 0, 1, 10 and 100 WebSocket listeners on loopback; the rate is read from
the session's own counters and the server's CPU from /proc. The listeners run in this
process, on the same cores, and their CPU is shown beside the server's. Each listener gets at
most ``--push-fps`` frames a second (30 by default, the most the seed's clients expect; 0
pushes every frame the pipeline makes).

Listeners are minimal clients (``_ws_listener.py``) that step over each message without
decoding it, as a load generator should; ``--client websockets`` uses the websockets
library's client instead, which spends about ten times more per message.

The detector alone is PersonDetector on the same decoded frames, in this process, in the same
run, two ways: one frame at a time on two threads (the lowest latency), and two frames at a
time on one thread each, as the server runs it (the most frames per second). The ratio is
given against both; the second is the stricter.

    python benchmarks/bench_people.py [--seconds 15] [--listeners 0 1 10 100]
                                      [--client raw|websockets] [--parallel-frames N]
                                      [--push-fps 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import websockets

from _server import framebroker_server
from _ws_listener import connect
from framebroker.core import Frame, ProcessContext
from framebroker.detectors import runtime
from framebroker.media.sampling import read_frames
from framebroker.processors.detect import PersonDetector

CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "media"
CLIP = CLIP / "vtest_640x480_h264.mp4"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def detector_alone(threads: int, at_once: int, frames: int = 300) -> float:
    """Frames per second of the person detector alone on decoded frames held in memory,
    ``at_once`` frames side by side, each run on ``threads`` threads."""
    images = [img for img, _, _ in read_frames(str(CLIP))][:frames]
    runtime.configure(threads)
    det = PersonDetector()
    ctx = ProcessContext(session_id="bench")

    def detect(img: object) -> None:
        det.process(Frame.from_array(img), ctx)  # type: ignore[arg-type]

    detect(images[0])
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(detect, images[:at_once]))  # every thread's first run, off the clock
        t0 = time.perf_counter()
        list(pool.map(detect, images))
        return len(images) / (time.perf_counter() - t0)


def detector_rates() -> tuple[float, float]:
    """(one frame at a time on two threads, two at a time on one thread each)."""
    cores = min(2, os.cpu_count() or 1)
    return detector_alone(cores, 1), detector_alone(1, cores)


async def listen(url: str, counting: asyncio.Event, stop: asyncio.Event, counts: list[int]) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        n = 0
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            if counting.is_set() and '"type":"frame"' in msg[:20]:
                n += 1
        counts.append(n)


async def measure(
    base: str, pid: int, listeners: int, seconds: float, client: str
) -> dict[str, float]:
    ws_url = base.replace("http", "ws") + "/ws/live"
    counting, stop = asyncio.Event(), asyncio.Event()
    counts: list[int] = []
    tasks = []
    raw = []
    if client == "raw":
        raw = [await connect(ws_url, b'{"type":"frame"') for _ in range(listeners)]
    else:
        tasks = [
            asyncio.create_task(listen(ws_url, counting, stop, counts)) for _ in range(listeners)
        ]
    await asyncio.sleep(1.0)
    async with httpx.AsyncClient(base_url=base) as http:
        before = (await http.get("/v1/sessions/vtest")).json()["stats"]
        cpu0, t0, own0 = cpu_seconds(pid), time.perf_counter(), time.process_time()
        counting.set()
        for listener in raw:
            listener.counting = True
        await asyncio.sleep(seconds)
        counting.clear()
        for listener in raw:
            listener.counting = False
        after = (await http.get("/v1/sessions/vtest")).json()["stats"]
        cpu1, t1, own1 = cpu_seconds(pid), time.perf_counter(), time.process_time()
    stop.set()
    await asyncio.gather(*tasks)
    for listener in raw:
        counts.append(listener.count)
        listener.close()
    await asyncio.gather(*(listener.closed for listener in raw))
    frames = after["frames_processed"] - before["frames_processed"]
    return {
        "fps": frames / (t1 - t0),
        "cpu_ms": 1000 * (cpu1 - cpu0) / max(frames, 1),
        "clients_ms": 1000 * (own1 - own0) / max(frames, 1),
        "pushed": (sum(counts) / len(counts) / (t1 - t0)) if counts else 0.0,
        "dropped": after["frames_dropped"] - before["frames_dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--listeners", type=int, nargs="+", default=[0, 1, 10, 100])
    parser.add_argument("--client", choices=["raw", "websockets"], default="raw")
    parser.add_argument(
        "--parallel-frames", type=int, default=None, help="the server's parallel_frames"
    )
    parser.add_argument(
        "--push-fps",
        type=float,
        default=30.0,
        help="frames pushed to each listener per second at most (live.max_fps); the seed "
        "pushes 10 to 30; 0: every frame",
    )
    args = parser.parse_args()
    if not CLIP.exists():
        raise SystemExit(f"test clip not found at {CLIP} (see ../shared/data/README.md)")
    # Measured before and after the server runs, so a change in the machine's load during the
    # run shows as a spread between the two instead of skewing the ratio unnoticed.
    before = detector_rates()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        top = "" if args.parallel_frames is None else f"parallel_frames = {args.parallel_frames}\n"
        config.write_text(f"{top}[live]\nmax_fps = {args.push_fps}\n")
        with framebroker_server(
            "--config", str(config), "--source", f"vtest={CLIP}", "--no-source-realtime", "--loop"
        ) as (url, pid):
            for n in args.listeners:
                rows.append((n, asyncio.run(measure(url, pid, n, args.seconds, args.client))))
    after = detector_rates()
    latency, throughput = ((a + b) / 2 for a, b in zip(before, after, strict=True))
    print(
        f"\nPeople counter on vtest 640x480, {args.seconds:.0f} s per row, 2 cores, "
        f"{args.client} listeners, "
        + (
            f"at most {args.push_fps:g} frames/s pushed\n"
            if args.push_fps
            else "every frame pushed\n"
        )
    )
    print(
        "| listeners | end-to-end fps | vs detector, 1 at a time | vs detector, 2 at a time "
        "| server CPU ms/frame | listeners' CPU ms/frame | frames pushed/s per listener |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows:
        print(
            f"| {n} | {r['fps']:.1f} | {100 * r['fps'] / latency:.0f}% "
            f"| {100 * r['fps'] / throughput:.0f}% | {r['cpu_ms']:.1f} "
            f"| {r['clients_ms']:.1f} | {r['pushed']:.1f} |"
        )
    print(
        f"| detector alone, 1 frame at a time on 2 threads | {latency:.1f} | 100% | | | | |\n"
        f"| detector alone, 2 frames at a time on 1 thread each | {throughput:.1f} | | 100% "
        "| | | |\n\n"
        f"detector alone before the server: {before[0]:.1f} / {before[1]:.1f} fps, "
        f"after: {after[0]:.1f} / {after[1]:.1f} fps"
    )


if __name__ == "__main__":
    main()
