"""Which web pages may open a WebSocket to the server: its own, and those configured.

A browser sends ``Origin`` on every WebSocket handshake and cannot lie about it, so checking it
stops another site's page from using a visitor's browser (and the network it sits in) to read
the live stream or stream into the server. Clients that are not browsers send no ``Origin``
and are not affected. Socket.IO checks origins itself (``analysis.cors_allowed_origins``,
same origin by default), so its path is left to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from .auth import AUTH_CLOSE_CODE, ASGIApp, Receive, Scope, Send

__all__ = ["OriginMiddleware", "same_origin"]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``) names the host the request went to."""
    if host is None:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class OriginMiddleware:
    """Refuses (close 1008 before accepting) a WebSocket whose ``Origin`` is neither this
    server nor one of ``allowed`` (``"*"``: any)."""

    def __init__(
        self, app: ASGIApp, *, allowed: Iterable[str] = (), own_check: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed}
        self.own_check = tuple(own_check)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exempt = any(scope.get("path", "").startswith(p) for p in self.own_check)
        if scope["type"] == "websocket" and not exempt:
            origin = _header(scope, b"origin")
            if origin is not None and not self._allowed(origin, _header(scope, b"host")):
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": AUTH_CLOSE_CODE})
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, host: str | None) -> bool:
        return (
            "*" in self.allowed
            or origin.rstrip("/").lower() in self.allowed
            or same_origin(origin, host)
        )
