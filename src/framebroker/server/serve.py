"""Run the server: the main port with every transport, plus each original API's own listener when
asked (``--compat``), all in one event loop around one set of services."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import sys
from collections.abc import Callable, Generator
from typing import Any, Literal
from urllib.parse import quote

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from ..config import COMPAT_PORTS, Settings
from ..errors import ConfigError
from ..people.feed import parse_source_arg
from ..transports.auth import is_loopback
from ..transports.ws_limits import hard_cap
from .app import build_app, build_compat_app, build_registry
from .data_lock import DataDirLock
from .deadlines import protocol_class
from .services import Services
from .startup_checks import check_startup
from .uvicorn_hooks import check_uvicorn
from .ws_protocol import PreframedWebSocketProtocol

__all__ = [
    "bind_listeners",
    "bind_worker_listeners",
    "build_services",
    "loop_factory",
    "run_serve",
    "serve",
    "serve_on",
    "startup_lines",
    "uvicorn_config",
]

log = logging.getLogger("framebroker")

_BACKLOG = 2048  # uvicorn's default
_FLUSH_S = 1.0  # longest a stop waits for the last events to reach the live listeners


class _Companion(uvicorn.Server):
    """A listener that leaves signals to the main server and stops when it stops.

    ``capture_signals`` is uvicorn's, undocumented: listed in :data:`.uvicorn_hooks.HOOKS`.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def serve_quietly(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn calls sys.exit() when it cannot start; the caller reports that instead.
        with contextlib.suppress(SystemExit):
            await self.serve(sockets=sockets)


class _MainServer(uvicorn.Server):
    """The main listener. On a stop the sources end first, before uvicorn closes any socket,
    so that their listeners are sent what the stop ends (a traffic event, with its count).

    ``shutdown`` is uvicorn's, undocumented: listed in :data:`.uvicorn_hooks.HOOKS`.
    """

    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self.services = services

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.services.stop_sources()
        await self.services.hub.flush(_FLUSH_S)
        await super().shutdown(sockets=sockets)


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
        f"  metrics: {base}/metrics (Prometheus); health: {base}/healthz",
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

    Nothing is touched before the settings are checked, every listener is bound and the data
    directory is locked: a second server on the same port or data directory stops with a
    :class:`ConfigError` before it opens the store (whose start-up recovery would otherwise
    rewrite the running server's records). Raises
    :class:`~framebroker.errors.UvicornIncompatible` before anything starts if the installed
    uvicorn lacks a name the listeners hook into.
    """
    check_uvicorn()
    check_startup(settings, build_registry(settings))
    listeners = bind_listeners(settings)
    try:
        with DataDirLock(settings.data_dir):
            await serve_on(settings, listeners)
    finally:
        for _, sock in listeners.values():
            sock.close()


def _listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``OSError`` if it cannot be had); with
    ``reuse_port``, one of several on the port, among which the kernel spreads connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        # Listening now, not when uvicorn starts serving: a bound socket that does not listen
        # yet leaves the port to a second process that also sets SO_REUSEADDR.
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listeners(
    settings: Settings, *, reuse_port: bool = False
) -> dict[str, tuple[int, socket.socket]]:
    """Every listener of ``settings`` by name ("http": the main port), bound and listening;
    raises :class:`ConfigError` naming the option that chose a port that cannot be had."""
    wanted = {"http": settings.port}
    if settings.compat:
        for name, default in COMPAT_PORTS.items():
            if name == "webrtc_http" and settings.webrtc.websocket_only:
                continue
            wanted[name] = settings.compat_ports.get(name, default)
    bound: dict[str, tuple[int, socket.socket]] = {}
    try:
        for name, port in wanted.items():
            try:
                sock = _listen(settings.host, port, reuse_port=reuse_port)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if name == "http":
                    # A port in use is the port's fault; anything else, the address's.
                    in_use = exc.errno == errno.EADDRINUSE
                    flag = f"--port {port}" if in_use else f"--host {settings.host}"
                    raise ConfigError(
                        f"{flag}: cannot listen on {settings.host}:{port}: {reason}"
                    ) from None
                raise ConfigError(
                    f"compatibility listener {name} could not listen on "
                    f"{settings.host}:{port} ({reason}); move it with --compat-port {name}=PORT"
                ) from None
            bound[name] = (int(sock.getsockname()[1]), sock)
    except BaseException:
        for _, sock in bound.values():
            sock.close()
        raise
    return bound


def bind_worker_listeners(
    settings: Settings, count: int
) -> list[dict[str, tuple[int, socket.socket]]]:
    """For each of ``count`` workers, every listener of ``settings`` (as
    :func:`bind_listeners`): sockets of their own on the same ports, with ``SO_REUSEPORT``,
    so that the kernel spreads new connections evenly over the workers (a hash of each
    connection's addresses), where one shared socket gives a burst of them to whichever
    worker calls ``accept`` first. Raises :class:`ConfigError` as :func:`bind_listeners`."""
    first = bind_listeners(settings, reuse_port=True)
    copies = [first]
    try:
        for _ in range(count - 1):
            more: dict[str, tuple[int, socket.socket]] = {}
            copies.append(more)
            for name, (port, _) in first.items():
                more[name] = (port, _listen(settings.host, port, reuse_port=True))
    except OSError as exc:
        for listeners in copies:
            for _, sock in listeners.values():
                sock.close()
        raise ConfigError(
            f"cannot listen on {settings.host} a second time for a worker: {exc}"
        ) from None
    return copies


def build_services(settings: Settings) -> Services:
    """:meth:`Services.build`, with a store that cannot be opened said in one line."""
    try:
        return Services.build(settings)
    except SQLAlchemyError as exc:
        raise ConfigError(f"--database-url: cannot open the store: {exc}") from None


async def serve_on(
    settings: Settings,
    listeners: dict[str, tuple[int, socket.socket]],
    services: Services | None = None,
    *,
    announce: bool = True,
) -> None:
    """Serve ``services`` (built from ``settings`` when not given) on ``listeners``, bound
    already, until interrupted. ``announce``: log where each API is (a worker of
    ``serve --workers`` other than the first leaves that to the first)."""
    if announce:
        warn_if_open(settings)
    if services is None:
        services = build_services(settings)
    port, main_socket = listeners["http"]
    main = _MainServer(
        uvicorn_config(
            build_app(settings, services),
            settings,
            port,
            lifespan="on",
            listener="http",
            services=services,
        ),
        services,
    )
    companions: list[tuple[str, int, socket.socket, _Companion]] = []
    for name, (compat_port, sock) in listeners.items():
        if name == "http":
            continue
        app = build_compat_app(name, services)
        config = uvicorn_config(
            app, settings, compat_port, lifespan="off", listener=name, services=services
        )
        companions.append((name, compat_port, sock, _Companion(config)))
    scheme = "https" if settings.ssl else "http"
    ws = "wss" if settings.ssl else "ws"
    services.listening = not companions
    _log_banner_once()
    main_task = asyncio.create_task(main.serve(sockets=[main_socket]))
    while not main.started and not main_task.done():
        await asyncio.sleep(0.05)
    if main_task.done():  # failed to start: report it
        await main_task
        return
    for line in startup_lines(settings) if announce else ():
        log.info("%s", line)
    tasks = []
    for name, compat_port, sock, server in companions:
        tasks.append(asyncio.create_task(server.serve_quietly(sockets=[sock])))
        while not server.started and not tasks[-1].done():
            await asyncio.sleep(0.02)
        if not server.started:  # pragma: no cover - its socket is bound already
            main.should_exit = True
            await asyncio.gather(main_task, *tasks, return_exceptions=True)
            raise ConfigError(f"compatibility listener {name} did not start")
        kind = ws if name in ("people_ws", "webrtc_ws") else scheme
        if not announce:
            continue
        log.info(
            "  %s on its original port: %s://%s:%d/ (--compat %s)",
            _COMPAT_ROLES.get(name, name),
            kind,
            settings.host,
            compat_port,
            name,
        )
    services.listening = True
    try:
        await main_task
    finally:
        for _, _, _, server in companions:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        _exit_if_stuck(services)  # also when stopped by a signal (uvicorn re-raises it)


class _Once(logging.Filter):
    """Lets each of uvicorn's per-server lines (the process started, finished) through once:
    every compatibility listener is a uvicorn server of its own in the same process."""

    LINES = ("Started server process [%d]", "Finished server process [%d]")

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in self.LINES:
            return True
        if record.msg in self.seen:
            return False
        self.seen.add(str(record.msg))
        return True


def _log_banner_once() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _Once) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_Once())


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
