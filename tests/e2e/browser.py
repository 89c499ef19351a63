"""Debian's chromium driven by Playwright, as the console's browser tests launch it."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import playwright.sync_api as playwright_api

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = shutil.which("chromium")

# Remembers every WebSocket the page opens, so a test can drop one as a network would.
TRACK_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
    }
  };
})();
"""


@contextlib.contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """Headless chromium with a fake camera, ready for WebRTC to a server on loopback."""
    args = [
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        # Host candidates as plain addresses, loopback included: the server is on 127.0.0.1.
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        *extra_args,
    ]
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            browser.close()
