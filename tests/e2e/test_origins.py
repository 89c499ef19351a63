"""Only the server's own pages, and the configured origins, may open its WebSockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets

from framebroker.transports.origins import same_origin

from .server import compat_flags, free_port, running_server


def test_same_origin_compares_scheme_host_and_port() -> None:
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert same_origin("https://Example.org", "example.org")
    assert not same_origin("http://127.0.0.1:8001", "127.0.0.1:8000")
    assert not same_origin("http://evil.example", "127.0.0.1:8000")
    assert not same_origin("null", "127.0.0.1:8000")
    assert not same_origin("http://127.0.0.1:8000", None)


def test_foreign_pages_cannot_open_the_sockets(tmp_path: Path) -> None:
    config = tmp_path / "fb.toml"
    config.write_text('[auth]\nallowed_origins = ["https://console.example"]\n')
    ws_port = free_port()
    with running_server(
        tmp_path / "data", "--config", str(config), *compat_flags(webrtc_ws=ws_port)
    ) as server:
        own = server.url
        base = own.replace("http", "ws")

        async def opens(url: str, origin: str | None) -> bool:
            """True if the socket opens and answers; False if refused with a 403."""
            try:
                async with websockets.connect(url, origin=origin, open_timeout=10) as ws:  # type: ignore[arg-type]
                    await ws.send(json.dumps({"type": "get_all_faces"}))
                    await asyncio.wait_for(ws.recv(), 10)
                    return True
            except websockets.InvalidStatus as exc:
                refused = exc.response.status_code
            return {403: False}[refused]

        async def scenario() -> None:
            for url in (f"{base}/ws/live", f"{base}/webrtc/ws", f"ws://127.0.0.1:{ws_port}/"):
                assert not await opens(url, "http://evil.example")
                assert await opens(url, "https://console.example")
                assert await opens(url, None)  # not a browser
            assert await opens(f"{base}/ws/live", own)  # the console itself

        asyncio.run(scenario())
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
def test_origin_is_not_checked_when_star_is_allowed(tmp_path: Path, origin: str) -> None:
    config = tmp_path / "fb.toml"
    config.write_text('[auth]\nallowed_origins = ["*"]\n')
    with running_server(tmp_path / "data", "--config", str(config)) as server:

        async def scenario() -> None:
            url = server.url.replace("http", "ws") + "/ws/live"
            async with websockets.connect(url, origin=origin, open_timeout=10) as ws:  # type: ignore[arg-type]
                await ws.send(json.dumps({"type": "get_all_faces"}))
                assert "faces" in json.loads(await asyncio.wait_for(ws.recv(), 10))

        asyncio.run(scenario())
