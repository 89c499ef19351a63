"""The live people counter (WebSocket ``/ws/live``): pushed frames, counts and traffic
events as an async iterator, and the saved faces on request.

::

    from framebroker.client import LiveClient

    async with LiveClient("ws://127.0.0.1:8000/ws/live", source="door") as live:
        async for message in live:
            if message.type == "stats":
                print(message.count_in, message.count_out)
        faces = await live.get_all_faces(limit=10)

:class:`SyncLiveClient` is the same client for blocking code (``with``, ``for message in
live``, ``live.get_all_faces()``): it runs a :class:`LiveClient` on an event loop in a
thread of its own (:mod:`.loop_thread`).

Messages are :class:`LiveFrame` (the annotated picture, ``jpeg`` bytes, ``image()`` as a
BGR array), :class:`LiveStats` (twice a second) and :class:`LiveEvent` (a high-traffic
event started or ended). A connection that drops is opened again with backoff (the original
API's client notes ask for it; ``max_reconnects``, ``None`` for ever), and the iteration goes
on where it was; :attr:`LiveClient.reconnects` counts how often. Like the server, the client
keeps every stats and event message but only the newest ``frame_queue`` frames for a
reader that falls behind (:attr:`LiveClient.frames_dropped`).

With ``api_key`` the key goes as a header and also as the first message, the way a browser
sends it, so a wrong key is told at once (:class:`~.errors.Unauthorized`) rather than
after the server's wait for a first message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import sys
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import websockets
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection

from .connection import Backoff, Connection, Verify
from .errors import (
    ApiError,
    ClientError,
    ConnectionLost,
    InvalidRequest,
    NotFound,
    ProtocolError,
    ServerError,
    Timeout,
    TransportError,
    Unauthorized,
)
from .images import decode_image
from .loop_thread import LoopThread, patience
from .ws import open_websocket, websocket_url

__all__ = [
    "Face",
    "LiveClient",
    "LiveEvent",
    "LiveFrame",
    "LiveMessage",
    "LiveStats",
    "SyncLiveClient",
    "parse_push",
    "reply_error",
]

_AUTH_CLOSE = 1008
_SEED_ERRORS: dict[str, tuple[type[ApiError], int, str, str | None]] = {
    "Invalid JSON message": (InvalidRequest, 400, "invalid_json", None),
    "Invalid face_id or limit format": (InvalidRequest, 400, "invalid_input", "face_id"),
    "Unknown message type": (InvalidRequest, 400, "invalid_input", "type"),
    "Face ID not found": (NotFound, 404, "face_not_found", "face_id"),
    "Face image file not found": (NotFound, 404, "face_file_not_found", "face_id"),
    "Face data not available on server": (NotFound, 404, "faces_unavailable", None),
}


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """An annotated picture: boxes, ids, counting lines and counts drawn."""

    jpeg: bytes
    timestamp: str
    type: Literal["frame"] = "frame"

    def image(self) -> NDArray[np.uint8]:
        """The picture as a BGR array (decoded with OpenCV)."""
        return decode_image(self.jpeg)


@dataclass(frozen=True, slots=True)
class LiveStats:
    """Today's counts (they reset at local midnight) and the traffic-event state."""

    count_in: int
    count_out: int
    face_count: int
    daily_event_count: int
    event_active: bool
    current_event_count_in: int
    timestamp: str
    data: dict[str, Any] = field(default_factory=dict)
    type: Literal["stats"] = "stats"


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """A high-traffic event ``started`` or ``ended`` (then with its ``end_time`` and
    ``count_in``, which is ``None`` when a restart cut it short)."""

    status: str
    start_time: str | None
    end_time: str | None
    count_in: int | None
    timestamp: str
    data: dict[str, Any] = field(default_factory=dict)
    type: Literal["event"] = "event"


@dataclass(frozen=True, slots=True)
class Face:
    """A saved face crop (JPEG) and the id the server gave it."""

    face_id: int
    filename: str
    jpeg: bytes

    def image(self) -> NDArray[np.uint8]:
        return decode_image(self.jpeg)


LiveMessage = LiveFrame | LiveStats | LiveEvent


def parse_push(message: Mapping[str, Any]) -> LiveMessage:
    """A pushed message as its type; :class:`~.errors.ProtocolError` for a malformed one."""
    kind = message.get("type")
    stamp = str(message.get("timestamp", ""))
    data = message.get("data")
    try:
        if kind == "frame":
            return LiveFrame(base64.b64decode(str(data), validate=True), stamp)
        if not isinstance(data, dict):
            raise TypeError(f"data is {type(data).__name__}")
        if kind == "stats":
            return LiveStats(
                count_in=int(data.get("count_in", 0)),
                count_out=int(data.get("count_out", 0)),
                face_count=int(data.get("face_count", 0)),
                daily_event_count=int(data.get("daily_event_count", 0)),
                event_active=bool(data.get("event_active", False)),
                current_event_count_in=int(data.get("current_event_count_in", 0)),
                timestamp=stamp,
                data=data,
            )
        if kind == "event":
            count = data.get("count_in")
            return LiveEvent(
                status=str(data.get("status")),
                start_time=data.get("start_time"),
                end_time=data.get("end_time"),
                count_in=None if count is None else int(count),
                timestamp=stamp,
                data=data,
            )
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"a malformed {kind} message: {exc}") from None
    raise ProtocolError(f"an unknown message type {kind!r}")


def reply_error(reply: Mapping[str, Any]) -> ApiError | None:
    """The error a request's reply carries (the original API's error texts), or ``None``."""
    text = reply.get("error")
    if not isinstance(text, str):
        return None
    cls, status, code, where = _SEED_ERRORS.get(text, (ServerError, 500, "internal", None))
    if isinstance(reply.get("code"), str):
        code = reply["code"]
    return cls(text, status=status, code=code, field=where, body=dict(reply))


def _face(item: Mapping[str, Any]) -> Face:
    try:
        return Face(
            int(item["face_id"]),
            str(item.get("filename", "")),
            base64.b64decode(str(item["image_data"]), validate=True),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"a malformed face: {exc}") from None


class LiveClient:
    """Listens to the live people counter (see the module).

    ``url`` is the socket (``ws://HOST:8000/ws/live``, the original API's ``ws://HOST:8765/``, or
    the server's ``http(s)://`` URL); ``source`` follows one ``--source`` (default: all).
    ``retries`` bounds the tries of the first connection, ``max_reconnects`` those after a
    drop (in a row; ``None``: for ever), both waiting as ``backoff`` says. Iteration raises
    the :class:`~.errors.ClientError` that ended the connection for good (a wrong key is
    never tried again).
    """

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8000/ws/live",
        *,
        source: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        max_reconnects: int | None = None,
        backoff: Backoff | None = None,
        verify: Verify = True,
        frame_queue: int = 8,
    ) -> None:
        if frame_queue < 1:
            raise ValueError(f"frame_queue must be 1 or more, got {frame_queue}")
        self.connection = Connection(
            url,
            api_key,
            timeout,
            retries,
            backoff or Backoff(),
            verify,
            schemes=("ws", "wss", "http", "https"),
        )
        self._reconnection = dataclasses.replace(
            self.connection, retries=sys.maxsize if max_reconnects is None else max_reconnects
        )
        parts = urlsplit(websocket_url(self.connection, "/ws/live"))
        if source is not None:
            query = "&".join(q for q in (parts.query, urlencode({"source": source})) if q)
            parts = parts._replace(query=query)
        self.url = urlunsplit(parts)
        self.reconnects = 0
        self.frames_dropped = 0
        self._ws: ClientConnection | None = None
        self._frames: deque[dict[str, Any]] = deque(maxlen=frame_queue)
        self._control: deque[dict[str, Any]] = deque(maxlen=1024)
        self._pending: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._failure: ClientError | None = None
        self._closing = False

    async def __aenter__(self) -> LiveClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> LiveClient:
        return self

    async def __anext__(self) -> LiveMessage:
        while True:
            if self._control:
                return parse_push(self._control.popleft())
            if self._frames:
                return parse_push(self._frames.popleft())
            if self._failure is not None:
                raise self._failure
            if self._closing or self._reader is None:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def connect(self) -> None:
        """Connect (trying ``retries`` times more); a no-op when connected."""
        if self._reader is not None:
            return
        self._closing = False
        self._failure = None
        self._ws = await self._open_retrying(self.connection)
        self._reader = asyncio.create_task(self._read(), name="framebroker-live-client")

    async def close(self) -> None:
        """Close the socket; the iteration ends, pending requests raise ``ConnectionLost``."""
        self._closing = True
        self._wake.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._fail_pending(ConnectionLost("the live client was closed"))

    async def get_face(self, face_id: int) -> Face:
        """A saved face by id; :class:`~.errors.NotFound` when there is none."""
        reply = await self._request({"type": "get_face", "face_id": face_id})
        return _face(reply)

    async def get_all_faces(self, limit: int = 50) -> list[Face]:
        """The newest ``limit`` saved faces (at most 500), newest first."""
        reply = await self._request({"type": "get_all_faces", "limit": limit})
        faces = reply.get("faces")
        if not isinstance(faces, list):
            raise ProtocolError(f"expected a list of faces, got {str(reply)[:80]}")
        return [_face(item) for item in faces]

    # -- the socket --------------------------------------------------------------------------

    async def _open_retrying(self, policy: Connection) -> ClientConnection:
        attempt = 0
        while True:
            try:
                return await self._open()
            except ClientError as exc:
                delay = policy.retry_delay(exc, attempt, idempotent=True)
                if delay is None or self._closing:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _open(self) -> ClientConnection:
        ws = await open_websocket(self.connection, self.url)
        if self.connection.api_key:
            try:
                await self._authenticate(ws)
            except BaseException:
                await ws.close()
                raise
        return ws

    async def _authenticate(self, ws: ClientConnection) -> None:
        """Send the key as the first message and wait for the verdict; pushes that come
        meanwhile are kept. A server that took the header's key (or wants none) answers
        the message as an unknown request, which says the same."""
        await ws.send(json.dumps({"type": "auth", "api_key": self.connection.api_key}))
        try:
            async with asyncio.timeout(self.connection.timeout_s):
                while True:
                    message = _decode(await ws.recv())
                    if message is None:
                        continue
                    if message.get("type") == "auth" and message.get("ok") is True:
                        return
                    if message.get("code") == "unauthorized":
                        raise Unauthorized(
                            str(message.get("error", "the API key was refused")),
                            status=401,
                            body=message,
                        )
                    if "type" not in message and message.get("error") == "Unknown message type":
                        return
                    self._keep(message)
        except TimeoutError:
            raise Timeout(
                f"{self.url}: no answer to the API key within {self.connection.timeout_s:g} s"
            ) from None
        except websockets.ConnectionClosed as exc:
            raise _closed(exc, self.url) from None

    async def _read(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            try:
                async for raw in ws:
                    message = _decode(raw)
                    if message is not None:
                        self._dispatch(message)
                error: ClientError = ConnectionLost(f"{self.url}: the server closed the socket")
            except websockets.ConnectionClosed as exc:
                error = _closed(exc, self.url)
            if self._closing:
                return
            self._fail_pending(error)
            if isinstance(error, Unauthorized):
                self._finish(error)
                return
            try:
                self._ws = await self._open_retrying(self._reconnection)
            except TransportError as exc:
                self._finish(ConnectionLost(f"{error.message}; reconnecting failed: {exc.message}"))
                return
            except ClientError as exc:  # refused (a key no longer valid, say): said as it is
                self._finish(exc)
                return
            self.reconnects += 1

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("frame", "stats", "event"):
            self._keep(message)
        elif kind in ("face_image", "all_faces") or (kind is None and "error" in message):
            while self._pending:
                future = self._pending.popleft()
                if not future.done():  # one whose caller gave up is skipped with its reply
                    future.set_result(message)
                    break

    def _keep(self, message: dict[str, Any]) -> None:
        if message.get("type") == "frame":
            if len(self._frames) == self._frames.maxlen:
                self.frames_dropped += 1
            self._frames.append(message)
        else:
            self._control.append(message)
        self._wake.set()

    def _finish(self, error: ClientError) -> None:
        self._failure = error
        self._wake.set()

    def _fail_pending(self, error: ClientError) -> None:
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)

    async def _request(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self._failure is not None:
            raise self._failure
        ws = self._ws
        if ws is None or self._reader is None:
            raise ConnectionLost("the live client is not connected: call connect() first")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        try:
            await ws.send(json.dumps(payload))
            async with asyncio.timeout(self.connection.timeout_s):
                reply = await asyncio.shield(future)
        except TimeoutError:
            future.cancel()
            raise Timeout(
                f"{self.url}: no answer to {payload['type']} within {self.connection.timeout_s:g} s"
            ) from None
        except websockets.ConnectionClosed as exc:
            future.cancel()
            raise _closed(exc, self.url) from None
        error = reply_error(reply)
        if error is not None:
            raise error
        return reply


class SyncLiveClient:
    """:class:`LiveClient` for blocking code: the same arguments, messages, reconnects and
    errors, over one code path (the async client runs on an event loop in a thread this
    client owns, see :mod:`.loop_thread`).

    ::

        with SyncLiveClient("ws://127.0.0.1:8000/ws/live", source="door") as live:
            for message in live:                      # or live.messages(timeout=5)
                if message.type == "stats":
                    print(message.count_in, message.count_out)
            faces = live.get_all_faces(limit=10)

    Every call waits at most as long as the async client's own bounds allow (then
    :class:`~.errors.Timeout`); :meth:`close` (or leaving the ``with`` block) ends the thread.
    """

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8000/ws/live",
        *,
        source: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        max_reconnects: int | None = None,
        backoff: Backoff | None = None,
        verify: Verify = True,
        frame_queue: int = 8,
    ) -> None:
        self._client = LiveClient(
            url,
            source=source,
            api_key=api_key,
            timeout=timeout,
            retries=retries,
            max_reconnects=max_reconnects,
            backoff=backoff,
            verify=verify,
            frame_queue=frame_queue,
        )
        self.connection = self._client.connection
        self.url = self._client.url
        self._loop = LoopThread("framebroker-live-client")

    @property
    def reconnects(self) -> int:
        """How often a dropped connection was opened again."""
        return self._client.reconnects

    @property
    def frames_dropped(self) -> int:
        """Frames left out for a reader that fell behind (see :class:`LiveClient`)."""
        return self._client.frames_dropped

    def __enter__(self) -> SyncLiveClient:
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[LiveMessage]:
        return self.messages()

    def connect(self) -> None:
        """Connect (trying ``retries`` times more); a no-op when connected."""
        # Each try opens the socket, then waits for the key's verdict.
        self._loop.run(self._client.connect(), patience(self.connection, steps=2))

    def messages(self, timeout: float | None = None) -> Iterator[LiveMessage]:
        """The pushed messages as they come, as :class:`LiveClient` yields them: through
        reconnects, until :meth:`close` (then the iteration ends) or the connection is lost
        for good (then its error). ``timeout``: seconds to wait for each message, then
        :class:`~.errors.Timeout` (the client stays connected: iterate again to go on)."""
        return self._loop.iterate(self._client, timeout)

    def get_face(self, face_id: int) -> Face:
        """A saved face by id; :class:`~.errors.NotFound` when there is none."""
        return self._loop.run(self._client.get_face(face_id), self._request_patience)

    def get_all_faces(self, limit: int = 50) -> list[Face]:
        """The newest ``limit`` saved faces (at most 500), newest first."""
        return self._loop.run(self._client.get_all_faces(limit), self._request_patience)

    def close(self) -> None:
        """Close the socket and end the client's thread; pending calls raise
        ``ConnectionLost``. Closing twice does nothing more."""
        if self._loop.closed:
            return
        try:
            with contextlib.suppress(Timeout):  # the loop's own closing cancels what is left
                self._loop.run(self._client.close(), self._request_patience)
        finally:
            self._loop.close()

    @property
    def _request_patience(self) -> float:
        # Sending, then one wait of timeout_s for the answer; never tried again.
        return patience(self.connection, steps=2, retried=False)


def _decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


def _closed(exc: websockets.ConnectionClosed, url: str) -> ClientError:
    received = exc.rcvd
    if received is not None and received.code == _AUTH_CLOSE and received.reason == "api key":
        return Unauthorized(f"{url}: the API key was refused", status=401)
    why = f"code {received.code} {received.reason}".strip() if received else "no close frame"
    return ConnectionLost(f"{url}: the connection was lost ({why})")
