"""Opening a WebSocket to the server (the live push, WebRTC signaling) with the
connection's key, TLS and timeout, and the errors a handshake can end in."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

from .connection import Connection
from .errors import ClientError, ConnectionFailed, InvalidURL, api_error

__all__ = ["open_websocket", "websocket_url"]


def websocket_url(connection: Connection, default_path: str) -> str:
    """The socket's URL: a ``ws(s)://`` URL as given (its path, or ``/``), an
    ``http(s)://`` one with ``default_path`` when it names no path of its own."""
    parts = urlsplit(connection.url)
    scheme = parts.scheme.lower()
    if scheme in ("ws", "wss"):
        return urlunsplit(parts._replace(path=parts.path or "/"))
    path = parts.path if parts.path not in ("", "/") else default_path
    return urlunsplit(parts._replace(scheme="wss" if scheme == "https" else "ws", path=path))


async def open_websocket(
    connection: Connection, url: str, *, max_size: int | None = 2**24
) -> ClientConnection:
    """Connect to ``url``, sending the API key as a header. Raises
    :class:`~.errors.ApiError` when the server answers the handshake with an error status,
    :class:`~.errors.ConnectionFailed` when it cannot be reached in time."""
    opened: list[ClientConnection] = []

    class Kept(ClientConnection):
        """A connection that is kept in ``opened``, so that a failed handshake's can be
        waited for."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    try:
        return await _handshake(connection, url, max_size, Kept)
    except BaseException:
        # websockets aborts a failed handshake's connection and returns before its socket
        # is closed (on the loop's next turn): wait for that, so that a refused connect
        # leaves nothing open, even when the caller's event loop ends right after.
        await _lost(opened, connection.timeout_s)
        raise


async def _handshake(
    connection: Connection, url: str, max_size: int | None, factory: type[ClientConnection]
) -> ClientConnection:
    context = connection.ssl_context() if url.startswith("wss:") else None
    try:
        return await websockets.connect(
            url,
            ssl=context,
            additional_headers=connection.headers(),
            open_timeout=connection.timeout_s,
            max_size=max_size,
            compression=None,  # base64 JPEG barely shrinks; deflating it costs both sides
            create_connection=factory,
        )
    except websockets.InvalidURI as exc:
        raise InvalidURL(f"{url!r} is not a WebSocket URL: {exc}", field="url") from None
    except websockets.InvalidStatus as exc:
        raise _refused(exc) from None
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionFailed(
            f"cannot connect to {url}: the server's certificate is not trusted "
            f"({exc.verify_message}); pass verify= a CA file"
        ) from None
    except TimeoutError:
        raise ConnectionFailed(
            f"cannot connect to {url}: no handshake within {connection.timeout_s:g} s"
        ) from None
    except (OSError, websockets.InvalidHandshake) as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
        raise ConnectionFailed(f"cannot connect to {url}: {reason}") from None


async def _lost(connections: list[ClientConnection], timeout: float) -> None:
    """Abort what is left of ``connections`` and wait, at most ``timeout`` seconds, until
    each one's socket is closed (asyncio closes it right after ``connection_lost``)."""
    started = [c for c in connections if getattr(c, "transport", None) is not None]
    for c in started:
        c.transport.abort()  # a no-op for one websockets aborted already
    waiters = [c.connection_lost_waiter for c in started if not c.connection_lost_waiter.done()]
    if waiters:
        await asyncio.wait(waiters, timeout=timeout)


def _refused(exc: websockets.InvalidStatus) -> ClientError:
    response = exc.response
    try:
        body = json.loads(response.body or b"")
    except (ValueError, UnicodeDecodeError):
        body = None
    return api_error(
        response.status_code,
        body,
        reason=response.reason_phrase,
        retry_after=response.headers.get("Retry-After"),
        text=(response.body or b"")[:500].decode("utf-8", "replace"),
    )
