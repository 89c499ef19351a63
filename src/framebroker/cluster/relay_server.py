"""The internal endpoint a node answers relayed calls on: ``POST /relay/v2/<op>``, on its relay
port, for the other nodes of its cluster only.

It is its own listener rather than a route of the public app: what a client may reach and
what only nodes may reach never share a port, so no middleware ordering or proxy rule can
expose the relay, and a front proxy needs no rule for it. Every refusal (a wrong token, a
path of another relay version, a body that is not a JSON object) is logged and counted by
reason, never raised into the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import FramebrokerError
from .connection import Refusals
from .engineio_route import ENGINEIO_PATH, REFUSED_HEADER
from .relay_wire import PATH_PREFIX, RelayRefused, dumps, error_to_wire, loads_object

__all__ = ["EngineIOForwards", "RelayHandler", "RelayServer", "relay_app"]

log = logging.getLogger(__name__)

RelayHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""``await handler(op, body)``: the call's JSON-able result; raises a
:class:`~framebroker.errors.FramebrokerError` to answer with it, :class:`RelayRefused` for a
call it cannot read."""

MAX_BODY_BYTES = 64 * 1024 * 1024


def _json(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status_code=status, media_type="application/json")


def relay_app(handler: RelayHandler, token: str, refusals: Refusals) -> Starlette:
    """The ASGI app of the relay: calls ``handler`` for each authenticated call."""
    expected = f"Bearer {token}".encode()

    async def call(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            refusals.refuse("relay_auth", f"from {request.client}: a wrong or missing token")
            return _json({"refused": "relay_auth"}, 401)
        op = request.path_params["op"]
        try:
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                raise RelayRefused("relay_malformed", f"a body of {len(body)} bytes")
            result = await handler(op, loads_object(body))
        except RelayRefused as e:
            refusals.refuse(e.reason, f"{op}: {e}")
            return _json({"refused": e.reason, "error": str(e)}, 400)
        except FramebrokerError as e:
            return _json({"error": error_to_wire(e)})
        return _json({"ok": result})

    async def other_version(request: Request) -> Response:
        refusals.refuse("relay_version", f"{request.method} {request.url.path}")
        return _json({"refused": "relay_version", "expected": PATH_PREFIX}, 404)

    return Starlette(
        routes=[
            Route(PATH_PREFIX + "{op:str}", call, methods=["POST"]),
            Route("/{path:path}", other_version, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
    )


class EngineIOForwards:
    """The relay's ASGI app, with ``ENGINEIO_PATH`` answered by this node's Socket.IO app
    (``engineio()``, set once the server assembled it): an Engine.IO request another node
    forwarded (:mod:`.engineio_route`), authenticated with the relay's token, reaches this
    node's Engine.IO server as if the client had sent it here."""

    def __init__(
        self,
        relay: ASGIApp,
        engineio: Callable[[], ASGIApp | None],
        token: str,
        refusals: Refusals,
        *,
        on_forward: Callable[[], None] = lambda: None,
    ) -> None:
        self.relay = relay
        self.engineio = engineio
        self.expected = f"Bearer {token}".encode()
        self.refusals = refusals
        self.on_forward = on_forward

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != ENGINEIO_PATH:
            await self.relay(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        app = self.engineio()
        if not hmac.compare_digest(given, self.expected):
            self.refusals.refuse(
                "relay_auth", f"from {scope.get('client')}: a wrong or missing token"
            )
            await _refuse(send, 401, "relay_auth")
        elif app is None:
            self.refusals.refuse("relay_malformed", "an Engine.IO request, no Socket.IO here")
            await _refuse(send, 404, "relay_malformed")
        else:
            self.on_forward()
            await app(scope, receive, send)


async def _refuse(send: Send, status: int, reason: str) -> None:
    body = dumps({"refused": reason})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (REFUSED_HEADER.encode(), reason.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Quiet(uvicorn.Server):
    """A listener that leaves signals to the server it runs beside.

    ``capture_signals`` is uvicorn's, undocumented: listed in
    :data:`framebroker.server.uvicorn_hooks.HOOKS`.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class RelayServer:
    """The relay endpoint on ``host:port`` (0: a free port; :attr:`port` says which)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(1024)
        except OSError:
            self._socket.close()
            raise
        self.port = int(self._socket.getsockname()[1])
        self._server = _Quiet(
            uvicorn.Config(
                app, log_level="warning", lifespan="off", access_log=False, timeout_keep_alive=30
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        self._socket.close()
