"""Run the server: the main port with every transport, plus each original API's own listener when
asked (``--compat``), all in one event loop around one set of services."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Generator
from typing import Any, Literal
from urllib.parse import quote

import uvicorn

from ..config import COMPAT_PORTS, Settings
from ..errors import ConfigError
from ..people.feed import parse_source_arg
from ..transports.auth import is_loopback
from ..transports.ws_limits import hard_cap
from .app import build_app, build_compat_app
from .deadlines import protocol_class
from .services import Services
from .uvicorn_hooks import check_uvicorn
from .ws_protocol import PreframedWebSocketProtocol

__all__ = ["loop_factory", "run_serve", "serve", "startup_lines", "uvicorn_config"]

log = logging.getLogger("framebroker")


class _Companion(uvicorn.Server):
    """A listener that leaves signals to the main server and stops when it stops.

    ``capture_signals`` is uvicorn's, undocumented: listed in :data:`.uvicorn_hooks.HOOKS`.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def serve_quietly(self) -> None:
        # uvicorn calls sys.exit() when it cannot bind; the caller reports that instead.
        with contextlib.suppress(SystemExit):
            await self.serve()


def uvicorn_config(
    app: Any,
    settings: Settings,
    port: int,
    *,
    lifespan: Literal["on", "off"],
    listener: str,
    services: Services,
) -> uvicorn.Config:
    """``listener`` labels the connection limits' refusals in the metrics ("http": main)."""
    ssl = settings.ssl
    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        # Connection cap and header/body/idle deadlines (uvicorn's keep-alive timer is
        # replaced by the idle one), counted per listener.
        http=protocol_class(
            settings.limits, functools.partial(services.broker.metrics.error, listener)
        ),
        ssl_certfile=str(settings.ssl_certfile) if ssl and settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if ssl and settings.ssl_keyfile else None,
        # uvicorn's own start and stop lines ("Waiting for application startup", ...) say
        # nothing framebroker's do not; they show with --log-level debug.
        log_level="warning" if settings.log_level == "info" else settings.log_level,
        lifespan=lifespan,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
        # Pushed frames are base64 JPEG, which deflate barely shrinks; compressing every
        # frame once per listener cost more CPU than the whole pipeline.
        ws_per_message_deflate=False,
        # uvicorn's own WebSocket protocol, taking the live push's ready frames as well.
        ws=PreframedWebSocketProtocol,
        # Every socket checks limits.max_ws_message_bytes itself and says why it closes;
        # this cap only stops a far bigger message from being buffered at all.
        ws_max_size=hard_cap(settings.limits.max_ws_message_bytes),
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


_COMPAT_ROLES = {
    "people_ws": "live people counter",
    "frames": "frame server for plugins",
    "webrtc_http": "WebRTC model broker (offers)",
    "webrtc_ws": "WebRTC model broker (signaling)",
}


def startup_lines(settings: Settings) -> list[str]:
    """What the start-up log says: where each API is, by what it does, and the one page to
    open (the live view of the first source, when the server reads one)."""
    scheme, ws = ("https", "wss") if settings.ssl else ("http", "ws")
    base = f"{scheme}://{settings.host}:{settings.port}"
    ws_base = f"{ws}://{settings.host}:{settings.port}"
    lines = [
        f"framebroker listening on {base}",
        f"  tracking API: {base}/v1/sessions (POST / as the original ByteTrack server; "
        f"docs {base}/docs)",
        f"  live people counter: {ws_base}/ws/live",
        f"  frame server for plugins: multipart POST {base}/",
        f"  video analysis over Socket.IO: {base}/socket.io (whole videos: POST {base}/batch)",
        f"  WebRTC model broker: {ws_base}/webrtc/ws"
        + ("" if settings.webrtc.websocket_only else f" (or POST {base}/offer)"),
    ]
    if settings.sources:
        name, _ = parse_source_arg(settings.sources[0], 0)
        lines.append(f"open {base}/ui/live.html?source={quote(name)} to watch the people counter")
    else:
        lines.append(f"open {base}/ui/ for the web console")
    return lines


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to serve on; ``None`` means asyncio's own.

    uvloop reads sockets in C: receiving a 6 MB frame costs about half the CPU it costs on
    asyncio's selector loop, whose every 256 KB read goes through Python.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("event_loop = uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def run_serve(settings: Settings) -> None:
    """Serve on the configured event loop until interrupted."""
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        runner.run(serve(settings))


async def serve(settings: Settings) -> None:
    """Serve until interrupted; sessions are suspended and sources stopped on the way out.

    Raises :class:`~framebroker.errors.UvicornIncompatible` before anything starts if the
    installed uvicorn lacks a name the listeners hook into.
    """
    check_uvicorn()
    warn_if_open(settings)
    services = Services.build(settings)
    main = uvicorn.Server(
        uvicorn_config(
            build_app(settings, services),
            settings,
            settings.port,
            lifespan="on",
            listener="http",
            services=services,
        )
    )
    companions: list[tuple[str, int, _Companion]] = []
    if settings.compat:
        for name, default in COMPAT_PORTS.items():
            if name == "webrtc_http" and settings.webrtc.websocket_only:
                continue
            port = settings.compat_ports.get(name, default)
            app = build_compat_app(name, services)
            companions.append(
                (
                    name,
                    port,
                    _Companion(
                        uvicorn_config(
                            app, settings, port, lifespan="off", listener=name, services=services
                        )
                    ),
                )
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
    for line in startup_lines(settings):
        log.info("%s", line)
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
        log.info(
            "  %s on its original port: %s://%s:%d/ (--compat %s)",
            _COMPAT_ROLES.get(name, name),
            kind,
            settings.host,
            port,
            name,
        )
    services.listening = True
    try:
        await main_task
    finally:
        for _, _, server in companions:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        _exit_if_stuck(services)  # also when stopped by a signal (uvicorn re-raises it)


def _exit_if_stuck(services: Services) -> None:
    """Leave now if a worker thread is still inside a processor that timed out: the
    interpreter would wait for it at exit, and it may never return."""
    stuck = services.broker.stuck_threads
    if not stuck:
        return
    failure = sys.exc_info()[1]
    crashed = failure is not None and not isinstance(
        failure, KeyboardInterrupt | asyncio.CancelledError
    )
    if crashed:
        log.error("server failed", exc_info=failure)
    log.warning("stopped; exiting without %d worker thread(s) stuck in a processor", stuck)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if crashed else 0)
