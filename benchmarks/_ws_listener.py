"""A WebSocket listener that costs next to nothing: the load generator of the push benchmarks.

The server and its listeners share the same two cores, so what a listener spends on each
message is taken from the server it measures. This one reads the socket into one buffer it
owns and steps over each message, keeping only the first bytes of a text message to tell a
``frame`` push from the rest; nothing is assembled or decoded. It answers pings, so the
server keeps it, and sends close when asked to stop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from urllib.parse import urlsplit

__all__ = ["Listener", "connect"]

_BUFFER = 1 << 18
_OP_TEXT, _OP_CLOSE, _OP_PING = 0x1, 0x8, 0x9


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked frame, as RFC 6455 requires of a client; only for short control frames."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class Listener(asyncio.BufferedProtocol):
    """Counts the text messages that start with ``prefix`` while ``counting`` is true."""

    def __init__(self, request: bytes, prefix: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.prefix = prefix
        self.counting = False
        self.count = 0
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._buffer = memoryview(bytearray(_BUFFER))
        self._transport: asyncio.Transport | None = None
        self._handshake = bytearray()
        self._header = bytearray()  # a frame header split across reads
        self._skip = 0  # payload bytes of the current frame still to step over
        self._head = bytearray()  # first bytes of the current text message, up to the prefix
        self._control: bytearray | None = None  # payload of a ping or close being read
        self._opcode = 0

    # -- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = self._buffer[:nbytes]
        if not self.opened.done():
            data = self._read_handshake(data)
        self._read_frames(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_client_frame(_OP_CLOSE, struct.pack("!H", 1000)))
            self._transport.close()

    # -- parsing ------------------------------------------------------------------------------

    def _read_handshake(self, data: memoryview) -> memoryview:
        self._handshake += data
        end = self._handshake.find(b"\r\n\r\n")
        if end < 0:
            return data[len(data) :]
        status = bytes(self._handshake[: self._handshake.find(b"\r\n")])
        if not status.startswith(b"HTTP/1.1 101"):
            self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
            if self._transport is not None:
                self._transport.close()
            return data[len(data) :]
        self.opened.set_result(None)
        rest = bytes(self._handshake[end + 4 :])
        return memoryview(rest)

    def _read_frames(self, data: memoryview) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                if self._control is not None:
                    self._control += data[i : i + take]
                elif len(self._head) < len(self.prefix):
                    self._head += data[i : i + min(take, len(self.prefix) - len(self._head))]
                i += take
                self._skip -= take
                if not self._skip:
                    self._frame_done()
                continue
            # A header: 2 bytes, then 2 or 8 more for longer payloads (servers do not mask).
            need = 2
            if len(self._header) >= 2:
                code = self._header[1] & 0x7F
                need = 2 + (2 if code == 126 else 8 if code == 127 else 0)
            take = min(need - len(self._header), n - i)
            self._header += data[i : i + take]
            i += take
            if len(self._header) < need:
                continue
            code = self._header[1] & 0x7F
            if need == 2 and code >= 126:
                continue  # the extended length is still to come
            length = (
                code
                if code < 126
                else struct.unpack("!H", self._header[2:4])[0]
                if code == 126
                else struct.unpack("!Q", self._header[2:10])[0]
            )
            self._opcode = self._header[0] & 0x0F
            self._header.clear()
            self._head.clear()
            self._control = bytearray() if self._opcode >= _OP_CLOSE else None
            self._skip = length
            if not length:
                self._frame_done()

    def _frame_done(self) -> None:
        opcode, control = self._opcode, self._control
        self._control = None
        if opcode == _OP_TEXT:
            if self.counting and self._head == self.prefix:
                self.count += 1
        elif opcode == _OP_PING and self._transport is not None:
            self._transport.write(_client_frame(0xA, bytes(control or b"")))
        elif opcode == _OP_CLOSE and self._transport is not None:
            self._transport.close()


async def connect(url: str, prefix: bytes) -> Listener:
    """Open a listener on ``ws://host:port/path``; returns once the handshake is done."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, listener = await loop.create_connection(lambda: Listener(request, prefix), host, port)
    await listener.opened
    return listener
