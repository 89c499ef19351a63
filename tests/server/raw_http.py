"""HTTP/1.1 spoken by hand over asyncio streams, so that a test decides every byte and when it
is sent (slow clients, kept-alive and pipelined requests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed


async def read_reply(reader: asyncio.StreamReader, timeout: float = 10) -> Reply:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await asyncio.wait_for(reader.read(), timeout)  # to the close
    return Reply(int(status_line.split()[1]), headers, body)


async def closed(reader: asyncio.StreamReader, timeout: float = 10) -> bool:
    """True once the server has closed the connection without sending anything more."""
    with contextlib.suppress(ConnectionResetError):
        return await asyncio.wait_for(reader.read(), timeout) == b""
    return True


async def dribble(
    writer: asyncio.StreamWriter, data: bytes, pause: float, answer: asyncio.Future[object]
) -> bool:
    """Send ``data`` a byte at a time, as a slowloris client does, until ``answer`` (the
    read of the server's answer) is done; False if it came before everything was sent.
    Sending stops then, so that nothing resets the connection before the answer is read."""
    for byte in data:
        if answer.done():
            return False
        writer.write(bytes([byte]))
        await asyncio.wait([answer], timeout=pause)
    return answer.done() is False


def get(path: str = "/ping") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def post_head(path: str, length: int, content_type: str = "application/octet-stream") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
