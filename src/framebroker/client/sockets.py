"""The sockets a client opened, so that closing it can wait until each one really is closed.

Closing a TLS connection is a round trip: asyncio sends the TLS ``close_notify`` and closes
the socket only when the server's answer comes. aiohttp closes a WebSocket's connection that
way and returns at once, so a Socket.IO handshake the server refused (a wrong key, a full
server) used to raise while its socket was still open; an event loop that ended meanwhile
(``asyncio.run``, a test's loop) left it open for good ("unclosed transport"). A
:class:`SocketLedger` hands aiohttp its sockets (``TCPConnector(socket_factory=...)``) and
keeps them, and :meth:`SocketLedger.closed` waits, bounded, until every one is closed.
"""

from __future__ import annotations

import asyncio
import socket

__all__ = ["SocketLedger"]

_POLL_S = 0.01


class SocketLedger:
    """Makes the sockets of one client's connections (see the module) and keeps those still
    open: closed ones are dropped whenever another is made, so the ledger stays as small as
    the client's open connections."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []

    def open(self, addr_info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
        """A new socket for ``addr_info`` (``getaddrinfo``'s family, type, proto, name and
        address); the signature of aiohttp's ``socket_factory``."""
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        self._sockets = [s for s in self._sockets if s.fileno() != -1]
        sock = socket.socket(family, kind, proto)
        self._sockets.append(sock)
        return sock

    @property
    def open_sockets(self) -> int:
        """How many of the sockets made are not closed yet."""
        return sum(1 for s in self._sockets if s.fileno() != -1)

    async def closed(self, timeout: float) -> bool:
        """Wait until every socket made is closed, at most ``timeout`` seconds; whether they
        all are. Call it after closing their connections: it closes nothing itself."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.open_sockets:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(_POLL_S)
        self._sockets.clear()
        return True
