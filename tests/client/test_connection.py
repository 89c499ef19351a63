"""The settings every client shares: URL checks, TLS, backoff, and what is tried again."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from framebroker.client.connection import Backoff, Connection, ssl_context
from framebroker.client.errors import (
    ConnectionFailed,
    ConnectionLost,
    InvalidRequest,
    InvalidURL,
    RateLimited,
    ServiceUnavailable,
    Timeout,
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h/", "expected a URL starting http:// or https://"),
        ("localhost:8000", "expected a URL starting"),
        ("http://h:port/", "the port is not a number"),
    ],
)
def test_a_url_is_checked_before_any_io(url: str, message: str) -> None:
    with pytest.raises(InvalidURL, match=message):
        Connection(url)


def test_bad_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Connection("http://h", timeout_s=0)
    with pytest.raises(ValueError, match="retries"):
        Connection("http://h", retries=-1)
    with pytest.raises(ValueError, match=r"Backoff\.factor"):
        Backoff(factor=-1)


def test_the_key_goes_as_a_bearer_header_and_schemes_swap() -> None:
    connection = Connection("https://h:8443/", api_key="k" * 20)
    assert connection.headers() == {"Authorization": "Bearer " + "k" * 20}
    assert connection.base() == "https://h:8443"
    assert connection.base("ws") == "wss://h:8443"
    assert Connection("http://h").headers() == {}


def test_backoff_grows_to_its_cap_and_obeys_retry_after() -> None:
    backoff = Backoff(initial_s=0.5, factor=2, max_s=3, jitter=0)
    assert [backoff.delay(n) for n in range(5)] == [0.5, 1, 2, 3, 3]
    assert backoff.delay(0, retry_after_s=7) == 7
    assert Backoff(max_retry_after_s=5).delay(0, retry_after_s=99) == 5
    assert backoff.delay(10**6) == 3  # no overflow for a client that retries for ever
    jittered = Backoff(initial_s=1, jitter=0.1)
    assert all(0.9 <= jittered.delay(0) <= 1.1 for _ in range(50))


def test_what_is_tried_again() -> None:
    connection = Connection("http://h", retries=2, backoff=Backoff(jitter=0))
    limited = RateLimited("slow down", status=429, retry_after_s=4)
    full = ServiceUnavailable("full", status=503)
    assert connection.retry_delay(limited, 0) == 4
    assert connection.retry_delay(full, 1) == 0.5
    assert connection.retry_delay(full, 2) is None  # out of retries
    assert connection.retry_delay(ConnectionFailed("refused"), 0) == 0.25
    # A frame may have reached the server: only requests that change nothing go again.
    assert connection.retry_delay(ConnectionLost("dropped"), 0) is None
    assert connection.retry_delay(ConnectionLost("dropped"), 0, idempotent=True) == 0.25
    assert connection.retry_delay(Timeout("slow"), 0, idempotent=True) == 0.25
    assert connection.retry_delay(InvalidRequest("bad", status=400), 0) is None


def test_tls_from_a_ca_file_or_not_at_all(tmp_path: Path) -> None:
    assert Connection("http://h").ssl_context() is None
    assert isinstance(Connection("https://h").ssl_context(), ssl.SSLContext)
    unchecked = ssl_context(False)
    assert unchecked.verify_mode == ssl.CERT_NONE
    assert not unchecked.check_hostname
    with pytest.raises(ConnectionFailed, match="cannot load the CA certificates"):
        ssl_context(tmp_path / "missing.pem")
