"""One size limit for every WebSocket message the server receives (``limits.max_ws_message_bytes``).

Two layers enforce it:

- each WebSocket endpoint is wrapped in :class:`MessageLimit`, which checks every message
  before the endpoint sees it. Over the limit, the client is told why in its transport's own
  error shape (an ``error`` JSON message, a Socket.IO ``error`` event), then the socket is
  closed with 1009 (message too big); the endpoint sees a disconnect, cleans up as for any
  client that leaves, and no other socket is affected;
- the ASGI server itself (uvicorn's ``ws_max_size``, :func:`hard_cap`) buffers no message
  larger than the limit plus :data:`HEADROOM`: such a message is cut off with a bare 1009
  before the application sees it, so a flood costs at most that much memory per socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge

__all__ = [
    "HEADROOM",
    "TOO_BIG",
    "MessageLimit",
    "Refusal",
    "hard_cap",
    "message_bytes",
    "too_big",
]

HEADROOM = 1024 * 1024
"""How far over the limit a message may be and still be read (and answered with the reason)."""

TOO_BIG = PayloadTooLarge.ws_close_code  # 1009, RFC 6455's "message too big"
_REASON = "message too big"

Refusal = Callable[[PayloadTooLarge], str | None]
"""The text telling a client its message was too big, in its transport's shape; ``None``
when the transport has no way to say it."""


def hard_cap(limit: int) -> int:
    """The ASGI server's own cap on one message (uvicorn's ``ws_max_size``) for ``limit``."""
    return limit + HEADROOM


def message_bytes(message: Message) -> int:
    """Size of a ``websocket.receive`` message: its bytes, or its text encoded as UTF-8."""
    data = message.get("bytes")
    if data is not None:
        return len(data)
    text = message.get("text")
    if text is None:
        return 0
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def too_big(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"WebSocket message of {size} bytes is over the limit of {limit} bytes "
        "(limits.max_ws_message_bytes); the socket is closed",
        field="message",
    )


class MessageLimit:
    """Wraps the ASGI app of a WebSocket endpoint so no message over ``limit`` bytes
    reaches it; see the module docstring. ``on_refused`` is called once per refusal (for
    metrics). HTTP requests pass through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        refusal: Refusal,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.app = app
        self.limit = limit
        self.refusal = refusal
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        closed = False

        async def limited_send(message: Message) -> None:
            if not closed:  # after a refusal the client is gone; the endpoint's last words too
                await send(message)

        async def limited_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] != "websocket.receive" or closed:
                return message
            size = message_bytes(message)
            if size <= self.limit:
                return message
            closed = True
            error = too_big(size, self.limit)
            text = self.refusal(error)
            with contextlib.suppress(Exception):  # the client may be gone already
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                await send({"type": "websocket.close", "code": TOO_BIG, "reason": _REASON})
            if self.on_refused is not None:
                self.on_refused()
            return {"type": "websocket.disconnect", "code": TOO_BIG, "reason": _REASON}

        await self.app(scope, limited_receive, limited_send)
