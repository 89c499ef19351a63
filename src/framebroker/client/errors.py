"""Every error a framebroker client raises on purpose.

A server's refusal becomes an :class:`ApiError` of the class its HTTP status names, carrying
the server's ``code`` and ``field`` (see the server's own ``framebroker.errors``); a failure
to reach the server, or to keep the connection, is a :class:`TransportError`. Catch
:class:`ClientError` for both. The tree::

    ClientError                     anything below; ``message``, ``code``, ``field``
    ├── InvalidURL                  the URL or a header cannot be used (before any I/O)
    ├── ApiError                    the server answered with an error: ``status``, ``body``
    │   ├── InvalidRequest          400, 415, 422 (and the WebSocket APIs' bad requests)
    │   ├── Unauthorized            401, 403 (a missing or wrong API key, a refused origin)
    │   ├── NotFound                404 (no such session, face or route)
    │   ├── Conflict                409
    │   ├── PayloadTooLarge         413, 431
    │   ├── RateLimited             429; ``retry_after_s`` from ``Retry-After``
    │   └── ServerError             5xx
    │       └── ServiceUnavailable  503 (the server is at capacity; retry later)
    └── TransportError              no usable answer
        ├── ConnectionFailed        could not connect: refused, no such host, TLS, handshake
        ├── ConnectionLost          the connection dropped after it was made
        ├── Timeout                 no answer in time
        └── ProtocolError           an answer that is not what the API promises

Clients retry :class:`RateLimited`, :class:`ServiceUnavailable` and
:class:`ConnectionFailed` by themselves (see :class:`~framebroker.client.Backoff`); what they
raise is what was left after the retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ApiError",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "ConnectionLost",
    "InvalidRequest",
    "InvalidURL",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "Timeout",
    "TransportError",
    "Unauthorized",
    "api_error",
]


class ClientError(Exception):
    """Base of every deliberate client error. ``code`` is the server's machine-readable name
    when the server gave one (``session_not_found``), else the client's own; ``field`` names
    the part of the request at fault, when known."""

    default_code = "client_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field


class InvalidURL(ClientError):
    default_code = "invalid_url"


class ApiError(ClientError):
    """The server refused the request. ``status`` is the HTTP status (for the WebSocket and
    Socket.IO APIs, the status the same refusal has over HTTP); ``body`` the error object as
    the server sent it (``{}`` when it sent none); ``reason`` the HTTP reason phrase;
    ``text`` the start of the answer's body as text (for servers that answer plain text)."""

    default_code = "http_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        field: str | None = None,
        body: Mapping[str, Any] | None = None,
        reason: str = "",
        retry_after_s: float | None = None,
        text: str = "",
    ) -> None:
        super().__init__(message, code=code, field=field)
        self.status = status
        self.body: dict[str, Any] = dict(body or {})
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.text = text


class InvalidRequest(ApiError):
    default_code = "invalid_input"


class Unauthorized(ApiError):
    default_code = "unauthorized"


class NotFound(ApiError):
    default_code = "not_found"


class Conflict(ApiError):
    default_code = "session_conflict"


class PayloadTooLarge(ApiError):
    default_code = "payload_too_large"


class RateLimited(ApiError):
    """Over one client's or one session's share; ``retry_after_s`` says when to try again
    (from ``Retry-After``, or the body's ``retry_after_s``)."""

    default_code = "too_many_requests"


class ServerError(ApiError):
    default_code = "internal"


class ServiceUnavailable(ServerError):
    default_code = "capacity_exceeded"


class TransportError(ClientError):
    default_code = "transport_error"


class ConnectionFailed(TransportError):
    default_code = "connection_failed"


class ConnectionLost(TransportError):
    default_code = "connection_lost"


class Timeout(TransportError):
    default_code = "timeout"


class ProtocolError(TransportError):
    default_code = "protocol_error"


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    431: PayloadTooLarge,
    503: ServiceUnavailable,
}


def api_error(
    status: int,
    body: Any = None,
    *,
    reason: str = "",
    retry_after: str | None = None,
    text: str = "",
) -> ApiError:
    """The error for a refusal with HTTP ``status``, the decoded error ``body``
    (``{"error", "code", "field"?, ...}``) and the body as ``text``.

    ``retry_after`` is the ``Retry-After`` header (seconds); the body's ``retry_after_s``
    is used when it is absent.
    """
    document: dict[str, Any] = body if isinstance(body, dict) else {}
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else InvalidRequest if status >= 400 else ApiError
    message = document.get("error") or document.get("message") or " ".join(text.split())
    if not isinstance(message, str) or not message:
        message = reason or "no reason given"
    code = document.get("code")
    field = document.get("field")
    wait = _seconds(retry_after)
    if wait is None:
        wait = _seconds(document.get("retry_after_s"))
    return cls(
        f"HTTP {status}{' ' + reason if reason else ''}: {message}",
        status=status,
        code=code if isinstance(code, str) else None,
        field=field if isinstance(field, str) else None,
        body=document,
        reason=reason,
        retry_after_s=wait,
        text=text,
    )


def _seconds(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # an HTTP date: the client's backoff decides instead
    return seconds if seconds >= 0 else None
