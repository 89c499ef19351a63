"""Request bodies handed to the application as received, without uvicorn's two copies.

uvicorn's httptools protocol appends every piece of a body to a ``bytearray`` and gives the
application ``bytes(that)``: each byte copied twice more after the parser's own copy. For a
A frame-server frame (6 MB, one POST per video frame) those copies and the page faults of fresh
multi-megabyte buffers were a tenth of the server's CPU per frame. :class:`BodyChunks` keeps
the pieces instead; when the application reads, one piece is handed over as is and several
are joined once. Reading pauses only once :data:`HIGH_WATER` bytes wait unread, not after
every 64 KB piece as in uvicorn, so a body streamed to a prompt reader is not paused and
resumed (two system calls) for every read.

The uvicorn names relied on here are listed in :data:`.uvicorn_hooks.HOOKS`.
"""

from __future__ import annotations

from typing import Self

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HIGH_WATER", "BodyChunks", "ChunkedBodyProtocol"]

HIGH_WATER = 1024 * 1024
"""Unread body bytes held per connection before reading from the client pauses."""


class BodyChunks:
    """The unread pieces of a body: ``+=`` appends, ``bytes()`` hands them over.

    Stands in for the ``bytearray`` uvicorn keeps in ``RequestResponseCycle.body``, which
    only ever appends to it, measures it and converts it with ``bytes()``.
    """

    __slots__ = ("_pieces", "_size")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._size = 0

    def __iadd__(self, piece: bytes) -> Self:
        self._pieces.append(piece)
        self._size += len(piece)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        pieces = self._pieces
        # bytes.join returns a lone bytes piece itself, uncopied.
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class ChunkedBodyProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, keeping request bodies as :class:`BodyChunks`."""

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        if not isinstance(cycle.body, BodyChunks):  # a fresh cycle, or just read by the app
            cycle.body = BodyChunks()  # type: ignore[assignment]
        cycle.body += body
        if len(cycle.body) > HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()
