"""The HTTP side every client shares: httpx clients built from a :class:`Connection`, the
retry loop, and the one place where an answer or an httpx error becomes a client error.

:class:`Call` describes a request and how to read its answer without doing I/O, so the sync
and the async client of an API are the same code around a different ``send``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from .connection import Connection
from .errors import (
    ClientError,
    ConnectionFailed,
    ConnectionLost,
    ProtocolError,
    Timeout,
    TransportError,
    api_error,
)

__all__ = ["AsyncHttpClient", "Call", "HttpClient", "check", "read_json", "transport_error"]

T = TypeVar("T")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request (``path`` is joined to the connection's URL) and the function that turns
    its successful answer into the result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] | None = None

    @property
    def idempotent(self) -> bool:
        return self.method.upper() in _IDEMPOTENT

    def build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request(
            self.method,
            self.path,
            json=self.json,
            content=self.content,
            headers=dict(self.headers),
            params=self.params,
        )


def read_json(response: httpx.Response) -> Any:
    """The answer's JSON, or :class:`ProtocolError` saying what came instead."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content type")
        raise ProtocolError(
            f"{response.request.method} {response.request.url}: HTTP {response.status_code} "
            f"but the answer is not JSON ({kind})"
        ) from None


def check(response: httpx.Response) -> httpx.Response:
    """``response`` when its status is 2xx; the :class:`ApiError` it stands for otherwise."""
    if response.is_success:
        return response
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    raise api_error(
        response.status_code,
        body,
        reason=response.reason_phrase,
        retry_after=response.headers.get("retry-after"),
        text=response.text[:500],
    )


def transport_error(exc: httpx.TransportError, url: object) -> TransportError:
    """The client error for an httpx transport failure on a request to ``url``."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        reason = str(exc) or type(exc).__name__
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in reason:
            reason = "the server's certificate is not trusted (pass verify= a CA file)"
        elif "refused" in reason.lower():
            reason = "connection refused"
        return ConnectionFailed(f"cannot connect to {url}: {reason}")
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"{url}: no answer in time ({type(exc).__name__})")
    return ConnectionLost(f"{url}: the connection was lost: {exc or type(exc).__name__}")


class HttpClient:
    """A kept-alive ``httpx.Client`` to one server that runs :class:`Call` s with retries."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._client = httpx.Client(
            base_url=connection.base(),
            headers=connection.headers(),
            timeout=connection.timeout_s,
            verify=connection.ssl_context() or True,
        )

    def call(self, call: Call[T]) -> T:
        """Send ``call``, trying again as :meth:`Connection.retry_delay` says."""
        attempt = 0
        while True:
            try:
                return call.parse(self._send(call))
            except ClientError as exc:
                delay = self.connection.retry_delay(exc, attempt, idempotent=call.idempotent)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _send(self, call: Call[Any]) -> httpx.Response:
        request = call.build(self._client)
        try:
            return check(self._client.send(request))
        except httpx.TransportError as exc:
            raise transport_error(exc, request.url) from None

    def close(self) -> None:
        self._client.close()


class AsyncHttpClient:
    """The ``httpx.AsyncClient`` twin of :class:`HttpClient`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._client = httpx.AsyncClient(
            base_url=connection.base(),
            headers=connection.headers(),
            timeout=connection.timeout_s,
            verify=connection.ssl_context() or True,
        )

    async def call(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                return call.parse(await self._send(call))
            except ClientError as exc:
                delay = self.connection.retry_delay(exc, attempt, idempotent=call.idempotent)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _send(self, call: Call[Any]) -> httpx.Response:
        request = call.build(self._client)
        try:
            return check(await self._client.send(request))
        except httpx.TransportError as exc:
            raise transport_error(exc, request.url) from None

    async def aclose(self) -> None:
        await self._client.aclose()
