"""The live page at 30 frames a second for half a minute: it shows them all and its memory
stays flat (no leaked object URLs, no growing DOM, no growing heap).

The frames come from the server's own live hub, published straight onto its bus at 30/s
(distinct 640x480 JPEGs), so the browser, not the detector, is what is measured.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import playwright.sync_api as playwright_api
import pytest
import uvicorn

from framebroker.config import load_settings
from framebroker.media.image import encode_jpeg_base64
from framebroker.server import Services, build_app

CHROMIUM = shutil.which("chromium")
FPS = 30
SOURCE = "synthetic"


def frames(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        img = np.full((480, 640, 3), 40, np.uint8)
        img[:, :, 1] = rng.integers(0, 255, (480, 640), dtype=np.uint8) // 4  # noise: ~40 KB
        x = 20 + (i * 7) % 560
        img[200:280, x : x + 60] = (0, 200, 255)
        out.append(encode_jpeg_base64(img, 70))
    return out


class Server:
    """The real app in a thread of its own, with a publisher feeding its live hub."""

    def __init__(self, data: Path) -> None:
        self.settings = load_settings(data_dir=data)
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.published = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            # An unclosed loop's self-pipe is a ResourceWarning in whatever test runs when
            # the collector finds it (warnings are errors).
            self.loop.close()

    async def _serve(self) -> None:
        services = Services.build(self.settings)
        services.hub.known_sources = lambda: [SOURCE]  # published below, not read by a feed
        app = build_app(self.settings, services)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                ws_per_message_deflate=False)  # fmt: skip
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        services.listening = True
        self.ready.set()
        pictures = frames(FPS * 2)
        start = time.monotonic()
        while not self.stop.is_set():
            picture = pictures[self.published % len(pictures)]
            services.broker.bus.publish(
                f"live/{SOURCE}/frame", {"jpeg_b64": picture, "time": time.time()}
            )
            self.published += 1
            await asyncio.sleep(max(0.0, start + self.published / FPS - time.monotonic()))
        server.should_exit = True
        await task

    def __enter__(self) -> Server:
        self.thread.start()
        assert self.ready.wait(30), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    assert CHROMIUM is not None, "needs Debian's chromium: run scripts/install_browser.sh"
    with Server(tmp_path) as running:
        yield running


def test_the_live_page_keeps_up_at_30_fps_with_flat_memory(server: Server) -> None:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{server.port}/ui/live.html?source={SOURCE}")
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            image = page.locator("#frame")
            playwright_api.expect(image).to_have_attribute("src", re.compile("^data:"))

            def metrics() -> dict[str, float]:
                cdp.send("HeapProfiler.collectGarbage")
                got = cdp.send("Performance.getMetrics")["metrics"]
                return {m["name"]: m["value"] for m in got}

            time.sleep(5)  # settle: caches, first layout
            before = metrics()
            sources: set[str] = set()
            rates: list[float] = []
            for _ in range(20):
                time.sleep(1)
                sources.add(str(image.get_attribute("src"))[-40:])
                text = page.locator("#frame-rate").inner_text()
                if text.endswith("fps"):
                    rates.append(float(text.split()[0]))
            after = metrics()
        finally:
            browser.close()
    assert not errors, errors
    assert len(sources) >= 15  # the picture changes all the time
    assert min(rates[2:]) >= 0.9 * FPS, rates  # every pushed frame arrives and is counted
    heap_growth = after["JSHeapUsedSize"] - before["JSHeapUsedSize"]
    assert heap_growth < 2 * 2**20, f"JS heap grew by {heap_growth / 2**20:.1f} MiB in 20 s"
    assert after["Nodes"] - before["Nodes"] < 200, (before["Nodes"], after["Nodes"])
