"""/docs in a real browser with no way out of loopback: Swagger UI comes from the server's
installed files and lists the API's operations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import playwright.sync_api as playwright_api
import pytest

from .browser import CHROMIUM, chromium
from .server import running_server

if TYPE_CHECKING:
    from playwright.sync_api import Route

expect = playwright_api.expect

if CHROMIUM is None and os.environ.get("FRAMEBROKER_SKIP_BROWSER_TESTS") == "1":
    pytest.skip("FRAMEBROKER_SKIP_BROWSER_TESTS=1", allow_module_level=True)


def test_the_docs_page_renders_the_operations_offline(tmp_path: Path) -> None:
    assert CHROMIUM is not None, "needs Debian's chromium: run scripts/install_browser.sh as root"
    outside: list[str] = []

    def only_loopback(route: Route) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:  # as on a machine without internet
            outside.append(route.request.url)
            route.abort()

    with running_server(tmp_path / "data") as server, chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.route("**/*", only_loopback)
        page.goto(f"{server.url}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("framebroker")
        create = page.locator(".opblock-post", has_text="/v1/sessions").first
        expect(create).to_be_visible()
        assert page.locator(".opblock").count() >= 5
        create.locator(".opblock-summary").click()
        expect(page.locator(".opblock-body").first).to_contain_text("pipeline")
        assert outside == []
        assert errors == []
