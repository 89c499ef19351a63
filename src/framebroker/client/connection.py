"""How a client reaches the server: its URL, API key, TLS, timeout and retries.

Every client takes the same keywords and keeps them in one :class:`Connection`; this module
does no I/O. The retry rule (:meth:`Connection.retry_delay`) is the same for every API:

- a refusal the server made before doing anything (429 ``RateLimited``, 503
  ``ServiceUnavailable``) and a connection that could not be made are tried again, after
  the server's ``Retry-After`` when it gave one, else after the :class:`Backoff` delay;
- a connection lost, or a reply that did not come in time, is tried again only for a
  request that changes nothing on the server (``idempotent``): a frame may have been
  tracked before the connection dropped, and sending it twice would advance its tracks twice;
- every other error is raised at once.
"""

from __future__ import annotations

import math
import os
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import (
    ClientError,
    ConnectionFailed,
    ConnectionLost,
    InvalidURL,
    RateLimited,
    ServiceUnavailable,
    Timeout,
)

__all__ = ["Backoff", "Connection", "Verify"]

Verify = bool | str | os.PathLike[str] | ssl.SSLContext
"""How to check the server's TLS certificate: ``True`` the system's trust store, a path
the PEM file of a custom CA (a private CA, or a self-signed server certificate), an
``ssl.SSLContext`` as given, ``False`` not at all."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between tries: ``initial_s``, then ``factor`` times the previous delay, at most
    ``max_s``, each moved by up to ``jitter`` of itself at random (so clients refused
    together do not come back together). A server's ``Retry-After`` replaces the delay,
    capped at ``max_retry_after_s``. Raises ``ValueError`` for a negative or non-finite value.
    """

    initial_s: float = 0.25
    factor: float = 2.0
    max_s: float = 10.0
    jitter: float = 0.1
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("initial_s", "factor", "max_s", "jitter", "max_retry_after_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Backoff.{name} must be a number >= 0, got {value!r}")
        if self.jitter > 1:
            raise ValueError(f"Backoff.jitter must be at most 1, got {self.jitter!r}")

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before try ``attempt + 2`` (``attempt`` 0 follows the first)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        base = min(self.initial_s * self.factor ** min(attempt, 64), self.max_s)
        return max(0.0, base * (1 + self.jitter * (2 * random.random() - 1)))


@dataclass(frozen=True, slots=True)
class Connection:
    """What every client is built from; see the module. ``url`` is the server's base URL
    (``http://127.0.0.1:8000``; ``ws://`` and ``https://`` forms are taken where the API
    speaks them). ``timeout_s`` bounds connecting and each wait for an answer; ``retries``
    is how many times a refused or failed request is tried again (0: never).

    Raises :class:`~framebroker.client.errors.InvalidURL` for a URL of another scheme or
    without a host, ``ValueError`` for a bad timeout or retry count.
    """

    url: str
    api_key: str | None = None
    timeout_s: float = 10.0
    retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    verify: Verify = True
    schemes: tuple[str, ...] = ("http", "https")

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme.lower() not in self.schemes or not parts.netloc:
            wanted = " or ".join(f"{s}://" for s in self.schemes)
            raise InvalidURL(f"expected a URL starting {wanted}, got {self.url!r}", field="url")
        try:
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            raise InvalidURL(f"{self.url!r}: the port is not a number", field="url") from None
        if not parts.hostname:
            raise InvalidURL(f"{self.url!r}: no host", field="url")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout_s}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self.retries!r}")
        if self.api_key is not None and (not self.api_key or "\n" in self.api_key):
            raise ValueError("api_key must be a non-empty single-line string")

    @property
    def secure(self) -> bool:
        return urlsplit(self.url).scheme.lower() in ("https", "wss")

    def base(self, scheme: str | None = None) -> str:
        """The URL without a trailing slash, its scheme swapped for ``scheme``'s family
        (``ws``/``wss`` for ``http``/``https`` and back) when given."""
        parts = urlsplit(self.url)
        url = self.url.rstrip("/")
        if scheme is None:
            return url
        secure = parts.scheme.lower() in ("https", "wss")
        wanted = {"http": "https", "ws": "wss"}[scheme] if secure else scheme
        return wanted + url[len(parts.scheme) :]

    def headers(self) -> dict[str, str]:
        """The API key as the server reads it on every HTTP request and handshake."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context that checks the server as ``verify`` says; ``None`` for plain URLs.
        Raises :class:`~framebroker.client.errors.ConnectionFailed` for a CA file that cannot
        be read."""
        if not self.secure:
            return None
        return ssl_context(self.verify)

    def retry_delay(
        self, error: ClientError, attempt: int, *, idempotent: bool = False
    ) -> float | None:
        """Seconds to wait before trying again after ``error`` on try ``attempt + 1``, or
        ``None`` when it must be raised (see the module)."""
        if attempt >= self.retries:
            return None
        if isinstance(error, RateLimited | ServiceUnavailable):
            return self.backoff.delay(attempt, error.retry_after_s)
        if isinstance(error, ConnectionFailed) or (
            idempotent and isinstance(error, ConnectionLost | Timeout)
        ):
            return self.backoff.delay(attempt)
        return None


def ssl_context(verify: Verify) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for ``verify`` (see :data:`Verify`)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=os.fspath(verify))
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionFailed(
            f"cannot load the CA certificates in {os.fspath(verify)!r}: {exc}", field="verify"
        ) from None


def merged_headers(*parts: Mapping[str, str] | None) -> dict[str, str]:
    """Headers from ``parts``, later ones winning, names compared without case."""
    out: dict[str, str] = {}
    for part in parts:
        for name, value in (part or {}).items():
            for existing in [k for k in out if k.lower() == name.lower()]:
                del out[existing]
            out[name] = value
    return out
