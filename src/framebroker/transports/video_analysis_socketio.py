"""Video analysis over Socket.IO: a python-socketio ``AsyncServer`` mounted at ``/socket.io``.

Connect with the session id in the query parameter named by ``SESSION_ID_NAME``
(``?session_id=...``; ``auth={"session_id": ...}`` works too), and optionally
``processes=a,b`` to run only some of the names ``GET /options`` lists. Events:

==============  ==========================================  =================================
client emits    payload                                     server answers
==============  ==========================================  =================================
``test``        anything                                    ack and ``test`` event:
                                                            ``{"data": ..., "session_id"}``
``process``     JPEG/PNG bytes, base64 text (a data URL     ack: ``{"frame", "window",
                too), or ``{"image": <either>}``            "first_pixel": [r, g, b],
                                                            "size": [w, h]}``; each finished
                                                            window: ``result`` event
``end``         nothing                                     ack: ``{"session_id", "ended"}``;
                                                            the session ends now
==============  ==========================================  =================================

An observer connects with ``observe=1`` besides the id (``?session_id=...&observe=1``, or
``auth={"session_id": ..., "observe": true}``): it follows a stream another connection runs,
on this server or, in a cluster, on any node: it gets the stream's ``result`` events (and a
window's ``error``), then ``ended`` (``{"session_id", "reason"}``: ``ended``,
``disconnected`` or ``reconnect_timeout``) when the stream ends; it sends no frames (a
``process`` from it is an ``invalid_input`` error) and does not use the id up. Only a holder
of the id may observe: the id must be good (signed, not expired) and its stream running, else
``session_not_found``.

The events of a stream go to a Socket.IO room named by its session id, which its client and
its observers join. In a cluster the server's client manager is python-socketio's
``AsyncRedisManager`` on the cluster's Redis (channel ``fb:{<cluster name>}:socketio``), so an
emit to the room reaches a member connected to any node; the stream itself (its frames in
flight, its open window, the windows being analysed, results held for a dropped connection)
lives on the node its client is connected to.

A connection that goes away without ``end`` leaves its session waiting
``reconnect_grace_s`` for the same id to connect again (python-socketio's clients reconnect
by themselves), its open window and the answers of windows analysed meanwhile kept; then it
ends and its id is used up.

Server events: ``session`` (``{"session_id"}``, when the server made the id on connect),
``result`` (``{"session_id", "window", "frames", "first_frame", "size", "closed_by",
"video_bytes", "seconds", "result": {name: answer or {"error", "code", ...}}}``, when
``EMIT_RESULT``), ``error`` (the error body ``{"error", "code", "field"?}`` plus ``"event"``
or ``"window"``). A failed ``process`` gets its error once, the way the client asked: as the
ack when it asked for one (``call``, or ``emit`` with a callback), else as an ``error``
event.

A refused connection gets ``connect_error`` with ``{"message", "data": {"error", "code"}}``:
``session_not_found`` for an unknown, expired or used-up id, ``invalid_input`` for none,
``session_conflict`` for an id another connection holds, ``capacity_exceeded`` when the
server holds its limit of sessions, ``client_session_limit`` (with ``"limit":
"max_sessions_per_client"``) when the client's address holds its share of sessions (over
every transport). An id serves one connection: when it disconnects the id is used up, as in
the original API; in a cluster, on every node (an id whose session runs on another node is
``session_conflict``, one that ran anywhere ``session_not_found``).

Frames bigger than ``max_frame_bytes`` get a ``payload_too_large`` error; frames sent faster
than ``limits.max_fps_per_session`` a ``frame_rate_exceeded`` error (with
``retry_after_s``), and are dropped; the connection goes on. A single WebSocket message over
``limits.max_ws_message_bytes`` (Engine.IO's ``max_http_buffer_size`` too, which bounds a
long-polling POST) gets a ``payload_too_large`` ``error`` event and the socket is closed with
1009. So a frame is refused with the reason as long as its message (about 4/3 of it, in
base64) fits that limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import engineio
import socketio

from ..config import AuthSettings, Limits
from ..core.frame import ImageSource
from ..errors import (
    FramebrokerError,
    InvalidInput,
    PayloadTooLarge,
    SessionNotFound,
)
from ..media.image import decode_base64_image, open_image
from ..video_analysis.service import VideoAnalysis
from .auth import KEY_REFUSED, ApiKeys
from .context import ServerContext
from .ws_limits import MessageLimit

__all__ = ["SocketIOTransport", "frame_parser"]

log = logging.getLogger(__name__)

TRANSPORT = "socketio"
_PAYLOAD_KEYS = ("image", "frame", "data")
_ENVELOPE = 64 * 1024
ROOM_EMIT_TIMEOUT_S = 2.0


def frame_parser(data: Any, *, max_bytes: int, max_pixels: int) -> Callable[[], ImageSource]:
    """Check a ``process`` payload's type and size now; return the parsing to run later, in
    the worker pool (base64 decoding and header checks of a large image are not free).

    Raises :class:`InvalidInput` for a payload of the wrong shape and :class:`PayloadTooLarge`
    for one over ``max_bytes``; the returned function raises the image errors of
    :func:`~framebroker.media.image.open_image`.
    """
    if isinstance(data, dict):
        key = next((k for k in _PAYLOAD_KEYS if k in data), None)
        if key is None:
            raise InvalidInput(
                f'image: expected {{"image": <bytes or base64>}}, got keys {sorted(data)[:8]}',
                field="image",
            )
        data = data[key]
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise PayloadTooLarge(
                f"image: {len(raw)} bytes, the limit is {max_bytes} bytes", field="image"
            )
        return lambda: open_image(raw, max_pixels=max_pixels)
    if isinstance(data, str):
        if len(data) > 4 * (max_bytes // 3 + 1) + _ENVELOPE:
            raise PayloadTooLarge(
                f"image: {len(data)} characters of base64 hold more than the limit of "
                f"{max_bytes} bytes",
                field="image",
            )
        text = data
        return lambda: decode_base64_image(text, max_bytes=max_bytes, max_pixels=max_pixels)
    raise InvalidInput(
        f'image: expected JPEG or PNG bytes, base64 text or {{"image": ...}}, got '
        f"{type(data).__name__}",
        field="image",
    )


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


WANTS_ACK: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "framebroker_socketio_wants_ack", default=None
)
"""While a handler runs: whether the client's event asked for an acknowledgement (``None``:
not known, see :class:`AckAwareServer`)."""

_ACK_HOOK = "_handle_event_internal"
_ACK_HOOK_PARAMS = ("self", "server", "sid", "eio_sid", "data", "namespace", "id")


def ack_hook_fits() -> bool:
    """Whether python-socketio still runs handlers through the private method
    :class:`AckAwareServer` wraps, with the parameters it reads. When it does not (a release
    renamed it), errors go both ways, as an ack and as an event: one too many rather than
    none."""
    method = getattr(socketio.AsyncServer, _ACK_HOOK, None)
    if method is None:
        return False
    return tuple(inspect.signature(method).parameters) == _ACK_HOOK_PARAMS


class AckAwareServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, telling handlers whether the client wants an ack: it has no
    public way to, and an error must reach the client once, the way it asked."""

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any
    ) -> Any:
        token = WANTS_ACK.set(id is not None)
        try:
            return await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
        finally:
            WANTS_ACK.reset(token)


class SocketIOTransport:
    """The Socket.IO server of video analysis and its event handlers; :attr:`app` is its ASGI app
    (mount it at ``/socket.io``)."""

    def __init__(
        self,
        ctx: ServerContext,
        analysis: VideoAnalysis,
        limits: Limits,
        auth: AuthSettings,
        *,
        client_manager: Any = None,
    ) -> None:
        """``client_manager``: python-socketio's client manager (default: this process's own;
        a cluster passes an ``AsyncRedisManager``, so that emits to a room reach every
        node's members)."""
        self.ctx = ctx
        self.analysis = analysis
        self.limits = limits
        settings = analysis.settings
        origins = settings.cors_allowed_origins
        max_message = limits.max_ws_message_bytes
        server_class = AckAwareServer if ack_hook_fits() else socketio.AsyncServer
        if server_class is not AckAwareServer:
            log.warning(
                "python-socketio's %s is not as expected: errors go to clients both as an "
                "ack and as an error event",
                _ACK_HOOK,
            )
        self.sio: Any = server_class(
            async_mode="asgi",
            cors_allowed_origins="*" if "*" in origins else (origins or None),
            # Equal to the WebSocket limit, which MessageLimit enforces first (with a
            # reason); Engine.IO's own check then only bounds long-polling POSTs.
            max_http_buffer_size=max_message,
            logger=False,
            engineio_logger=False,
            client_manager=client_manager,
        )
        analysis.on_ended = self._ended
        self._observing: dict[str, str] = {}
        """Observer connections of this node: connection -> the session id they follow (one
        per connection, removed when it disconnects)."""
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on("test", self._test)
        self.sio.on("process", self._process)
        self.sio.on("end", self._end)
        telemetry = ctx.telemetry
        self.app: Any = MessageLimit(
            socketio.ASGIApp(self.sio, socketio_path=None),
            max_message,
            self._refusal,
            lambda: telemetry.error(TRANSPORT, "payload_too_large"),
        )
        self._tasks: set[asyncio.Task[None]] = set()
        api_keys = auth.api_keys
        self.keys = ApiKeys({name: key.get_secret_value() for name, key in api_keys.items()})

    def use_sids(self, make: Callable[[], str]) -> None:
        """Engine.IO session ids made by ``make`` rather than python-engineio's random ones (a
        cluster's name the node that made them; python-engineio's server makes every id by
        its ``generate_id``)."""
        self.sio.eio.generate_id = make

    def holds(self, sid: str) -> bool:
        """Whether the Engine.IO session ``sid`` lives in this process."""
        return sid in self.sio.eio.sockets

    @property
    def poll_timeout_s(self) -> float:
        """The longest a long-polling request waits for the server's answer (Engine.IO's
        ping interval and timeout), plus slack."""
        eio = self.sio.eio
        return float(eio.ping_interval + eio.ping_timeout) + 5.0

    def _refusal(self, error: PayloadTooLarge) -> str:
        """An ``error`` event on the default namespace, encoded here (a Socket.IO event in an
        Engine.IO message) and written straight to the socket, which closes right after:
        there is no time for python-socketio's own queue."""
        event = self.sio.packet_class(socketio.packet.EVENT, data=["error", error.to_dict()])
        text: str = engineio.packet.Packet(engineio.packet.MESSAGE, data=event.encode()).encode()
        return text

    async def _emit_to(self, connection: str, event: str, payload: dict[str, Any]) -> None:
        await self.sio.emit(event, payload, to=connection)

    async def _to_room(self, room: str, event: str, payload: dict[str, Any]) -> None:
        """An event to a stream's room. With the cluster's Redis manager the members on
        this node get it at once and the others through Redis, which may not answer: the
        emit gives up after ``ROOM_EMIT_TIMEOUT_S`` rather than hold the stream."""
        try:
            async with asyncio.timeout(ROOM_EMIT_TIMEOUT_S):
                await self.sio.emit(event, payload, room=room)
        except TimeoutError:
            log.warning("session %s: %s not sent to other nodes in time", room, event)

    async def _ended(self, session_id: str, reason: str) -> None:
        await self._to_room(session_id, "ended", {"session_id": session_id, "reason": reason})

    def _later(self, connection: str, event: str, payload: dict[str, Any]) -> None:
        # From the connect handler: runs once the connection is accepted, so the client
        # has its handlers for this namespace when the event arrives.
        task = asyncio.create_task(self._emit_to(connection, event, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _key_refusal(self, environ: dict[str, Any], auth: Any) -> str | None:
        """Why the connection may not go on (``None``: it may): with API keys configured, one
        must come in ``auth={"api_key": ...}`` or in the headers. A key that came and was
        refused is told apart from none, and never echoed."""
        if not self.keys:
            return None
        headers = [
            (name, str(environ[key]).encode())
            for name, key in (
                (b"authorization", "HTTP_AUTHORIZATION"),
                (b"x-api-key", "HTTP_X_API_KEY"),
            )
            if key in environ
        ]
        if self.keys.from_headers(headers) is not None:
            return None
        key = auth.get("api_key") if isinstance(auth, dict) else None
        if isinstance(key, str) and self.keys.check(key) is not None:
            return None
        if headers or key is not None:
            return KEY_REFUSED
        return 'an API key is required: connect with auth={"api_key": KEY}'

    async def _connect(self, connection: str, environ: dict[str, Any], auth: Any = None) -> bool:
        message = self._key_refusal(environ, auth)
        if message is not None:
            self.ctx.telemetry.error(TRANSPORT, "unauthorized")
            raise socketio.exceptions.ConnectionRefusedError(
                message, {"error": message, "code": "unauthorized"}
            )
        settings = self.analysis.settings
        query = parse_qs(environ.get("QUERY_STRING", ""))
        requested = _first(query, settings.session_id_name)
        if requested is None and isinstance(auth, dict):
            value = auth.get(settings.session_id_name)
            requested = value if isinstance(value, str) else None
        observe = _first(query, "observe") in ("1", "true") or (
            isinstance(auth, dict) and auth.get("observe") is True
        )
        if observe:
            return await self._observe(connection, requested)
        raw_processes = _first(query, "processes")
        processes = (
            [p.strip() for p in raw_processes.split(",") if p.strip()]
            if raw_processes is not None
            else None
        )

        room: list[str] = []

        async def emit(event: str, payload: dict[str, Any]) -> None:
            # To the stream's room: its client and its observers, on whichever node.
            await self._to_room(room[0], event, payload)

        scope_client = environ.get("asgi.scope", {}).get("client")
        client = str(scope_client[0]) if scope_client else None
        try:
            stream, generated = await self.analysis.open_stream(
                connection, requested, emit=emit, processes=processes, client=client
            )
        except FramebrokerError as exc:
            log.info("video analysis connection refused: %s", exc.message)
            self.ctx.telemetry.error(TRANSPORT, exc.code)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_dict()) from None
        room.append(stream.id)
        await self.sio.enter_room(connection, stream.id)
        if generated:
            self._later(connection, "session", {"session_id": stream.id})
        return True

    async def _observe(self, connection: str, requested: str | None) -> bool:
        try:
            session_id = await self.analysis.observe(requested)
        except FramebrokerError as exc:
            self.ctx.telemetry.error(TRANSPORT, exc.code)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_dict()) from None
        self._observing[connection] = session_id
        await self.sio.enter_room(connection, session_id)
        log.info("video analysis session %s observed by %s", session_id, connection)
        return True

    async def _disconnect(self, connection: str, reason: Any = None) -> None:
        if self._observing.pop(connection, None) is not None:
            return
        # python-socketio's client closes the socket before its goodbye goes out, so a
        # disconnect cannot tell a client that left from one that dropped: each waits for a
        # reconnect. A client that is done says so first, with "end".
        await self.analysis.close_stream(connection, dropped=True)

    async def _end(self, connection: str, data: Any = None) -> dict[str, Any]:
        """``end``: the client is done; its session ends now, not after a reconnect grace."""
        stream = self.analysis.streams.get(connection)
        session_id = stream.id if stream is not None else None
        await self.analysis.close_stream(connection)
        return {"session_id": session_id, "ended": session_id is not None}

    async def _test(self, connection: str, data: Any = None) -> dict[str, Any]:
        stream = self.analysis.streams.get(connection)
        reply = {"data": data, "session_id": stream.id if stream is not None else None}
        await self._emit_to(connection, "test", reply)
        return reply

    async def _process(self, connection: str, data: Any = None) -> dict[str, Any]:
        stream = self.analysis.streams.get(connection)
        settings = self.analysis.settings
        try:
            if stream is None:
                if connection in self._observing:
                    raise InvalidInput(
                        "an observer sends no frames: connect without observe to run a stream",
                        field="observe",
                    )
                raise SessionNotFound(connection, field="session_id")
            parse = frame_parser(
                data,
                max_bytes=settings.max_frame_bytes,
                max_pixels=self.limits.max_image_pixels,
            )
            return await stream.add(parse)
        except FramebrokerError as exc:
            # A frame over the session's rate is counted as dropped by the session itself.
            self.ctx.telemetry.error(TRANSPORT, exc.code)
            body = {**exc.to_dict(), "event": "process"}
        except Exception:
            log.exception("process event failed")
            body = {"error": "internal server error", "code": "internal", "event": "process"}
        if not WANTS_ACK.get():  # once: as the ack when the client asked for one
            await self._emit_to(connection, "error", body)
        return body

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await stop_manager(self.sio.manager)


async def stop_manager(manager: Any) -> None:
    """Stop a pub/sub client manager's listening task and close its Redis connection (it has
    no public way to: its task is ``thread`` and its client ``redis``, both set once it
    started). A manager of this process alone has neither."""
    task = getattr(manager, "thread", None)
    if isinstance(task, asyncio.Future):
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    redis = getattr(manager, "redis", None)
    close = getattr(redis, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
