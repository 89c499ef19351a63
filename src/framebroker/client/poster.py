"""POST frames as ``multipart/form-data`` over one kept-alive HTTP/1.1 connection.

This is the wire end of :class:`~framebroker.client.FramesClient`, and so of
``framebroker extract-frames``: each frame is one request with two parts, ``frame`` (its
JSON) and ``image`` (raw BGR bytes, or any encoded image), the way the original plugin
servers read them (``request.files['image']``, ``request.files['frame']``).

The body is never assembled in memory: the request head, the ``frame`` part and the
``image`` part's header go out in one write, then the image straight from the array's own
memory, then the closing boundary. A 1920×1080 frame is 6 MB; joining it into a body would
copy it once more for every frame. ``frame`` comes first so that a server parsing the body
as it arrives knows the frame's metadata before the image bytes start.

:func:`multipart_envelope` is the framing alone (no I/O); :class:`FramePoster` the client.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import string
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from .errors import ConnectionFailed, ConnectionLost, InvalidURL, Timeout

__all__ = [
    "FramePoster",
    "Reply",
    "multipart_envelope",
    "new_boundary",
]

_HEADER_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
# Headers the poster writes itself; a user's would contradict the body it sends.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class Reply:
    """The server's answer to one frame."""

    status: int
    reason: str
    content_type: str
    body: bytes
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def new_boundary() -> bytes:
    """A multipart boundary that cannot occur in JSON text and is unlikely in an image."""
    return b"framebroker-" + os.urandom(16).hex().encode()


def multipart_envelope(
    boundary: bytes,
    frame_json: bytes,
    *,
    image_type: str = "application/octet-stream",
) -> tuple[bytes, bytes]:
    """``(prefix, trailer)`` of the body ``prefix + image + trailer`` (RFC 7578).

    ``prefix`` holds the ``frame`` part (``frame.json``, ``application/json``) and the
    ``image`` part's header (``image.raw``); ``trailer`` closes the image part and the body.
    Both parts carry a file name, so frameworks file them as uploads (Flask's
    ``request.files``). Raises ``ValueError`` for a boundary that RFC 2046 forbids or that
    occurs in ``frame_json``.
    """
    if not 1 <= len(boundary) <= 70 or not boundary.isascii() or b"\r" in boundary:
        raise ValueError(f"boundary must be 1 to 70 ASCII characters, got {boundary!r}")
    if boundary in frame_json:
        raise ValueError("the multipart boundary occurs in the frame JSON")
    dash = b"--" + boundary
    prefix = b"".join(
        (
            dash,
            b'\r\nContent-Disposition: form-data; name="frame"; filename="frame.json"\r\n',
            b"Content-Type: application/json\r\n\r\n",
            frame_json,
            b"\r\n",
            dash,
            b'\r\nContent-Disposition: form-data; name="image"; filename="image.raw"\r\n',
            b"Content-Type: " + image_type.encode("ascii") + b"\r\n\r\n",
        )
    )
    return prefix, b"\r\n" + dash + b"--\r\n"


def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not name or not set(name) <= _HEADER_NAME_CHARS:
            raise InvalidURL(f"header name must be an HTTP token, got {name!r}", field="headers")
        if name.lower() in _RESERVED_HEADERS:
            raise InvalidURL(f"header {name!r} is set by the frames client itself", field="headers")
        if any(c in value for c in "\r\n\0"):
            raise InvalidURL(
                f"header {name!r}: value must be one line, got {value!r}", field="headers"
            )
        checked[name] = value
    return checked


class FramePoster:
    """One HTTP/1.1 connection to ``url``, kept alive across :meth:`post` calls.

    ``url`` is ``http://`` or ``https://`` with an optional path (``/`` when absent) and
    query. ``headers`` are added to every request (``Host`` among them replaces the URL's).
    ``timeout`` bounds connecting and each wait for the server, in seconds. For ``https``,
    ``ssl_context`` verifies the server (the system's trust store when ``None``).

    The connection opens on :meth:`connect` or the first :meth:`post` and is opened again only
    when the server closes it (``Connection: close``, HTTP/1.0, or an idle keep-alive timeout);
    :attr:`connections` counts how often. Raises :class:`~.errors.InvalidURL` for a bad URL
    or header here; :meth:`connect` and :meth:`post` raise :class:`~.errors.ConnectionFailed`,
    :class:`~.errors.ConnectionLost` or :class:`~.errors.Timeout`.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.netloc:
            raise InvalidURL(f"expected an http:// or https:// URL, got {url!r}", field="url")
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            raise InvalidURL(f"{url!r}: the port is not a number", field="url") from None
        if not host:
            raise InvalidURL(f"{url!r}: no host", field="url")
        if parts.username is not None:
            raise InvalidURL(f"{url!r}: user names in the URL are not sent", field="url")
        if not (timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.url = url
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = _check_headers(headers or {})
        self._skip_host = any(name.lower() == "host" for name in self.headers)
        self.connections = 0
        self._boundary = new_boundary()
        self._content_type = "multipart/form-data; boundary=" + self._boundary.decode()
        self._conn: http.client.HTTPConnection
        if scheme == "https":
            context = ssl_context if ssl_context is not None else ssl.create_default_context()
            self._conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._conn.auto_open = 0  # reconnections are counted and decided here

    def __enter__(self) -> FramePoster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection now (a no-op when it is open), so a bad destination fails
        before any work is done. Raises :class:`~.errors.ConnectionFailed`.
        """
        if self._conn.sock is not None:
            return
        try:
            self._conn.connect()
        except ssl.SSLCertVerificationError as exc:
            self._conn.close()
            raise ConnectionFailed(
                f"cannot connect to {self.url}: the server's certificate is not trusted "
                f"({exc.verify_message})"
            ) from None
        except TimeoutError:
            self._conn.close()
            raise ConnectionFailed(
                f"cannot connect to {self.url}: no answer within {self._conn.timeout:g} s"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise ConnectionFailed(f"cannot connect to {self.url}: {_reason(exc)}") from None
        self.connections += 1

    def post(
        self,
        frame_json: bytes,
        image: NDArray[np.uint8] | bytes | bytearray | memoryview,
        *,
        image_type: str = "application/octet-stream",
    ) -> Reply:
        """POST one frame and wait for the reply, whatever its status.

        ``image`` is sent as it lies in memory (a C-contiguous array is not copied). A
        connection the server had closed while idle is opened again and the frame sent once
        more; any other failure raises :class:`~.errors.ConnectionLost` (or
        :class:`~.errors.Timeout` for a reply that did not come in time).
        """
        data = (
            np.ascontiguousarray(image).data if isinstance(image, np.ndarray) else memoryview(image)
        )
        if data.ndim != 1 or data.format != "B":
            data = data.cast("B")
        if not data.nbytes:
            raise ValueError("image must hold at least one byte, got none")
        prefix, trailer = multipart_envelope(self._boundary, frame_json, image_type=image_type)
        length = len(prefix) + data.nbytes + len(trailer)
        reused = self._conn.sock is not None
        try:
            return self._exchange(prefix, data, trailer, length)
        except (ConnectionError, http.client.RemoteDisconnected) as exc:
            self._conn.close()
            if not reused:
                raise ConnectionLost(
                    f"{self.url}: the connection was lost: {_reason(exc)}"
                ) from None
        # A kept-alive connection the server closed between two frames: once more, fresh.
        try:
            return self._exchange(prefix, data, trailer, length)
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise ConnectionLost(f"{self.url}: the connection was lost: {_reason(exc)}") from None

    def _exchange(self, prefix: bytes, data: memoryview, trailer: bytes, length: int) -> Reply:
        self.connect()
        conn = self._conn
        try:
            conn.putrequest("POST", self.path, skip_host=self._skip_host, skip_accept_encoding=True)
            conn.putheader("Content-Type", self._content_type)
            conn.putheader("Content-Length", str(length))
            for name, value in self.headers.items():
                conn.putheader(name, value)
            try:
                conn.endheaders(prefix)  # one write: head and the frame part together
                conn.send(data)
                conn.send(trailer)
            except (BrokenPipeError, ConnectionResetError):
                # The server may have answered early (say, 413) and closed its end: read it.
                pass
            response = conn.getresponse()
            body = response.read()
        except TimeoutError:
            conn.close()
            raise Timeout(f"{self.url}: no reply within {conn.timeout:g} s") from None
        except (ConnectionError, http.client.RemoteDisconnected):
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ConnectionLost(f"{self.url}: {_reason(exc)}") from None
        if response.will_close:
            conn.close()
        return Reply(
            response.status,
            response.reason,
            response.getheader("Content-Type", ""),
            body,
            response.getheader("Retry-After"),
        )

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._conn.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without replying"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
