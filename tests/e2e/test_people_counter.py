"""The people counter end to end: the real server reads the bundled clip, detects, tracks and
counts people, and pushes it all to a real WebSocket client on the seed's own port."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import simplejpeg
import websockets

from framebroker.media.sources import demo_clip

from .server import compat_flags, free_port, running_server

STATS = {"count_in", "count_out", "face_count", "daily_event_count", "event_active",
         "current_event_count_in"}  # fmt: skip


async def watch(url: str, seconds: float) -> dict[str, Any]:
    """Collect pushed messages until people have been counted (or time runs out)."""
    seen: dict[str, Any] = {"frames": 0, "stats": [], "frame_shape": None}
    async with websockets.connect(url, max_size=None) as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg["type"] == "frame":
                seen["frames"] += 1
                if seen["frame_shape"] is None:
                    jpeg = base64.b64decode(msg["data"])
                    seen["frame_shape"] = simplejpeg.decode_jpeg(jpeg).shape
            elif msg["type"] == "stats":
                seen["stats"].append(msg["data"])
                total = msg["data"]["count_in"] + msg["data"]["count_out"]
                if total >= 2 and seen["frames"] >= 5:
                    break
        await ws.send(json.dumps({"type": "get_all_faces", "limit": 5}))
        while (reply := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "all_faces":
            pass
        seen["faces"] = reply
        await ws.send("not json")
        while "error" not in (reply := json.loads(await asyncio.wait_for(ws.recv(), 10))):
            pass
        seen["error"] = reply
    return seen


def test_counts_frames_and_faces_pushed_over_websocket_and_kept_across_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    port = free_port()
    args = ("--source", f"demo={demo_clip()}", "--no-source-realtime", "--loop",
            *compat_flags(people_ws=port))  # fmt: skip
    with running_server(data, *args):
        seen = asyncio.run(watch(f"ws://127.0.0.1:{port}/", 90))
    assert seen["frames"] >= 5
    assert seen["frame_shape"] == (480, 640, 3)
    assert all(set(s) == STATS for s in seen["stats"])
    last = seen["stats"][-1]
    assert last["count_in"] + last["count_out"] >= 2, seen["stats"][-5:]
    assert seen["faces"]["type"] == "all_faces"
    assert isinstance(seen["faces"]["faces"], list)
    assert seen["error"] == {"error": "Invalid JSON message"}

    # A restart the same day starts from the day's counts, not from zero.
    with running_server(data, *args):
        first = asyncio.run(first_stats(f"ws://127.0.0.1:{port}/"))
    assert first["count_in"] + first["count_out"] >= last["count_in"] + last["count_out"]


async def first_stats(url: str) -> dict[str, Any]:
    async with websockets.connect(url, max_size=None) as ws:
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg["type"] == "stats":
                return dict(msg["data"])


def test_a_compat_port_in_use_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "framebroker", "serve", "--port", str(free_port()),
             "--data-dir", str(tmp_path), *compat_flags(people_ws=port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert proc.returncode == 2
    assert f"people_ws could not listen on 127.0.0.1:{port}" in proc.stderr
