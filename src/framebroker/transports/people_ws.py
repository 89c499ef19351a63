"""The live people counter: the people counter's WebSocket API, message for message.

Pushed: ``frame`` (annotated JPEG, base64), ``stats`` (about twice a second), ``event``
(started/ended). Answered: ``get_face`` and ``get_all_faces``. Bad requests get the original API's
``{"error": ...}`` texts and the connection stays open; ``?source=NAME`` naming no source gets
``{"error": "Unknown source ...; known sources: ..."}`` and a close (1008); a message over
``limits.max_ws_message_bytes`` gets ``{"error", "code": "payload_too_large", "field"}`` and
the socket is closed with 1009 (see :mod:`.ws_limits`).

Fan-out: one :class:`LiveHub` per server reads the bus, serialises each message once, and
hands the same text to every interested client. Each client has a small bounded queue: a
client that reads slowly loses the oldest frames (counted), never slows the pipeline or the
other clients, and one that stops reading altogether is dropped after ``send_timeout_s``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..core.mailbox import Mailbox
from ..errors import PayloadTooLarge
from ..people.live import live_timestamp
from ..people.records import FaceCrops, PeopleRecords, face_filename
from ..sessions import Feed, Sessions
from .preframed import PREFRAMED_SEND, offers_preframed, text_frame
from .ws_limits import MessageLimit

__all__ = ["LiveHub", "live_routes"]

log = logging.getLogger(__name__)

ERR_JSON = "Invalid JSON message"
ERR_FORMAT = "Invalid face_id or limit format"
ERR_INTERNAL = "Internal server error processing request"
ERR_TYPE = "Unknown message type"
ERR_FACE_ID = "Face ID not found"
ERR_FACE_FILE = "Face image file not found"
ERR_NO_FACES = "Face data not available on server"
DEFAULT_FACE_LIMIT = 50
MAX_FACE_LIMIT = 500
MAX_REQUEST_BYTES = 4096
UNKNOWN_SOURCE_CLOSE_CODE = 1008
"""Close code after the error answering ``?source=`` with a name no source has."""


Outgoing = tuple[str, bytes | None]
"""A message as text, and as a ready frame when one was made (see :mod:`.preframed`)."""


CONTROL_QUEUE = 256
"""Stats, events and answers kept for one client (they are small, and sent first)."""


@dataclass(eq=False)
class LiveClient:
    """One connection's mailbox: frames may be dropped (``queue`` of them at most, the
    oldest going); everything else (stats, events, answers) is small, sent first and kept."""

    source: str | None  # None: every source
    queue: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    box: Mailbox[Outgoing] = field(init=False)
    sent: int = 0
    sending_since: float | None = None
    """Loop time the send in progress began; the hub's reaper drops a client stuck in one."""
    sender: asyncio.Task[None] | None = None
    preframed: bool = False
    """Whether its socket takes ready frames (the server offers the extension)."""

    def __post_init__(self) -> None:
        self.box = Mailbox(self.queue, kept_first=True, max_kept=CONTROL_QUEUE, wake=self.wake.set)

    @property
    def dropped(self) -> int:
        return self.box.dropped

    def offer(self, text: str, ready: bytes | None = None, *, frame: bool = False) -> None:
        """Queue ``text``; ``ready`` is the same message as a ready WebSocket frame."""
        self.box.put((text, ready), keep=not frame)

    def next(self) -> Outgoing | None:
        return self.box.take()


class LiveHub:
    """Formats bus messages once and distributes them to connected clients."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        timezone: str = "UTC",
        client_queue: int = 8,
        send_timeout_s: float = 10.0,
        records: PeopleRecords | None = None,
        crops: FaceCrops | None = None,
        run_blocking: Callable[..., Any] | None = None,
        known_sources: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.sessions = sessions
        self.known_sources = known_sources
        """The source names a client may follow (``?source=NAME``); ``None``: any name."""
        self.tz = ZoneInfo(timezone)
        self.client_queue = client_queue
        self.send_timeout_s = send_timeout_s
        self.records = records
        self.crops = crops
        self._run_blocking = run_blocking
        self.clients: set[LiveClient] = set()
        self.frames_formatted = 0
        self.clients_dropped = 0
        self._feed: Feed | None = None
        self._task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._stalled: set[LiveClient] = set()

    async def start(self) -> None:
        self._feed = self.sessions.subscribe("live/*", maxlen=256)
        self._task = asyncio.create_task(self._distribute(), name="live-hub")
        self._reaper = asyncio.create_task(self._reap(), name="live-hub-reaper")

    async def stop(self) -> None:
        for task in (self._task, self._reaper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._feed is not None:
            self._feed.close()

    async def flush(self, timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, until everything published so far but frames has gone
        out to every client: a stopping server calls it before it closes their sockets."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        idle = 0  # checks in a row that found nothing queued: the distributor has run between
        while idle < 2 and loop.time() < deadline:
            await asyncio.sleep(0.01)
            busy = any(len(c.box) or c.sending_since is not None for c in self.clients)
            idle = 0 if busy else idle + 1

    def format(self, topic: str, payload: dict[str, Any]) -> str | None:
        """The original API's JSON text for a bus message, or ``None`` for topics it does not
        know."""
        kind = topic.rsplit("/", 1)[-1]
        stamp = live_timestamp(float(payload["time"]), self.tz)
        if kind == "frame":
            self.frames_formatted += 1
            body: dict[str, Any] = {"type": "frame", "data": payload["jpeg_b64"]}
        elif kind in ("stats", "event"):
            body = {"type": kind, "data": payload["data"]}
        else:
            return None
        body["timestamp"] = stamp
        return orjson.dumps(body).decode()

    async def _distribute(self) -> None:
        feed = self._feed
        assert feed is not None
        while True:
            await feed.wait()
            for message in feed.drain():
                if not self.clients:
                    continue
                source = message.topic.split("/")[1]
                text = self.format(message.topic, message.payload)
                if text is None:
                    continue
                is_frame = message.topic.endswith("/frame")
                ready: bytes | None = None
                for client in self.clients:
                    if client.source is None or client.source == source:
                        if client.preframed and ready is None:
                            ready = text_frame(text.encode())  # once for every client
                        client.offer(text, ready, frame=is_frame)

    # -- one connection ----------------------------------------------------------------------

    async def serve(self, ws: WebSocket, send: Send | None = None) -> None:
        """Serve one socket; ``send`` is its raw ASGI send, given when its server takes ready
        frames (:func:`.preframed.offers_preframed`)."""
        await ws.accept()
        source = ws.query_params.get("source") or ws.query_params.get("session")
        if source is not None and self.known_sources is not None:
            known = sorted(self.known_sources())
            if source not in known:
                # Silence would look like a source with nothing to show.
                listed = ", ".join(known) or "none (the server runs no --source)"
                await ws.send_text(_error(f"Unknown source {source!r}; known sources: {listed}"))
                await ws.close(code=UNKNOWN_SOURCE_CLOSE_CODE, reason="unknown source")
                return
        client = LiveClient(source=source, queue=self.client_queue, preframed=send is not None)
        self.clients.add(client)
        sender = client.sender = asyncio.create_task(self._send_loop(ws, client, send))
        try:
            await self._receive_loop(ws, client)
        finally:
            self.clients.discard(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            if ws.client_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _send_loop(self, ws: WebSocket, client: LiveClient, send: Send | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                while (item := client.next()) is not None:
                    text, ready = item
                    # Timed by the reaper, not a timeout scope per message: with a hundred
                    # listeners, arming and cancelling a timer for every send cost a fifth of
                    # the push path's CPU.
                    client.sending_since = loop.time()
                    if ready is not None and send is not None:
                        await send({"type": PREFRAMED_SEND, "frame": ready})
                    else:
                        await ws.send_text(text)
                    client.sending_since = None
                    client.sent += 1
        except asyncio.CancelledError:
            if client not in self._stalled:
                raise
            # The reaper cancelled a send the client stopped reading: close; its receive side
            # ends when the close handshake does (or times out).
            self._stalled.discard(client)
            log.info("dropping a live client that stopped reading")
            with contextlib.suppress(Exception):
                await ws.close(code=1008, reason="client too slow")

    async def _reap(self) -> None:
        """Every so often, drop the clients whose send has been stuck past the timeout."""
        loop = asyncio.get_running_loop()
        period = min(1.0, self.send_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            deadline = loop.time() - self.send_timeout_s
            for client in list(self.clients):
                since = client.sending_since
                if since is not None and since < deadline and client.sender is not None:
                    self.clients.discard(client)
                    self.clients_dropped += 1
                    self._stalled.add(client)
                    client.sender.cancel()

    async def _receive_loop(self, ws: WebSocket, client: LiveClient) -> None:
        while True:
            try:
                raw = await ws.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            except KeyError:  # a binary message: not JSON text
                client.offer(_error(ERR_JSON))
                continue
            reply = await self.answer(raw)
            if reply is not None:
                client.offer(reply)

    async def answer(self, raw: str) -> str | None:
        """The reply to one client request (already serialised)."""
        if len(raw) > MAX_REQUEST_BYTES:
            return _error(ERR_JSON)
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(ERR_JSON)
        if not isinstance(request, dict):
            return _error(ERR_JSON)
        kind = request.get("type")
        try:
            if kind == "get_face":
                face_id = request.get("face_id")
                if type(face_id) is not int or face_id < 0:
                    return _error(ERR_FORMAT)
                return orjson.dumps(await self._face(face_id)).decode()
            if kind == "get_all_faces":
                limit = request.get("limit", DEFAULT_FACE_LIMIT)
                if type(limit) is not int or not 0 <= limit <= MAX_FACE_LIMIT:
                    return _error(ERR_FORMAT)
                return orjson.dumps(await self._all_faces(limit)).decode()
        except Exception:
            log.exception("live request failed")
            return _error(ERR_INTERNAL)
        return _error(ERR_TYPE)

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._run_blocking is None:
            return fn(*args)
        return await self._run_blocking(fn, *args)

    async def _face(self, face_id: int) -> dict[str, Any]:
        if self.records is None or self.crops is None:
            return {"type": "face_image", "face_id": face_id, "error": ERR_NO_FACES}
        record = await self._blocking(self.records.get_face, face_id)
        if record is None:
            return {"type": "face_image", "face_id": face_id, "error": ERR_FACE_ID}
        name = face_filename(face_id)
        data = _base64(await self._blocking(self.crops.read, name))
        if data is None:
            return {"type": "face_image", "face_id": face_id, "error": ERR_FACE_FILE}
        return {"type": "face_image", "face_id": face_id, "image_data": data, "filename": name}

    async def _all_faces(self, limit: int) -> dict[str, Any]:
        if self.records is None or self.crops is None:
            return {"type": "all_faces", "error": ERR_NO_FACES}
        crops = self.crops
        # A few spare records in case some crops are gone (being expired, say).
        records = await self._blocking(self.records.recent_faces, limit + 16)

        def load() -> list[dict[str, Any]]:
            faces: list[dict[str, Any]] = []
            for r in records:
                if len(faces) == limit:
                    break
                name = face_filename(int(r["face_id"]))
                data = _base64(crops.read(name))
                if data is not None:
                    faces.append({"face_id": r["face_id"], "filename": name, "image_data": data})
            return faces

        return {"type": "all_faces", "faces": await self._blocking(load)}


def _base64(jpeg: bytes | None) -> str | None:
    return None if jpeg is None else base64.b64encode(jpeg).decode("ascii")


def _error(text: str) -> str:
    return orjson.dumps({"error": text}).decode()


def _refusal(error: PayloadTooLarge) -> str:
    return orjson.dumps(error.to_dict()).decode()


def live_routes(
    hub: LiveHub,
    path: str,
    *,
    max_message_bytes: int | None = None,
    on_refused: Callable[[], None] | None = None,
) -> list[WebSocketRoute]:
    """The WebSocket route serving ``hub`` at ``path`` (``/ws/live``, or ``/`` on 8765);
    with ``max_message_bytes``, a bigger message closes the socket (``on_refused`` is told)."""

    app: ASGIApp = _LiveEndpoint(hub)
    if max_message_bytes is not None:
        app = MessageLimit(app, max_message_bytes, _refusal, on_refused)
    return [WebSocketRoute(path, app)]


class _LiveEndpoint:
    """The ASGI app of one live socket: a Starlette WebSocket for the protocol, plus the raw
    ``send`` for ready frames where the server takes them."""

    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await self.hub.serve(ws, send if offers_preframed(scope) else None)
