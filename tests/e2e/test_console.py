"""The web console in a real browser: Debian's ``chromium`` driven through Playwright against
the real server, which reads the bundled clip (counts) and a portrait clip (faces), and
answers Chromium's fake camera over WebRTC (heart rate).

Every page must load without a console error, keep its layout still as frames arrive, stay
usable at phone width and from the keyboard. Screenshots go to ``tmp_path``, or to the
folder named by ``CONSOLE_SCREENSHOTS`` (``scripts/screenshots.py`` sets it to ``docs/``).

The browser is never downloaded: ``scripts/install_browser.sh`` (run by the test command)
installs Debian's package as root. Without it these tests fail, unless
``FRAMEBROKER_SKIP_BROWSER_TESTS=1`` says to skip them on purpose.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import httpx
import playwright.sync_api as playwright_api
import pytest

from framebroker.media.sources import demo_clip

from ..processors.rppg_video import PulsingFace
from .browser import CHROMIUM, TRACK_SOCKETS, chromium
from .portrait import PORTRAIT, write_portrait_clip
from .server import RunningServer, running_server

expect = playwright_api.expect

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

if CHROMIUM is None and os.environ.get("FRAMEBROKER_SKIP_BROWSER_TESTS") == "1":
    pytest.skip("FRAMEBROKER_SKIP_BROWSER_TESTS=1", allow_module_level=True)

PULSE_BPM = 75.0
CAMERA_FPS = 15
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Counts WebSockets and object URLs, so a test can drop the live socket as a network would
# and check that every object URL made is revoked.
INSTRUMENT = (
    TRACK_SOCKETS
    + """
(() => {
  window.__urls = { made: 0, revoked: 0 };
  const make = URL.createObjectURL.bind(URL);
  const revoke = URL.revokeObjectURL.bind(URL);
  URL.createObjectURL = (obj) => { window.__urls.made += 1; return make(obj); };
  URL.revokeObjectURL = (url) => { window.__urls.revoked += 1; return revoke(url); };
  window.__shift = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (!e.hadRecentInput) window.__shift += e.value;
  }).observe({ type: "layout-shift", buffered: true });
})();
"""
)


# -- media the test makes ------------------------------------------------------------------


def write_camera_y4m(path: Path, seconds: float = 4.0) -> None:
    """Chromium's fake camera input: a face whose skin pulses at PULSE_BPM.

    The clip loops, so it holds a whole number of beats (4 s at 75 bpm: 5 beats); the pulse
    is stronger than a real one so that it survives the VP8 encoder on the way.
    """
    face = PulsingFace(
        PULSE_BPM, amplitude=0.1, noise=1.0, drift=0.0, sway_px=0,
        size=(240, 320), head_width=160,
    )  # fmt: skip
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W320 H240 F{CAMERA_FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for k in range(round(seconds * CAMERA_FPS)):
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(face.image(k / CAMERA_FPS), cv2.COLOR_BGR2YUV_I420).tobytes())


# -- the server, the browser, one page per test --------------------------------------------


@dataclass
class Media:
    camera: Path
    portrait: Path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    assert CHROMIUM is not None, "needs Debian's chromium: run scripts/install_browser.sh as root"
    assert PORTRAIT.is_file(), f"test data missing: {PORTRAIT} (see ../shared/data/README.md)"
    folder = tmp_path_factory.mktemp("media")
    write_portrait_clip(folder / "portrait.mp4")
    write_camera_y4m(folder / "face.y4m")
    return Media(camera=folder / "face.y4m", portrait=folder / "portrait.mp4")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, media: Media) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("data")
    config = data / "framebroker.toml"
    # A 6 s window gives the first heart-rate reading sooner than the default 10 s.
    config.write_text(
        "[webrtc]\n"
        'models = [{name = "framebroker.processors.heart_rate:HeartRate", window_s = 6.0}]\n'
    )
    # Sources are paced at their own frame rate (the default for files): two clips read as
    # fast as they decode would take both cores from the browser.
    args = ["--config", str(config), "--loop", "--source", f"demo={demo_clip()}"]
    args += ["--source", f"portrait={media.portrait}"]
    with running_server(data, *args) as running:
        yield running


@pytest.fixture(scope="module")
def browser(media: Media) -> Iterator[Browser]:
    with chromium(f"--use-file-for-fake-video-capture={media.camera}") as launched:
        yield launched


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Console:
    page: Page
    base: str
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.page.goto(f"{self.base}/ui/{path}")

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)


@pytest.fixture
def console(browser: Browser, server: RunningServer) -> Iterator[Console]:
    context = browser.new_context(viewport=WIDE)
    context.add_init_script(INSTRUMENT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    view = Console(page, server.url)
    page.on(
        "console",
        lambda m: view.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda exc: view.errors.append(f"uncaught: {exc}"))
    try:
        yield view
        # Whatever the page did, it made no object URL it did not revoke.
        urls = page.evaluate("window.__urls")
        assert urls["made"] == urls["revoked"], urls
    finally:
        context.close()
    assert view.errors == [], "\n".join(view.errors)


@contextlib.contextmanager
def server_log_on_failure(server: RunningServer) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        tail = server.output()[-4000:]
        raise AssertionError(f"{exc}\n--- the server's log, last lines ---\n{tail}") from exc


def fits_width(console: Console) -> bool:
    return bool(console.js("document.documentElement.scrollWidth <= window.innerWidth"))


def tab_to(console: Console, selector: str, presses: int = 40) -> None:
    """Press Tab until the focus is on ``selector``: it is reachable from the keyboard."""
    for _ in range(presses):
        console.page.keyboard.press("Tab")
        if console.page.evaluate(
            "(s) => document.activeElement && document.activeElement.matches(s)", selector
        ):
            return
    raise AssertionError(f"{selector} cannot be reached with Tab")


# -- the pages -----------------------------------------------------------------------------


def test_a_stopped_source_says_so_and_starts_again_from_the_page(console: Console) -> None:
    console.open("live.html?source=portrait")
    status = console.page.locator("#status")
    start = console.page.locator("#source-start")
    expect(status).to_have_text("Connected to portrait")
    expect(start).to_be_hidden()
    # Ending its session (what the overview's End button does) stops the source.
    assert httpx.delete(f"{console.base}/v1/sessions/portrait", timeout=30).status_code == 200
    expect(status).to_have_text("Source portrait is stopped: its session was ended")
    expect(start).to_be_visible()
    start.click()
    expect(status).to_have_text("Connected to portrait")
    expect(start).to_be_hidden()
    frame = console.page.locator("#frame")
    expect(frame).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
    src = frame.get_attribute("src")
    expect(frame).not_to_have_attribute("src", src or "")  # frames flow again
    assert not console.errors, console.errors


def test_live_page_shows_frames_counts_events_and_hourly_chart(
    console: Console, shots: Path
) -> None:
    console.open("live.html")
    frame = console.page.locator("#frame")
    expect(frame).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
    expect(console.page.locator("#status")).to_have_text("Connected to demo")
    expect(console.page.locator("#count-in")).to_have_text(re.compile(r"^\d+$"))

    def total() -> int:
        counts = console.js(
            "[document.getElementById('count-in').textContent,"
            " document.getElementById('count-out').textContent]"
        )
        return sum(int(c.replace(",", "")) for c in counts)

    first = total()
    console.page.wait_for_function(
        "(n) => Number(document.getElementById('count-in').textContent)"
        " + Number(document.getElementById('count-out').textContent) > n",
        arg=first,
        timeout=40_000,
    )
    assert total() > first
    # The chart of counts per hour reads the store, which now holds some crossings.
    console.page.wait_for_function(
        "() => [...document.querySelectorAll('#hourly rect')]"
        ".some((r) => Number(r.getAttribute('height')) > 0)",
        timeout=20_000,
    )
    expect(console.page.locator("#timeline line.now")).to_have_count(1)
    expect(console.page.locator("#events li")).not_to_have_count(0)
    src = frame.get_attribute("src")
    expect(frame).not_to_have_attribute("src", src or "")  # frames keep coming
    # Frames arriving moved nothing on the page.
    assert console.js("window.__shift") < 0.01
    console.page.screenshot(path=shots / "console-live.png", full_page=True)

    # The connection drops: the page reconnects by itself and frames flow again.
    sockets = console.js("window.__sockets.length")
    console.js("window.__sockets.at(-1).close()")
    console.page.wait_for_function(f"() => window.__sockets.length > {sockets}")
    expect(console.page.locator("#status")).to_have_text("Connected to demo")
    src = frame.get_attribute("src")
    expect(frame).not_to_have_attribute("src", src or "")

    console.page.set_viewport_size(PHONE)
    assert fits_width(console)
    console.page.screenshot(path=shots / "console-live-phone.png", full_page=True)


def test_faces_page_lists_saved_faces_and_opens_one(console: Console, shots: Path) -> None:
    console.open("faces.html")
    first = console.page.locator(".gallery .face").first
    expect(first).to_be_visible(timeout=30_000)  # the page refreshes until one is saved
    expect(first).to_contain_text("track")
    console.page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    assert console.page.locator(".gallery li").count() <= 48  # one page at a time
    console.page.screenshot(path=shots / "console-faces.png")

    tab_to(console, ".gallery .face")
    console.page.keyboard.press("Enter")
    dialog = console.page.locator("#dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#fact-track")).to_have_text(re.compile(r"^\d+$"))
    expect(dialog.locator("#fact-time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:"))
    console.page.wait_for_function("() => document.getElementById('dialog-image').naturalWidth > 0")
    console.page.screenshot(path=shots / "console-face-open.png")
    console.page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert console.js("document.activeElement.matches('.gallery .face')")


def test_camera_page_streams_the_fake_camera_and_shows_heart_rate_and_result(
    console: Console, server: RunningServer, shots: Path
) -> None:
    with server_log_on_failure(server):
        console.open("camera.html")
        expect(console.page.locator("#models input[type=checkbox]")).to_have_count(1)
        console.page.locator("#start").click()
        expect(console.page.locator("#status")).to_have_text("Streaming")
        # HeartRate says nothing until its window is full, then about once a second.
        expect(console.page.locator("#prediction")).to_contain_text('"heart_rate"', timeout=20_000)
        expect(console.page.locator("#prediction-meta")).to_contain_text("received")
        bpm = console.page.locator("#bpm")
        expect(bpm).to_have_text(re.compile(r"^\d+$"), timeout=20_000)
        assert abs(int(bpm.inner_text()) - PULSE_BPM) <= 8
        # A few readings, so the chart draws a line.
        console.page.wait_for_function(
            "() => (document.querySelector('#heart-chart path.line')?.getAttribute('d') ?? '')"
            ".split('L').length > 3"
        )
        assert console.js("window.__shift") < 0.01
        console.page.screenshot(path=shots / "console-camera.png")

        session = console.page.locator("#session").inner_text().removeprefix("session ")
        console.page.locator("#stop").click()
        result = console.page.locator("#result")
        expect(result).to_be_visible()
        expect(result.locator("#result-json")).to_contain_text('"type": "result"')
        expect(result.locator("#result-summary")).to_contain_text("client_ended")
        expect(result.locator("#result-summary")).to_contain_text("Mean heart rate")
        expect(console.page.locator("#status")).to_contain_text("Stopped")
        expect(console.page.locator("#start")).to_be_enabled()
        console.page.screenshot(path=shots / "console-camera-result.png", full_page=True)
        record = httpx.get(f"{server.url}/v1/sessions/{session}").json()
        assert record["state"] == "ended"
        assert record["transport"] == "webrtc"


def test_overview_lists_sessions_and_ends_one_from_the_keyboard(
    console: Console, server: RunningServer, shots: Path
) -> None:
    sid = httpx.post(f"{server.url}/v1/sessions", json={"pipeline": ["bytetrack"]}).json()["id"]
    # Last in the module, so the sources have run a while: steady rates in the screenshot.
    console.open("")
    demo = console.page.locator('tr[data-session="demo"]')
    expect(demo).to_be_visible()
    expect(demo.locator('td[data-label="Transport"]')).to_have_text("source")
    expect(demo.locator('td[data-label="Latency"]')).to_contain_text("detect")
    expect(demo.locator('td[data-label="FPS"]')).to_have_text(re.compile(r"^\d+\.\d$"))
    expect(demo.locator('td[data-label="Frames in"]')).not_to_have_text("0")
    expect(demo.locator('td[data-label="Uptime"]')).to_have_text(re.compile(r"\d+s$"))
    console.page.screenshot(path=shots / "console-overview.png")

    # Ending takes two presses of the same button (the first arms it).
    button = f'tr[data-session="{sid}"] button'
    tab_to(console, button)
    console.page.keyboard.press("Enter")
    expect(console.page.locator(button)).to_have_text("Confirm end")
    console.page.keyboard.press("Enter")
    expect(console.page.locator(f'tr[data-session="{sid}"]')).to_have_count(0)
    expect(console.page.locator("#notice")).to_contain_text(f"Ended session {sid}")
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").json()["state"] == "ended"

    console.page.set_viewport_size(PHONE)
    expect(demo).to_be_visible()
    assert fits_width(console)
    console.page.screenshot(path=shots / "console-overview-phone.png", full_page=True)
