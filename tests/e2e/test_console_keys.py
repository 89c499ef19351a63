"""The web console against a server that asks for API keys, in Debian's chromium (issue 8).

The first request a page makes is refused (401), so the page opens a small form; the key
given there is kept in sessionStorage and sent with every request, as the first message of
the live and signaling WebSockets, and when fetching face crops. A wrong key, typed or left
over in the tab, is refused with a message and the form asks again. With the key the live
view, the faces and the camera page work as they do without keys.

The browser is never downloaded; see ``test_console.py`` for how it is found.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import playwright.sync_api as playwright_api
import pytest

from framebroker.config import load_settings
from framebroker.media.sources import demo_clip
from framebroker.storage import SQLPeopleRecords, face_filename, open_store

from ..transports.images import scene
from .browser import CHROMIUM, TRACK_SOCKETS, chromium
from .server import RunningServer, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, WebSocket

expect = playwright_api.expect

if CHROMIUM is None and os.environ.get("FRAMEBROKER_SKIP_BROWSER_TESTS") == "1":
    pytest.skip("FRAMEBROKER_SKIP_BROWSER_TESTS=1", allow_module_level=True)

KEY = "console-e2e-key-" + "k" * 24
KEY_ITEM = "framebroker.api_key"
MODEL = "tests.runtime.processors:FrameSize"
# Chrome logs each refused request itself ("Failed to load resource: ... 401"): expected here.
REFUSED_LOAD = re.compile(r"status of 401 \(Unauthorized\)")


def seed_face(data: Path) -> int:
    """One saved face, in the store and on disk, before the server starts."""
    settings = load_settings(data_dir=data)
    store = open_store(settings.sqlalchemy_url)
    try:
        face_id, name = SQLPeopleRecords(store).add_face(
            source="demo", track_id=3, day="2026-01-01", quality=0.9, score=0.9
        )
    finally:
        store.close()
    assert name == face_filename(face_id)
    settings.faces_dir.mkdir(parents=True, exist_ok=True)
    ok, jpeg = cv2.imencode(".jpg", scene(96, 96, seed=5))
    assert ok
    (settings.faces_dir / name).write_bytes(jpeg.tobytes())
    return face_id


@dataclass(frozen=True)
class Keyed:
    running: RunningServer
    face_id: int

    @property
    def url(self) -> str:
        return self.running.url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    assert CHROMIUM is not None, "needs Debian's chromium: run scripts/install_browser.sh as root"
    data = tmp_path_factory.mktemp("keyed")
    face_id = seed_face(data)
    config = data / "framebroker.toml"
    config.write_text(f'[auth]\napi_keys = {{console = "{KEY}"}}\n[webrtc]\nmodels = ["{MODEL}"]\n')
    args = ["--config", str(config), "--loop", "--source", f"demo={demo_clip()}"]
    with running_server(data, *args) as running:
        yield Keyed(running, face_id)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@dataclass
class Console:
    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    sent: dict[str, list[str]] = field(default_factory=dict)  # socket path -> texts sent

    def open(self, path: str) -> None:
        self.page.goto(f"{self.base}/ui/{path}")

    def stored_key(self) -> Any:
        return self.page.evaluate(f"sessionStorage.getItem({KEY_ITEM!r})")

    def enter_key(self, key: str) -> None:
        form = self.page.locator("dialog.key-dialog")
        expect(form).to_be_visible()
        expect(self.page.locator("#api-key")).to_be_focused()
        self.page.locator("#api-key").fill(key)
        self.page.keyboard.press("Enter")

    def first_sent(self, path: str) -> dict[str, Any]:
        texts = self.sent.get(path) or []
        assert texts, f"nothing sent on {path}: {self.sent}"
        return dict(json.loads(texts[0]))


def _watch(view: Console, ws: WebSocket) -> None:
    path = re.sub(r"^wss?://[^/]+", "", ws.url).split("?")[0]
    texts = view.sent.setdefault(path, [])
    ws.on("framesent", lambda payload: texts.append(payload) if isinstance(payload, str) else None)


@pytest.fixture
def console(browser: Browser, server: Keyed) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(TRACK_SOCKETS)
    page = context.new_page()
    page.set_default_timeout(20_000)
    view = Console(page, server.url)

    def on_console(message: Any) -> None:
        if message.type == "error" and not REFUSED_LOAD.search(message.text):
            view.errors.append(f"console.error: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: view.errors.append(f"uncaught: {exc}"))
    page.on("websocket", lambda ws: _watch(view, ws))
    try:
        yield view
    finally:
        context.close()
    assert view.errors == [], "\n".join(view.errors)


def test_live_page_asks_for_the_key_refuses_a_wrong_one_then_streams(console: Console) -> None:
    page = console.page
    console.open("live.html")
    problem = page.locator("#api-key-problem")
    console.enter_key("not-the-key")  # the form opened on the first 401
    expect(problem).to_have_text(re.compile(r"refused that key"))
    expect(problem).to_be_visible()
    expect(page.locator("#api-key")).to_have_attribute("aria-invalid", "true")
    assert console.stored_key() is None  # a refused key is not kept
    console.enter_key(KEY)
    expect(page.locator("dialog.key-dialog")).to_be_hidden()
    assert console.stored_key() == KEY

    expect(page.locator("#status")).to_have_text("Connected to demo")
    expect(page.locator("#frame")).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
    expect(page.locator("#count-in")).to_have_text(re.compile(r"^\d+$"))
    # Both store reads went through with the key: 24 hours of in/out bars, and the events.
    expect(page.locator("#hourly rect")).to_have_count(48)
    expect(page.locator("#events li")).not_to_have_count(0)
    # The live socket presented the key before anything else.
    assert console.first_sent("/ws/live") == {"type": "auth", "api_key": KEY}


def test_faces_page_uses_the_key_kept_in_the_tab(console: Console, server: Keyed) -> None:
    page = console.page
    console.open("")
    console.enter_key(KEY)
    expect(page.locator('tr[data-session="demo"]')).to_be_visible()  # the overview's list
    page.get_by_role("link", name="Faces").click()  # same tab: sessionStorage keeps the key
    face = page.locator(f'.gallery li[data-face="{server.face_id}"] img')
    expect(face).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery img')]"
        ".every((img) => img.complete && img.naturalWidth === 96)"
    )
    expect(page.locator("dialog.key-dialog")).to_have_count(0)  # never asked again
    page.locator(".gallery .face").first.click()
    expect(page.locator("#dialog")).to_be_visible()
    page.wait_for_function("() => document.getElementById('dialog-image').naturalWidth === 96")
    expect(page.locator("#fact-source")).to_have_text("demo")


def test_a_stale_wrong_key_is_refused_on_requests_and_on_the_socket(console: Console) -> None:
    page = console.page
    page.add_init_script(f"sessionStorage.setItem({KEY_ITEM!r}, 'left-over-wrong-key')")
    console.open("live.html")
    problem = page.locator("#api-key-problem")
    expect(problem).to_have_text(re.compile(r"refused that key"))  # without typing anything
    console.enter_key(KEY)
    expect(page.locator("#status")).to_have_text("Connected to demo")

    # The key goes bad while the page runs; the socket drops and reconnects with it.
    sockets = page.evaluate("window.__sockets.length")
    page.evaluate(f"sessionStorage.setItem({KEY_ITEM!r}, 'another-wrong-key')")
    page.evaluate("window.__sockets.at(-1).close()")
    page.wait_for_function(f"() => window.__sockets.length > {sockets}")
    expect(page.locator("dialog.key-dialog")).to_be_visible()
    expect(problem).to_have_text(re.compile(r"refused that key"))
    expect(page.locator("#status")).to_contain_text("API key")  # refused, or waiting for one
    assert console.stored_key() is None
    console.enter_key(KEY)
    expect(page.locator("#status")).to_have_text("Connected to demo", timeout=30_000)
    refused = [json.loads(t) for t in console.sent["/ws/live"] if "auth" in t]
    assert {"type": "auth", "api_key": "another-wrong-key"} in refused
    assert refused[-1] == {"type": "auth", "api_key": KEY}


def test_camera_page_signals_with_the_key(console: Console) -> None:
    page = console.page
    console.open("camera.html")
    console.enter_key(KEY)
    expect(page.locator("#models input[type=checkbox]")).to_have_count(1)
    page.locator("#start").click()
    expect(page.locator("#status")).to_have_text("Streaming")
    expect(page.locator("#prediction")).to_contain_text('"size"')
    page.locator("#stop").click()
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#result-summary")).to_contain_text("client_ended")
    assert console.first_sent("/webrtc/ws") == {"type": "auth", "api_key": KEY}
