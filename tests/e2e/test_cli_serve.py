"""The `framebroker` command as a new user runs it: the installed script, from their own
directory, with their own plugin file; and `demo` with the options `serve` takes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets

from .server import compat_flags, free_port, running_server

SCRIPT = Path(sys.executable).parent / "framebroker"

MYPROC = """
from framebroker import BaseModel


class Bright(BaseModel):
    name = "bright"
    needs_image = True

    def process(self, frame, ctx):
        return {"bright": {"mean": float(frame.image.mean())}}
"""


def post_frame(url: str, value: int) -> dict[str, Any]:
    image = np.full((4, 6, 3), value, np.uint8)
    frame = {"frame_no": 1, "width": 6, "height": 4}
    files = {
        "image": ("image.raw", image.tobytes(), "application/octet-stream"),
        "frame": ("frame.json", json.dumps(frame), "application/json"),
    }
    r = httpx.post(f"{url}/", files=files, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_plugin_file_in_the_working_directory_loads_by_module_and_attribute(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "myproc.py").write_text(MYPROC)
    # The installed script, as a user runs it: Python puts the script's own folder on the
    # import path, not the working directory.
    with running_server(
        tmp_path / "data", "--processor", "myproc:Bright", program=[str(SCRIPT)], cwd=work
    ) as server:
        assert post_frame(server.url, 200)["bright"] == {"mean": 200.0}


def test_app_dir_names_where_plugin_files_are(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "myproc.py").write_text(MYPROC)
    args = ("--app-dir", str(plugins), "--processor", "myproc:Bright")
    with running_server(tmp_path / "data", *args, program=[str(SCRIPT)], cwd=tmp_path) as server:
        assert post_frame(server.url, 7)["bright"] == {"mean": 7.0}


async def first_stats(url: str) -> dict[str, Any]:
    async with websockets.connect(url, max_size=None) as ws:
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if msg.get("type") == "stats":
                return dict(msg["data"])


def test_demo_takes_the_options_of_serve(tmp_path: Path) -> None:
    config = tmp_path / "framebroker.toml"
    config.write_text("[live]\nmax_fps = 5\n")
    people_ws, frames = free_port(), free_port()
    args = ("--config", str(config), *compat_flags(people_ws=people_ws, frames=frames))
    with running_server(tmp_path / "data", *args, command=["demo"]) as server:
        stats = asyncio.run(first_stats(f"ws://127.0.0.1:{people_ws}/"))
        assert "count_in" in stats
        # The frame server's own listener is on the port chosen for it.
        assert post_frame(f"http://127.0.0.1:{frames}", 1)["framebroker"]["ran"] == []
        sessions = httpx.get(f"{server.url}/v1/sessions", timeout=30).json()["sessions"]
        assert "demo" in [s["id"] for s in sessions]
    assert f"http://127.0.0.1:{frames}/ (--compat frames)" in server.output()
