"""A stand-in for a seed-003 plugin server: a threaded ``http.server`` on a free loopback port
that takes the multipart POSTs of ``extract-frames``, records every part, and answers with
the frame JSON (or whatever a test asks for)."""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

_NAME = re.compile(rb'name="([^"]*)"')


@dataclass
class Part:
    headers: dict[str, str]
    content: bytes


@dataclass
class Received:
    """One POST as the server saw it."""

    connection: int
    path: str
    headers: Message
    parts: dict[str, Part]
    raw_body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def frame(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.parts["frame"].content)
        return document

    def image(self) -> NDArray[np.uint8]:
        source = self.frame["source"]
        data = np.frombuffer(self.parts["image"].content, np.uint8)
        return data.reshape((source["height"], source["width"], 3))


Responder = Callable[[Received], tuple[int, bytes]]


def echo(received: Received) -> tuple[int, bytes]:
    """The seed's contract: 200 with every field of ``frame`` plus one object of our own."""
    reply = received.frame | {"seen": {"image_bytes": len(received.parts["image"].content)}}
    return 200, json.dumps(reply).encode()


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """Split a multipart/form-data body by hand, checking its framing strictly."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert content_type.startswith("multipart/form-data"), content_type
    assert match, content_type
    dash = b"--" + match.group(1).encode()
    chunks = body.split(dash)
    assert chunks[0] == b"", "no preamble expected"
    assert chunks[-1] == b"--\r\n", f"bad closing delimiter {chunks[-1][:20]!r}"
    parts: dict[str, Part] = {}
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n")
        assert chunk.endswith(b"\r\n")
        head, sep, content = chunk[2:-2].partition(b"\r\n\r\n")
        assert sep, "part without a blank line after its headers"
        headers = {}
        for line in head.split(b"\r\n"):
            key, _, value = line.partition(b":")
            headers[key.decode().lower()] = value.decode().strip()
        name = _NAME.search(headers["content-disposition"].encode())
        assert name
        parts[name.group(1).decode()] = Part(headers, content)
    return parts


class FrameServer:
    """Records every request in :attr:`received`; counts TCP connections accepted.

    ``respond`` makes each reply (default :func:`echo`); ``tls`` serves HTTPS; without
    ``keep_alive`` every reply closes its connection (HTTP/1.0); a connection idle for
    ``idle_timeout`` seconds is closed.
    """

    def __init__(
        self,
        respond: Responder = echo,
        *,
        tls: ssl.SSLContext | None = None,
        keep_alive: bool = True,
        idle_timeout: float = 5.0,
    ) -> None:
        self.respond = respond
        self.received: list[Received] = []
        self.connections = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            timeout = idle_timeout  # an idle kept-alive connection is closed, its thread ends

            def setup(self) -> None:
                super().setup()
                with outer._lock:
                    outer.connections += 1
                    self.number = outer.connections

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                parts = parse_multipart(self.headers["Content-Type"], body)
                received = Received(self.number, self.path, self.headers, parts, body)
                with outer._lock:
                    outer.received.append(received)
                status, reply = outer.respond(received)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False  # server_close() joins the handler threads
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FrameServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [r.frame for r in self.received]
