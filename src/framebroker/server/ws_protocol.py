"""uvicorn's WebSocket protocol with the ``websocket.preframed`` ASGI extension (see
:mod:`framebroker.transports.preframed`): the live push frames a message once for all of
its listeners and each socket writes those bytes as they are.

The uvicorn names relied on here are listed in :data:`.uvicorn_hooks.HOOKS`."""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from ..transports.preframed import PREFRAMED, PREFRAMED_SEND

__all__ = ["PreframedWebSocketProtocol"]


class _InfoAsDebug(logging.LoggerAdapter[logging.Logger]):
    """A logger whose INFO lines go out at DEBUG: uvicorn and websockets log every socket
    accepted, opened and closed at INFO, a line per listener and per reconnect."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG if level == logging.INFO else level, msg, *args, **kwargs)

    @property
    def level(self) -> int:  # uvicorn reads it to decide on its trace lines
        return self.logger.level


class PreframedWebSocketProtocol(WebSocketsSansIOProtocol):
    """Offers the extension in every socket's scope and writes ready frames.

    A ready frame goes out like any other (after the handshake, before the close, held back
    while the transport's buffer is full) but without passing through the WebSocket layer,
    which keeps no state about whole unfragmented data frames it did not send.

    Its per-connection INFO lines are logged at DEBUG (``--log-level debug`` shows them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet = _InfoAsDebug(logging.getLogger("uvicorn.error"))
        self.logger = quiet  # type: ignore[assignment]
        self.conn.logger = quiet

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The application task is created but has not run yet: it sees the extension.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][PREFRAMED] = {}

    async def send(self, message: Any) -> None:
        if message["type"] != PREFRAMED_SEND:
            await super().send(message)
            return
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if not self.handshake_complete or self.close_sent:
            raise RuntimeError(f"{PREFRAMED_SEND} before the accept or after the close")
        self.transport.write(message["frame"])
