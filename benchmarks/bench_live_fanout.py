"""The seed-001 push path alone: server CPU per pushed frame with 1, 10 and 100 listeners.

The people-counter benchmark (bench_people.py) measures the whole pipeline, where the
detector's 20+ ms per frame and this VM's noise hide what each listener costs. Here a server
process runs only the live push (LiveHub behind `/ws/live`, the same code `serve` mounts) and
publishes a synthetic annotated frame (base64 JPEG text of the size pushed vtest frames have,
56 KB) at a fixed rate; listeners in this process read every message. The server's CPU time
per frame, divided by the listener count, is what one more listener costs; ideally it is
flat. Its kernel share includes loopback TCP delivering each copy into the listener's socket
(on loopback the sender's system call does the receiver's network work too).

    python benchmarks/bench_live_fanout.py [--seconds 6] [--fps 30] [--listeners 1 10 100]
                                           [--event-loop auto|asyncio|uvloop] [--plain]
                                           [--message-kb 56]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import websockets

from _server import free_port

FRAME_TEXT_KB = 56  # measured: a pushed vtest frame, 640x480 at JPEG quality 70 (4:2:0), in base64


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_server(port: int, fps: float, event_loop: str, plain: bool, kb: int) -> None:
    """The child: LiveHub on /ws/live and a publisher of synthetic frames."""
    import uvicorn
    from starlette.applications import Starlette

    from framebroker.core.bus import Bus, Message
    from framebroker.runtime.feeds import BusFeed
    from framebroker.server.serve import loop_factory
    from framebroker.server.ws_protocol import PreframedWebSocketProtocol
    from framebroker.transports.people_ws import LiveHub, live_routes

    Keep = Callable[[Message], bool]

    class BusSessions:
        """What LiveHub asks of its Sessions, the bus as the broker offers it: no sessions."""

        def __init__(self, bus: Bus) -> None:
            self.bus = bus

        def subscribe(
            self, pattern: str, *, maxlen: int | None = None, keep: Keep | None = None
        ) -> BusFeed:
            return BusFeed(self.bus, pattern, maxlen=maxlen, keep=keep)

        def publish(self, topic: str, payload: object) -> int:
            return self.bus.publish(topic, payload)

    bus = Bus()
    hub = LiveHub(BusSessions(bus))  # type: ignore[arg-type]
    jpeg_b64 = base64.b64encode(os.urandom(kb * 1000 * 3 // 4)).decode()

    async def publish() -> None:
        period = 1.0 / fps
        next_at = time.monotonic()
        while True:
            bus.publish("live/bench/frame", {"jpeg_b64": jpeg_b64, "time": time.time()})
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await hub.start()
        task = asyncio.create_task(publish())
        yield
        task.cancel()
        await hub.stop()

    app = Starlette(routes=live_routes(hub, "/ws/live"), lifespan=lifespan)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_per_message_deflate=False,
        ws="websockets-sansio" if plain else PreframedWebSocketProtocol,  # serve's own
    )
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(uvicorn.Server(config).serve())


async def measure(port: int, pid: int, listeners: int, seconds: float) -> dict[str, float]:
    url = f"ws://127.0.0.1:{port}/ws/live"
    received = [0] * listeners
    stop = asyncio.Event()

    async def listen(i: int, ready: asyncio.Event) -> None:
        async with websockets.connect(url, max_size=2**22, compression=None) as ws:
            ready.set()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await ws.recv()
                        received[i] += 1

    readies = [asyncio.Event() for _ in range(listeners)]
    tasks = [asyncio.create_task(listen(i, readies[i])) for i in range(listeners)]
    await asyncio.gather(*(r.wait() for r in readies))
    await asyncio.sleep(1.0)  # settle
    got0, cpu0, t0 = sum(received), cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    got, cpu, elapsed = sum(received) - got0, cpu_seconds(pid) - cpu0, time.monotonic() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    frames = got / listeners
    return {
        "listeners": listeners,
        "frames_per_listener_s": frames / elapsed,
        "cpu_ms_per_frame": 1000 * cpu / max(frames, 1),
        "cpu_us_per_listener_frame": 1e6 * cpu / max(got, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--listeners", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--event-loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument(
        "--message-kb", type=int, default=FRAME_TEXT_KB, help="size of one frame message"
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="uvicorn's stock WebSocket protocol: each listener's message framed on its own",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.fps, args.event_loop, args.plain, args.message_kb)
        return
    rows = []
    for n in args.listeners:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(port),
                "--fps",
                str(args.fps),
                "--event-loop",
                args.event_loop,
                "--message-kb",
                str(args.message_kb),
                *(["--plain"] if args.plain else []),
            ]
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError):
                    import socket

                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
            rows.append(asyncio.run(measure(port, proc.pid, n, args.seconds)))
        finally:
            proc.terminate()
            proc.wait(10)
    print(
        f"\nseed-001 push alone: one {args.message_kb} KB frame message at "
        f"{args.fps:g}/s, event loop {args.event_loop}, "
        f"{'stock WebSocket protocol' if args.plain else 'ready frames'}\n"
    )
    print("| listeners | frames/s per listener | server CPU ms/frame | µs per listener-frame |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['listeners']:.0f} | {r['frames_per_listener_s']:.1f} | "
            f"{r['cpu_ms_per_frame']:.2f} | {r['cpu_us_per_listener_frame']:.1f} |"
        )


if __name__ == "__main__":
    main()
