"""What every HTTP transport shares: bounded body reading, JSON replies, the error mapping.

This is the one place where :class:`~framebroker.errors.FramebrokerError` becomes an HTTP
response; handlers just raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..errors import FramebrokerError, InvalidJSON, PayloadTooLarge

__all__ = ["install_error_handlers", "json_response", "parse_json", "read_body"]

log = logging.getLogger(__name__)


def json_response(
    payload: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON reply serialised with orjson (numpy scalars and arrays included)."""
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing anything over ``limit`` bytes as soon as that is known.

    A declared ``Content-Length`` over the limit is refused before reading; a body without
    one (chunked) is counted as it arrives and refused the moment it passes the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise PayloadTooLarge(
                f"Content-Length is not a number: {declared!r}", field="Content-Length"
            ) from None
        if size > limit:
            raise PayloadTooLarge(
                f"body of {size} bytes is over the limit of {limit} bytes", field="body"
            )
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(
                f"body is over the limit of {limit} bytes (read {received} so far)", field="body"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """Decode JSON; raises :class:`InvalidJSON` saying where it broke."""
    if not body:
        raise InvalidJSON("body is empty; expected a JSON object", field="body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}", field="body") from None


def error_response(exc: FramebrokerError) -> Response:
    return json_response(exc.to_dict(), exc.http_status)


def install_error_handlers(app: FastAPI, on_error: Callable[[str], None] | None = None) -> None:
    """Map every error an HTTP handler can raise to one JSON shape; ``on_error`` is told
    each answer's error code (for metrics)."""

    def seen(code: str) -> None:
        if on_error is not None:
            on_error(code)

    async def on_framebroker(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, FramebrokerError)
        seen(exc.code)
        return error_response(exc)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        seen(code)
        return json_response(
            {"error": str(exc.detail), "code": code}, exc.status_code, dict(exc.headers or {})
        )

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        seen("invalid_input")
        return json_response(
            {"error": f"{where}: {first.get('msg')}", "code": "invalid_input", "field": where},
            400,
        )

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        seen("internal")
        return json_response({"error": "internal server error", "code": "internal"}, 500)

    app.add_exception_handler(FramebrokerError, on_framebroker)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)
