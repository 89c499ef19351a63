"""API keys, checked the same way on every transport.

Keys are configured by name (``[auth] api_keys = {ci = "...", camera-3 = "..."}``); a client
presents one as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` on any HTTP request or
WebSocket handshake. A browser cannot set headers on a WebSocket, so a socket without them
is accepted, and its first message must then be ``{"type": "auth", "api_key": "KEY"}``
(answered ``{"type": "auth", "ok": true}``); anything else closes it with 1008 before the
endpoint sees a byte or sends one. A key that matches none is answered "the API key was
refused" (never echoed back), apart from a missing one ("an API key is required"); a socket
whose handshake carried a wrong key may still send the right one first. Socket.IO clients put
``{"api_key": KEY}`` in their connection ``auth`` (see :mod:`.video_analysis_socketio`).
Every comparison runs in constant time over every key, so timing says nothing about which
key, or how much of one, was right.

With no keys configured nothing is checked; the server warns at start when it then listens
on an address other than loopback.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

import orjson

__all__ = [
    "AUTH_CLOSE_CODE",
    "KEY_REFUSED",
    "KEY_REQUIRED",
    "ApiKeyMiddleware",
    "ApiKeys",
    "is_loopback",
    "presented_key",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AUTH_CLOSE_CODE = 1008
"""WebSocket close code for a missing or wrong key (policy violation)."""

FIRST_MESSAGE_TIMEOUT_S = 10.0
_MAX_AUTH_MESSAGE = 4096


class ApiKeys:
    """The configured keys, by name. Empty: access control is off."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        for name, key in keys.items():
            if not name or not key:
                raise ValueError("api keys need a non-empty name and value")
        self._keys = [(name, key.encode()) for name, key in keys.items()]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def check(self, presented: str | bytes | None) -> str | None:
        """The name of the key ``presented`` matches, or ``None``: in constant time."""
        if presented is None or not self._keys:
            return None
        given = presented.encode() if isinstance(presented, str) else presented
        found: str | None = None
        for name, key in self._keys:  # every key, always: no early exit to time
            if hmac.compare_digest(given, key):
                found = name
        return found

    def from_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The key named by ``Authorization: Bearer`` or ``X-API-Key`` among raw headers."""
        return self.check(presented_key(headers))


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a client sent as ``Authorization: Bearer`` or ``X-API-Key``, or ``None``."""
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message, "code": "unauthorized"})


KEY_REQUIRED = "an API key is required: send Authorization: Bearer KEY or X-API-Key: KEY"
KEY_REFUSED = "the API key was refused: it is none of the server's keys"
"""A wrong key is told apart from a missing one, and never echoed."""


class ApiKeyMiddleware:
    """Pure ASGI middleware enforcing :class:`ApiKeys` on HTTP and WebSocket scopes.

    ``open_paths`` are served without a key (health checks, the console's static files);
    ``own_auth`` paths check keys themselves (Socket.IO's ``auth``). ``on_refused`` is told
    each refusal (for metrics).
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: ApiKeys,
        *,
        open_paths: Iterable[str] = (),
        own_auth: Iterable[str] = (),
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = tuple(open_paths)
        self.own_auth = tuple(own_auth)
        self.on_refused = on_refused

    def _exempt(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.open_paths) or (
            any(path.startswith(p) for p in self.own_auth)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if not self.keys or kind not in ("http", "websocket") or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = presented_key(scope.get("headers", ()))
        name = self.keys.check(presented)
        if name is not None:
            scope.setdefault("state", {})["api_key"] = name
            await self.app(scope, receive, send)
        elif kind == "http":
            await self._refuse_http(scope, send, KEY_REQUIRED if presented is None else KEY_REFUSED)
        else:
            # A wrong key in the headers still leaves the first message to bring a right one
            # (clients send both); if it does not, the refusal says the key was refused.
            await self._first_message(scope, receive, send, refused=presented is not None)

    def _refused(self, kind: str) -> None:
        if self.on_refused is not None:
            self.on_refused(kind)

    async def _refuse_http(self, scope: Scope, send: Send, reason: str) -> None:
        self._refused("http")
        body = _error_body(reason)
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="framebroker"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _first_message(
        self, scope: Scope, receive: Receive, send: Send, *, refused: bool = False
    ) -> None:
        """Accept the socket here, take the key from its first message, then hand the socket
        to the endpoint as if it had just connected; its own ``accept`` is swallowed."""
        connect = await receive()
        if connect.get("type") != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        name: str | None = None
        presented: str | None = None
        try:
            async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT_S):
                first = await receive()
        except TimeoutError:
            first = {}
        if first.get("type") == "websocket.disconnect":
            return
        if first:
            presented = self._key_in(first)
            name = self.keys.check(presented)
        if name is None:
            self._refused("websocket")
            reason = (
                KEY_REFUSED
                if refused or presented is not None
                else (
                    'the first message must be {"type": "auth", "api_key": KEY} '
                    "(or send the key as a header)"
                )
            )
            await send({"type": "websocket.send", "text": _error_body(reason).decode()})
            await send({"type": "websocket.close", "code": AUTH_CLOSE_CODE, "reason": "api key"})
            return
        await send({"type": "websocket.send", "text": '{"type":"auth","ok":true}'})
        scope.setdefault("state", {})["api_key"] = name
        replayed = False

        async def inner_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return connect
            return await receive()

        async def inner_send(message: Message) -> None:
            if message.get("type") == "websocket.accept":
                return  # accepted already, before the key arrived
            await send(message)

        await self.app(scope, inner_receive, inner_send)

    def _key_in(self, message: Message) -> str | None:
        """The key an ``auth`` message presents (right or wrong), or ``None``."""
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes")
        if not raw or len(raw) > _MAX_AUTH_MESSAGE:
            return None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict) or body.get("type") != "auth":
            return None
        key = body.get("api_key")
        return key if isinstance(key, str) else None
