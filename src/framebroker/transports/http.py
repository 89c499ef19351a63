"""What every HTTP transport shares: bounded body reading, JSON replies, the error mapping.

This is the one place where :class:`~framebroker.errors.FramebrokerError` becomes an HTTP
response; handlers just raise. The OpenAPI document shows those answers as they are (a
failed validation is a 400 with :class:`ErrorOut`, not FastAPI's 422).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..errors import (
    FramebrokerError,
    InvalidJSON,
    PayloadTooLarge,
    TooManyRequests,
    UnsupportedMediaType,
)

__all__ = [
    "ErrorOut",
    "client_of",
    "install_error_handlers",
    "json_response",
    "parse_json",
    "read_body",
    "require_json",
]

log = logging.getLogger(__name__)

CLIENT_DISCONNECTED = "client_disconnected"
"""The error code counted for a request whose client left before its body was read."""


class ErrorOut(BaseModel):
    """The body of every error answer, as the OpenAPI document shows it (some errors add
    keys of their own, such as ``limit`` and ``retry_after_s``)."""

    error: str = Field(description="what was wrong, naming the field")
    code: str = Field(description="stable machine-readable error name")
    field: str | None = None


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


def require_json(request: Request) -> None:
    """Refuse a body sent as anything but JSON (``application/json`` or ``*/*+json``; no
    Content-Type at all is read as JSON). A form or ``text/plain`` body is what a page on
    another site can make a browser send without asking, so it is never read as JSON."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {content_type!r}", field="Content-Type"
        )


def client_of(request: Request) -> str | None:
    """The client's address: what its per-client limits are counted by (behind a proxy
    that uvicorn trusts, the address the proxy forwarded)."""
    return request.client.host if request.client is not None else None


def error_response(exc: FramebrokerError) -> Response:
    headers = None
    if isinstance(exc, TooManyRequests) and exc.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return json_response(exc.to_dict(), exc.http_status, headers)


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
        if first.get("type") == "json_invalid":  # FastAPI parsed the body itself
            ctx = first.get("ctx")
            reason = ctx.get("error") if isinstance(ctx, dict) else first.get("msg")
            invalid = InvalidJSON(f"body is not valid JSON: {reason}", field="body")
            seen(invalid.code)
            return error_response(invalid)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        seen("invalid_input")
        return json_response(
            {"error": f"{where}: {first.get('msg')}", "code": "invalid_input", "field": where},
            400,
        )

    async def on_disconnect(_: Request, exc: Exception) -> Response:
        # The client hung up mid-body, or a body deadline cut it off (already counted as
        # such): nobody will read this answer, and it is no server error.
        assert isinstance(exc, ClientDisconnect)
        log.debug("client disconnected before its request body arrived")
        seen(CLIENT_DISCONNECTED)
        error = "the client disconnected before the whole body arrived"
        return json_response({"error": error, "code": CLIENT_DISCONNECTED}, 400)

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        seen("internal")
        return json_response({"error": "internal server error", "code": "internal"}, 500)

    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(FramebrokerError, on_framebroker)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)
    _document_validation_errors(app)


def _document_validation_errors(app: FastAPI) -> None:
    """FastAPI documents a request that fails validation as a 422 with its own body; this
    app answers 400 with :class:`ErrorOut` (``on_validation``), so the document says that."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _validation_errors_as_400(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _validation_errors_as_400(doc: dict[str, Any]) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ErrorOut.__name__, ErrorOut.model_json_schema())
    content = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorOut.__name__}"}}
    }
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses") if isinstance(operation, dict) else None
            if responses is not None and responses.pop("422", None) is not None:
                responses.setdefault("400", {"description": "invalid input", "content": content})
    if b"#/components/schemas/HTTPValidationError" not in orjson.dumps(doc):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return doc
