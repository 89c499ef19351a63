"""The console of a server that has nothing to show yet: every page says, in one line, what
to run to fill it (Debian's chromium through Playwright, as in test_console)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import playwright.sync_api as playwright_api
import pytest

from .browser import CHROMIUM, chromium
from .server import RunningServer, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser

if CHROMIUM is None and os.environ.get("FRAMEBROKER_SKIP_BROWSER_TESTS") == "1":
    pytest.skip("FRAMEBROKER_SKIP_BROWSER_TESTS=1", allow_module_level=True)

expect = playwright_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("empty")
    config = data / "framebroker.toml"
    config.write_text("[webrtc]\nmodels = []\n")  # no sources, no faces, no models
    with running_server(data, "--config", str(config)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None, "needs Debian's chromium: run scripts/install_browser.sh as root"
    with chromium() as launched:
        yield launched


@pytest.mark.parametrize(
    ("page", "selector", "says"),
    [
        ("index.html", "#empty", "run framebroker demo"),
        ("faces.html", "#empty", "run framebroker demo"),
        ("live.html", "#placeholder", "run framebroker demo, or serve --source NAME=URI"),
        ("camera.html", "#placeholder", "press Start camera"),
        ("camera.html", "#models .status", "serve with --model heart_rate"),
    ],
)
def test_each_empty_page_says_what_to_run(
    browser: Browser, server: RunningServer, page: str, selector: str, says: str
) -> None:
    context = browser.new_context()
    errors: list[str] = []
    try:
        tab = context.new_page()
        tab.set_default_timeout(20_000)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(f"{server.url}/ui/{page}")
        shown = tab.locator(selector)
        expect(shown).to_be_visible()
        expect(shown).to_contain_text(says)
        text = shown.inner_text().strip()
        assert "\n" not in text, text  # one line
    finally:
        context.close()
    assert errors == []
