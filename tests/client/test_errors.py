"""How a refusal becomes a typed error carrying the server's code and field."""

from __future__ import annotations

import pytest

from framebroker.client.errors import (
    ApiError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    api_error,
)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequest),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, NotFound),
        (413, PayloadTooLarge),
        (415, InvalidRequest),
        (429, RateLimited),
        (431, PayloadTooLarge),
        (500, ServerError),
        (503, ServiceUnavailable),
        (504, ServerError),
        (418, InvalidRequest),
    ],
)
def test_each_status_has_its_class(status: int, cls: type[ApiError]) -> None:
    error = api_error(status, {"error": "why", "code": "the_code", "field": "boxes[1]"})
    assert type(error) is cls
    assert (error.status, error.code, error.field) == (status, "the_code", "boxes[1]")
    assert error.message.endswith(": why")


def test_retry_after_comes_from_the_header_else_the_body() -> None:
    assert api_error(429, {}, retry_after="3").retry_after_s == 3
    assert api_error(429, {"retry_after_s": 0.25}).retry_after_s == 0.25
    assert api_error(429, {}, retry_after="Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s is None


def test_a_body_that_is_not_json_is_kept_as_text() -> None:
    error = api_error(502, None, reason="Bad Gateway", text="<html>upstream\n down</html>")
    assert isinstance(error, ServerError)
    assert error.code == "internal"
    assert error.message == "HTTP 502 Bad Gateway: <html>upstream down</html>"
    assert error.text.startswith("<html>")
