"""One WebSocket message, framed once, sent to many sockets: an ASGI extension.

The live people counter's push sends the same 40 KB frame message to every listener.
Through plain ASGI each ``websocket.send`` is encoded, framed and copied again for every
socket: with a hundred listeners that was as much CPU as the system calls themselves. A
server that offers the ``websocket.preframed`` extension in a socket's scope (framebroker's
own, see :mod:`framebroker.server.ws_protocol`) accepts ``{"type": "websocket.send.preframed",
"frame": bytes}``, a complete server-to-client frame made by :func:`text_frame`, and writes it
as is. Under another ASGI server the extension is absent and the text is sent as usual.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

__all__ = ["PREFRAMED", "PREFRAMED_SEND", "offers_preframed", "text_frame"]

PREFRAMED = "websocket.preframed"
"""The scope extension's name."""
PREFRAMED_SEND = "websocket.send.preframed"
"""The ASGI message type carrying a ready frame."""


def offers_preframed(scope: Mapping[str, Any]) -> bool:
    """Whether the server of this WebSocket scope accepts ready frames."""
    extensions = scope.get("extensions") or {}
    return PREFRAMED in extensions


def text_frame(payload: bytes) -> bytes:
    """A whole, unfragmented, unmasked text frame (RFC 6455 §5.2: what a server sends)
    holding ``payload``, which must be UTF-8."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload
