"""The console in a real browser lists an event that a dead server left running, and that the
next start closed, with its count unknown, not as "0 in"."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from framebroker.media.sources import demo_clip
from framebroker.storage import SQLPeopleRecords, open_store

from .browser import CHROMIUM, chromium
from .server import running_server

expect = playwright_api.expect

if CHROMIUM is None and os.environ.get("FRAMEBROKER_SKIP_BROWSER_TESTS") == "1":
    pytest.skip("FRAMEBROKER_SKIP_BROWSER_TESTS=1", allow_module_level=True)


def leave_an_event_running(data: Path, source: str) -> str:
    """The store as a server killed during an event leaves it; returns the event's start."""
    data.mkdir(parents=True, exist_ok=True)
    store = open_store(f"sqlite:///{data.resolve() / 'framebroker.sqlite3'}")
    try:
        started = time.time() - 120
        start_time = datetime.fromtimestamp(started, UTC).strftime("%H:%M:%S")
        SQLPeopleRecords(store).event_started(
            source=source,
            day=datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d"),
            started_at=started,
            start_time=start_time,
        )
    finally:
        store.close()
    return start_time


def test_an_event_closed_after_a_crash_shows_its_count_as_unknown(tmp_path: Path) -> None:
    assert CHROMIUM is not None, "needs Debian's chromium: run scripts/install_browser.sh as root"
    data = tmp_path / "data"
    start_time = leave_an_event_running(data, "demo")
    with (
        running_server(data, "--source", f"demo={demo_clip()}", "--loop") as server,
        chromium() as browser,
    ):
        assert "closed 1 event(s) a previous run left open" in server.output()
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/ui/live.html?source=demo")
        item = page.locator("#events li", has_text=start_time)
        expect(item).to_contain_text("count unknown")
        expect(item).not_to_contain_text("0 in")
        assert errors == []
