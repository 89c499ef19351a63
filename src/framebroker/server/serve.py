"""Run the server: the main port with every transport, plus each seed's own listener when
asked (``--compat``), all in one event loop around one set of services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import Any, Literal

import uvicorn

from ..config import COMPAT_PORTS, Settings
from ..errors import ConfigError
from ..transports.auth import is_loopback
from .app import build_app, build_broker, build_compat_app
from .services import Services

__all__ = ["serve"]

log = logging.getLogger("framebroker")


class _Companion(uvicorn.Server):
    """A listener that leaves signals to the main server and stops when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def serve_quietly(self) -> None:
        # uvicorn calls sys.exit() when it cannot bind; the caller reports that instead.
        with contextlib.suppress(SystemExit):
            await self.serve()


def _config(
    app: Any, settings: Settings, port: int, *, lifespan: Literal["on", "off"]
) -> uvicorn.Config:
    ssl = settings.ssl
    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        ssl_certfile=str(settings.ssl_certfile) if ssl and settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if ssl and settings.ssl_keyfile else None,
        log_level=settings.log_level,
        lifespan=lifespan,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
        # Pushed frames are base64 JPEG, which deflate barely shrinks; compressing every
        # frame once per listener cost more CPU than the whole pipeline.
        ws_per_message_deflate=False,
    )


def warn_if_open(settings: Settings) -> bool:
    """Warn when the server listens beyond this machine with no API keys; True if it did."""
    if settings.auth.api_keys or is_loopback(settings.host):
        return False
    log.warning(
        "listening on %s without API keys: anyone who can reach this address can send "
        "frames and read faces; set [auth] api_keys (FRAMEBROKER_AUTH__API_KEYS)",
        settings.host,
    )
    return True


async def serve(settings: Settings) -> None:
    """Serve until interrupted; sessions are suspended and sources stopped on the way out."""
    warn_if_open(settings)
    services = Services.build(settings, build_broker(settings))
    main = uvicorn.Server(
        _config(build_app(settings, services), settings, settings.port, lifespan="on")
    )
    companions: list[tuple[str, int, _Companion]] = []
    if settings.compat:
        for name, default in COMPAT_PORTS.items():
            if name == "webrtc_http" and settings.webrtc.websocket_only:
                continue
            port = settings.compat_ports.get(name, default)
            app = build_compat_app(name, services)
            companions.append(
                (name, port, _Companion(_config(app, settings, port, lifespan="off")))
            )
    scheme = "https" if settings.ssl else "http"
    ws = "wss" if settings.ssl else "ws"
    services.listening = not companions
    main_task = asyncio.create_task(main.serve())
    while not main.started and not main_task.done():
        await asyncio.sleep(0.05)
    if main_task.done():  # failed to start (port taken, bad certificate): report it
        await main_task
        return
    base = f"{scheme}://{settings.host}:{settings.port}"
    log.info("framebroker listening on %s (API docs %s/docs)", base, base)
    log.info("web console: %s/ui/", base)
    log.info("live people-counter push: %s://%s:%d/ws/live", ws, settings.host, settings.port)
    log.info("frames (seed 003): POST multipart image + frame to %s/", base)
    log.info("video analysis (seed 002): Socket.IO at %s/socket.io, POST %s/batch", base, base)
    log.info("webrtc (seed 004): signaling %s://%s:%d/webrtc/ws", ws, settings.host, settings.port)
    tasks = []
    for name, port, server in companions:
        tasks.append(asyncio.create_task(server.serve_quietly()))
        while not server.started and not tasks[-1].done():
            await asyncio.sleep(0.02)
        if not server.started:  # could not bind: stop everything rather than half-serve
            main.should_exit = True
            await asyncio.gather(main_task, *tasks, return_exceptions=True)
            raise ConfigError(
                f"compatibility listener {name} could not listen on {settings.host}:{port}; "
                f"move it with --compat-port {name}=PORT"
            )
        kind = ws if name in ("people_ws", "webrtc_ws") else scheme
        log.info("compatibility listener %s on %s://%s:%d/", name, kind, settings.host, port)
    services.listening = True
    try:
        await main_task
    finally:
        for _, _, server in companions:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
