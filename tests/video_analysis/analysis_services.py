"""Real analysis services for seed-002 tests: a threaded HTTP server on a free loopback port.

Paths:

- ``/decode``: decodes the posted MP4 (multipart field ``file``) with PyAV and answers
  ``{"frames", "width", "height", "bytes", "filename"}``; 400 if it is not a video.
- ``/slow?seconds=S``: waits S seconds (default 30, cut short when the server stops), then
  answers ``{"slow": true}``.
- ``/fail``: 500 every time. ``/flaky?fails=N``: 503 for the first N requests, then like
  ``/decode``. ``/garbage``: 200 with an HTML page.

``refused_url()`` is a URL nobody listens on. Every request is recorded (path, time).
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av

from ..in_process import free_port


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/analyse"


def file_part(content_type: str, body: bytes, name: str = "file") -> tuple[bytes, str] | None:
    """The content and file name of multipart part ``name``."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload, str(part.get_filename() or "")
    return None


def describe_video(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {"frames": frames, "width": stream.width, "height": stream.height}


@dataclass
class Hit:
    path: str
    at: float = field(default_factory=time.monotonic)


class AnalysisServices:
    """Start with ``with AnalysisServices() as services:``; ``url(path)`` names a path."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.stopping = threading.Event()
        self._flaky: dict[str, int] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with owner._lock:
                    owner.hits.append(Hit(parts.path))
                status, answer, kind = owner.answer(
                    parts.path, query, self.headers.get("Content-Type", ""), body
                )
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (a timeout under test) is not an error here

        self._server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.path == path)

    def answer(
        self, path: str, query: dict[str, str], content_type: str, body: bytes
    ) -> tuple[int, bytes, str]:
        if path == "/slow":
            self.stopping.wait(float(query.get("seconds", "30")))
            return 200, b'{"slow": true}', "application/json"
        if path == "/fail":
            return 500, b"internal failure", "text/plain"
        if path == "/garbage":
            return 200, b"<html>not json</html>", "text/html"
        if path == "/flaky":
            with self._lock:
                left = self._flaky.setdefault(query.get("key", ""), int(query.get("fails", "1")))
                self._flaky[query.get("key", "")] = left - 1
            if left > 0:
                return 503, b"try later", "text/plain"
        if path in ("/decode", "/flaky"):
            part = file_part(content_type, body)
            if part is None:
                return 400, b'{"error": "no file part"}', "application/json"
            data, filename = part
            try:
                info = describe_video(data)
            except (av.FFmpegError, IndexError) as exc:
                return 400, json.dumps({"error": str(exc)}).encode(), "application/json"
            info.update(bytes=len(data), filename=filename)
            return 200, json.dumps(info).encode(), "application/json"
        return 404, b"no such path", "text/plain"

    def __enter__(self) -> AnalysisServices:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
