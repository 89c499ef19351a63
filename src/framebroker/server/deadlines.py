"""Connection-level limits on every listener: how many connections it holds, and how long a
client may take over a request's headers, over its body, and before its next request.

uvicorn bounds none of these waits well enough. Its keep-alive timer is cancelled by any
byte, so a client that sends one header byte a second (slowloris) holds a connection and its
memory for ever, and so does one that dribbles a body. Its ``limit_concurrency`` answers a
plain-text 503 that no metric counts.

:func:`protocol_class` makes, for one listener, a subclass of uvicorn's httptools protocol
(what uvicorn runs by default, and the faster parser) that keeps up to three timers on each
connection, started and stopped by httptools' own parser callbacks:

- *waiting for a request*, from the connection's opening or from the end of the previous
  request (its response sent and its body read): the idle timer closes the connection
  quietly if no byte of a request comes within ``idle_timeout_s``; the header timer answers
  408 ``header_timeout`` and closes it if the headers are not complete within
  ``header_timeout_s`` (or closes it quietly, as idle, if nothing came at all);
- *reading a body*, from when the request is handed to the application until its last byte:
  the body timer answers 408 ``body_timeout`` within ``body_timeout_s`` (or just closes the
  connection when the application had started its answer). The application sees the client
  disconnect, as it would if the client had gone.

A connection opened beyond ``max_connections`` (WebSockets count too) has its request answered
503 ``too_many_connections`` and is closed. Every refusal and timeout is reported once to
``on_refused(code)``, which the server points at ``framebroker_errors{transport=<listener>}``.

A WebSocket upgrade hands the connection to uvicorn's WebSocket protocol; no timer outlives the
handshake, since a live socket is meant to stay open.

Every private uvicorn method overridden here and attribute read is listed in
:data:`.uvicorn_hooks.HOOKS`, checked when the server starts: add any new one there.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..config import Limits
from ..errors import (
    BodyTimeout,
    FramebrokerError,
    HeadersTooLarge,
    HeaderTimeout,
    TooManyConnections,
)
from .body_chunks import ChunkedBodyProtocol

if TYPE_CHECKING:
    # Annotations only: the uvicorn names this module relies on at run time are checked at
    # start-up (uvicorn_hooks.HOOKS).
    from uvicorn._types import (
        ASGI3Application,
        ASGIReceiveCallable,
        ASGISendCallable,
        Scope,
    )
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    from uvicorn.server import ServerState

__all__ = ["ConnectionPolicy", "DeadlineProtocol", "protocol_class"]

log = logging.getLogger(__name__)

WS_MAX_LINE = 8192
"""The longest request or header line uvicorn's WebSocket layer (websockets) reads; past it,
a handshake got no answer at all, so it is refused here first."""

IDLE_TIMEOUT = "idle_timeout"
"""The code counted when an idle connection is closed (nothing is sent on the wire)."""


@dataclass(eq=False)
class ConnectionPolicy:
    """One listener's limits, where its refusals are counted, and the connections it has
    refused (they are open, but not counted against ``max_connections``)."""

    limits: Limits
    on_refused: Callable[[str], None]
    refused: set[DeadlineProtocol] = field(default_factory=set)


def protocol_class(limits: Limits, on_refused: Callable[[str], None]) -> type[DeadlineProtocol]:
    """The ``http=`` protocol class for one listener's ``uvicorn.Config``.

    Make one per listener: its connection count is the listener's own.
    """

    class ListenerProtocol(DeadlineProtocol):
        policy = ConnectionPolicy(limits, on_refused)

    return ListenerProtocol


def _expects_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            # httptools has already refused a Content-Length that is not a number.
            return int(value) > 0
    return False


class DeadlineProtocol(ChunkedBodyProtocol):
    """uvicorn's httptools protocol with the deadlines and the cap described in this module.
    Subclassed by :func:`protocol_class`, which sets :attr:`policy`."""

    policy: ClassVar[ConnectionPolicy]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._idle: asyncio.TimerHandle | None = None
        self._headers_due: asyncio.TimerHandle | None = None
        self._body_due: asyncio.TimerHandle | None = None
        self._request_begun = False  # a byte of the awaited request has come
        self._message_complete = True  # the parser has read the latest request to its end
        self._over_limit = False
        self._head_bytes = 0  # request line and headers of the request being parsed
        self._cut: RequestResponseCycle | None = None  # the request a body timeout ended

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        policy = self.policy
        if len(self.connections) - len(policy.refused) > policy.limits.max_connections:
            self._over_limit = True
            policy.refused.add(self)
            self.app = self._refuse
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        self.policy.refused.discard(self)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._stop_timers()
        lines = [len(self.url) + 16, *(len(n) + len(v) + 2 for n, v in self.headers)]
        if max(lines) > WS_MAX_LINE - 2:
            self._answer_and_close(
                HeadersTooLarge(
                    f"a WebSocket handshake line is over {WS_MAX_LINE} bytes "
                    f"({max(lines)}): shorten the URL's query or the header",
                    field="headers",
                )
            )
            return
        super().handle_websocket_upgrade()

    def _should_upgrade(self) -> bool:
        # A connection over the cap gets its 503 as an HTTP answer, upgrade or not.
        return not self._over_limit and super()._should_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        if not self._over_limit:
            super()._unsupported_upgrade_warning()

    # Parser callbacks (httptools)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_complete = False
        self._request_begun = True
        self._head_bytes = 0
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    # A request whose head is over the limit is answered at once and the connection closed;
    # httptools still parses the rest of the bytes at hand, which then go nowhere.

    def data_received(self, data: bytes) -> None:
        if not self.transport.is_closing():
            super().data_received(data)

    def on_url(self, url: bytes) -> None:
        if self._head_fits(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_fits(len(name) + len(value) + 4):
            super().on_header(name, value)

    def _head_fits(self, size: int) -> bool:
        if self.transport.is_closing():
            return False
        self._head_bytes += size
        limit = self.policy.limits.max_header_bytes
        if self._head_bytes <= limit:
            return True
        self._answer_and_close(
            HeadersTooLarge(
                f"request line and headers are over {limit} bytes (limits.max_header_bytes)",
                field="headers",
            )
        )
        return False

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():
            super().on_body(body)

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self.transport.is_closing() and self.cycle is None:  # refused before a request
            return
        self._message_complete = True
        if self._body_due is not None:
            self._body_due.cancel()
            self._body_due = None
        super().on_message_complete()
        self._await_request()

    # Request/response cycle

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # Only the latest request parsed can still be missing part of its body.
        if cycle is self.cycle and not self._message_complete and _expects_body(self.headers):
            self._body_due = self.loop.call_later(
                self.policy.limits.body_timeout_s, self._body_expired, cycle
            )
            app = self._guarded(cycle, app)
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The idle and header timers replace uvicorn's keep-alive timer.
        self._unset_keepalive_if_required()
        self._await_request()

    def _await_request(self) -> None:
        """Start the idle and header timers once the previous request is over: answered,
        read to its end, and no other request parsed behind it."""
        if self.transport.is_closing() or self._headers_due is not None:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return
        if self.pipeline or not self._message_complete:
            return
        limits = self.policy.limits
        self._request_begun = False
        self._idle = self.loop.call_later(limits.idle_timeout_s, self._idle_expired)
        self._headers_due = self.loop.call_later(limits.header_timeout_s, self._headers_expired)

    # Expiries

    def _idle_expired(self) -> None:
        self._idle = None
        if not self.transport.is_closing():
            self.policy.on_refused(IDLE_TIMEOUT)
            self.transport.close()

    def _headers_expired(self) -> None:
        self._headers_due = None
        if self.transport.is_closing():
            return
        if not self._request_begun:  # nothing came at all: idle, not slow
            self.policy.on_refused(IDLE_TIMEOUT)
            self.transport.close()
            return
        seconds = self.policy.limits.header_timeout_s
        self._answer_and_close(
            HeaderTimeout(
                f"request headers not complete within {seconds:g} s (limits.header_timeout_s)",
                field="headers",
            )
        )

    def _body_expired(self, cycle: RequestResponseCycle) -> None:
        self._body_due = None
        if self.transport.is_closing():
            return
        self._cut = cycle
        if cycle.response_started:  # too late for a status: the client sees the cut
            self.policy.on_refused(BodyTimeout.code)
            self.transport.close()
            return
        # The application gets http.disconnect and anything it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        seconds = self.policy.limits.body_timeout_s
        self._answer_and_close(
            BodyTimeout(
                f"request body not complete within {seconds:g} s (limits.body_timeout_s)",
                field="body",
            )
        )

    def _answer_and_close(self, error: FramebrokerError) -> None:
        self.policy.on_refused(error.code)
        log.debug("closing %s: %s", self.client, error.message)
        body = orjson.dumps(error.to_dict())
        status = http.HTTPStatus(error.http_status)
        head = [b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _stop_timers(self) -> None:
        for timer in (self._idle, self._headers_due, self._body_due):
            if timer is not None:
                timer.cancel()
        self._idle = self._headers_due = self._body_due = None

    # Applications

    def _guarded(self, cycle: RequestResponseCycle, app: ASGI3Application) -> ASGI3Application:
        async def run(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
            try:
                await app(scope, receive, send)
            except Exception:
                # An application may raise on the disconnect a body timeout forced on it; the
                # timeout is already answered and counted, so that is no crash.
                if self._cut is not cycle:
                    raise

        return run

    async def _refuse(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        limit = self.policy.limits.max_connections
        error = TooManyConnections(
            f"this listener already holds {limit} open connections "
            "(limits.max_connections); try again shortly"
        )
        self.policy.on_refused(error.code)
        body = orjson.dumps(error.to_dict())
        await send(
            {
                "type": "http.response.start",
                "status": error.http_status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                    (b"connection", b"close"),
                    (b"retry-after", b"1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
