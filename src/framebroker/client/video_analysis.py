"""Video analysis over Socket.IO: frames in, one merged result per window of frames out.

::

    from framebroker.client import VideoAnalysisClient

    async with VideoAnalysisClient("http://127.0.0.1:8000") as analysis:
        print(analysis.session_id)
        for frame in frames:
            ack = await analysis.process(frame)       # at once: its frame and window number
        async for result in analysis.results():     # each window, as it is analysed
            print(result.window, result.result)

:meth:`VideoAnalysisClient.connect` asks ``GET /get_session_id`` for a session id (unless
one is given), then connects with it; ``process`` takes a BGR array (sent as JPEG) or JPEG
or PNG bytes and returns the server's acknowledgement. Every ``window_frames`` frames the
server encodes the window to MP4, sends it to its analysis services and pipelines, and
emits the merged answers: :meth:`results` yields them as :class:`WindowResult`. A window
that failed as a whole is kept in :attr:`VideoAnalysisClient.errors`. :meth:`options` and
:meth:`batch` are the HTTP side (``GET /options``, ``POST /batch`` with a whole video).
:class:`SyncVideoAnalysisClient` is the same client for blocking code.

A session id serves one connection, so a dropped connection is not reopened: the client
raises :class:`~.errors.ConnectionLost` and a new client starts a new session. Needs
python-socketio's asyncio client (``pip install 'framebroker[socketio]'``, for aiohttp).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import httpx

from .connection import Backoff, Connection, Verify
from .errors import (
    ApiError,
    ClientError,
    Conflict,
    ConnectionFailed,
    ConnectionLost,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
)
from .http import AsyncHttpClient, Call, read_json
from .images import Image, encode_image
from .loop_thread import GRACE_S, LoopThread, patience
from .sockets import SocketLedger

__all__ = [
    "FrameAck",
    "SyncVideoAnalysisClient",
    "VideoAnalysisClient",
    "WindowResult",
    "socketio_error",
]

_BY_CODE: dict[str, tuple[type[ApiError], int]] = {
    "unauthorized": (Unauthorized, 401),
    "session_not_found": (NotFound, 404),
    "session_conflict": (Conflict, 409),
    "payload_too_large": (PayloadTooLarge, 413),
    "frame_rate_exceeded": (RateLimited, 429),
    "client_session_limit": (RateLimited, 429),
    "too_many_requests": (RateLimited, 429),
    "capacity_exceeded": (ServiceUnavailable, 503),
    "processor_timeout": (ServerError, 504),
    "internal": (ServerError, 500),
}


def socketio_error(body: Any, default: str = "the server refused") -> ApiError:
    """The error for a Socket.IO error body ``{"error", "code", "field"?, ...}``, with the
    HTTP status the same refusal has over HTTP."""
    document: dict[str, Any] = body if isinstance(body, dict) else {}
    code = document.get("code")
    cls, status = (
        _BY_CODE.get(code, (InvalidRequest, 400))
        if isinstance(code, str)
        else (
            ServerError,
            500,
        )
    )
    wait = document.get("retry_after_s")
    field_name = document.get("field")
    return cls(
        str(document.get("error") or default),
        status=status,
        code=code if isinstance(code, str) else None,
        field=field_name if isinstance(field_name, str) else None,
        body=document,
        retry_after_s=float(wait) if isinstance(wait, int | float) else None,
    )


@dataclass(frozen=True, slots=True)
class FrameAck:
    """The server took frame ``frame`` (0-based) into window ``window``; ``first_pixel`` is
    its top-left pixel ``[r, g, b]`` and ``size`` its ``[width, height]``."""

    frame: int
    window: int
    first_pixel: list[int]
    size: list[int]


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One window's analysis: ``result`` maps each service and pipeline to its answer (or
    to its own ``{"error", "code"}``)."""

    session_id: str
    window: int
    frames: int
    result: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)


def _ack(reply: Any) -> FrameAck:
    if isinstance(reply, dict) and "error" in reply:
        raise socketio_error(reply)
    try:
        return FrameAck(
            int(reply["frame"]),
            int(reply["window"]),
            list(reply.get("first_pixel") or []),
            list(reply.get("size") or []),
        )
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"expected a frame acknowledgement, got {str(reply)[:80]}") from None


def _window(data: Any) -> WindowResult:
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a result object, got {str(data)[:80]}")
    return WindowResult(
        session_id=str(data.get("session_id", "")),
        window=int(data.get("window", -1)),
        frames=int(data.get("frames", 0)),
        result=dict(data.get("result") or {}),
        data=data,
    )


class VideoAnalysisClient:
    """One Socket.IO session of the video-analysis API (see the module).

    ``url`` is the server (``http(s)://HOST:8000``); ``session_id`` an id from
    ``/get_session_id`` (default: asked for on connect); ``processes`` chooses some of the
    names ``GET /options`` lists; ``session_id_name`` is the server's ``SESSION_ID_NAME``.
    ``retries`` applies to getting the id, connecting, and frames refused for their rate.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        session_id: str | None = None,
        processes: Iterable[str] | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        verify: Verify = True,
        session_id_name: str = "session_id",
    ) -> None:
        self.connection = Connection(url, api_key, timeout, retries, backoff or Backoff(), verify)
        self.session_id = session_id
        self.processes = list(processes) if processes is not None else None
        self.session_id_name = session_id_name
        self.errors: list[ApiError] = []
        self._http = AsyncHttpClient(self.connection)
        self._sio: Any = None
        self._http_session: Any = None  # aiohttp's, for Socket.IO
        self._sockets = SocketLedger()
        self._results: asyncio.Queue[WindowResult | ClientError] = asyncio.Queue()
        self._refusal: Any = None
        self._lost = False

    async def __aenter__(self) -> VideoAnalysisClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def new_session_id(self) -> str:
        """A fresh id from ``GET /get_session_id``."""
        document = await self._http.call(Call("GET", "/get_session_id", read_json))
        sid = document.get("session_id") if isinstance(document, dict) else None
        if not isinstance(sid, str):
            raise ProtocolError(f"expected {{'session_id': ...}}, got {str(document)[:80]}")
        return sid

    async def connect(self) -> None:
        """Get a session id when none was given, and connect with it. A client that could
        not connect is closed (its HTTP client too): make a new one to try again later."""
        if self._sio is not None:
            return
        try:
            await self._connect()
        except BaseException:
            await self.close()
            raise

    async def _connect(self) -> None:
        if self.session_id is None:
            self.session_id = await self.new_session_id()
        attempt = 0
        while True:
            try:
                await self._connect_once()
                return
            except ClientError as exc:
                delay = self.connection.retry_delay(exc, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _connect_once(self) -> None:
        try:
            import aiohttp
            import socketio
        except ImportError:
            raise ImportError(
                "VideoAnalysisClient needs python-socketio's asyncio client: "
                "pip install 'framebroker[socketio]'"
            ) from None
        extra: dict[str, Any] = {}
        context = self.connection.ssl_context()
        if context is not None:
            extra["ssl"] = context
        # The client's own aiohttp session, on sockets it keeps: closing waits until each
        # one is closed (see .sockets), which engineio's own session does not.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=self._sockets.open)
        )
        sio = socketio.AsyncClient(
            reconnection=False,
            request_timeout=self.connection.timeout_s,
            websocket_extra_options=extra,
            http_session=session,
        )
        sio.on("result", self._on_result)
        sio.on("error", self._on_error)
        sio.on("connect_error", self._on_refused)
        sio.on("disconnect", self._on_disconnect)
        query = {self.session_id_name: self.session_id or ""}
        if self.processes is not None:
            query["processes"] = ",".join(self.processes)
        auth = {"api_key": self.connection.api_key} if self.connection.api_key else None
        self._refusal = None
        try:
            await sio.connect(
                f"{self.connection.base()}?{urlencode(query)}",
                headers=self.connection.headers(),
                auth=auth,
                transports=["websocket"],
                wait_timeout=self.connection.timeout_s,
            )
        except socketio.exceptions.ConnectionError as exc:
            await self._shutdown(sio, session)
            if isinstance(self._refusal, dict) and isinstance(self._refusal.get("data"), dict):
                raise socketio_error(self._refusal["data"]) from None
            reason = str(exc) or type(exc).__name__
            raise ConnectionFailed(f"cannot connect to {self.connection.url}: {reason}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._shutdown(sio, session)
            raise ConnectionFailed(f"cannot connect to {self.connection.url}: {exc}") from None
        except BaseException:  # cancelled, or a bug: nothing stays open either way
            await asyncio.shield(self._shutdown(sio, session))
            raise
        self._sio = sio
        self._http_session = session
        self._lost = False

    async def _on_result(self, data: Any = None) -> None:
        try:
            self._results.put_nowait(_window(data))
        except ProtocolError as exc:
            self._results.put_nowait(exc)

    async def _on_error(self, data: Any = None) -> None:
        # A failed ``process`` comes back as its acknowledgement too; keep the others.
        if isinstance(data, dict) and data.get("event") != "process":
            self.errors.append(socketio_error(data))

    async def _on_refused(self, data: Any = None) -> None:
        self._refusal = data

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._lost = True
        self._results.put_nowait(
            ConnectionLost(f"{self.connection.url}: the Socket.IO connection was lost")
        )

    async def test(self, data: Any = None) -> dict[str, Any]:
        """The original API's ``test`` event: the server echoes ``data`` with the session id."""
        reply = await self._call("test", data)
        if not isinstance(reply, dict):
            raise ProtocolError(f"expected an object, got {str(reply)[:80]}")
        return reply

    async def process(self, frame: Image) -> FrameAck:
        """Send one frame (a BGR array is sent as JPEG); its acknowledgement. A frame refused
        for its rate is sent again after the server's ``retry_after_s``."""
        payload = encode_image(frame)
        attempt = 0
        while True:
            try:
                return _ack(await self._call("process", payload))
            except ClientError as exc:
                delay = self.connection.retry_delay(exc, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _call(self, event: str, data: Any) -> Any:
        sio = self._sio
        if sio is None or self._lost or not sio.connected:
            raise ConnectionLost(f"{self.connection.url}: not connected")
        import socketio

        try:
            return await sio.call(event, data, timeout=self.connection.timeout_s)
        except socketio.exceptions.TimeoutError:
            if self._lost or not sio.connected:
                raise ConnectionLost(f"{self.connection.url}: the connection was lost") from None
            raise Timeout(f"{self.connection.url}: no answer to {event!r} in time") from None
        except socketio.exceptions.BadNamespaceError:
            raise ConnectionLost(f"{self.connection.url}: the connection was lost") from None

    async def results(self, *, timeout: float | None = None) -> AsyncIterator[WindowResult]:
        """Each window's result as it comes, until the connection ends (then
        :class:`~.errors.ConnectionLost`) or no result comes for ``timeout`` seconds (then
        the iteration just ends)."""
        while True:
            try:
                item = await asyncio.wait_for(self._results.get(), timeout)
            except TimeoutError:
                return
            if isinstance(item, ClientError):
                if isinstance(item, ConnectionLost) and self._sio is None:
                    return  # closed by us
                raise item
            yield item

    async def next_result(self, timeout: float | None = None) -> WindowResult:
        """The next window's result; :class:`~.errors.Timeout` when none comes in time."""
        try:
            item = await asyncio.wait_for(self._results.get(), timeout or self.connection.timeout_s)
        except TimeoutError:
            raise Timeout(f"{self.connection.url}: no result in time") from None
        if isinstance(item, ClientError):
            raise item
        return item

    async def options(self) -> dict[str, Any]:
        """``GET /options``: ``{"processes": [names], "details": {...}}``."""
        document = await self._http.call(Call("GET", "/options", read_json))
        if not isinstance(document, dict):
            raise ProtocolError(f"expected an object, got {str(document)[:80]}")
        return document

    async def batch(
        self,
        video: str | os.PathLike[str] | bytes,
        *,
        processes: Iterable[str] | None = None,
        content_type: str = "video/mp4",
    ) -> dict[str, Any]:
        """``POST /batch``: a whole video (a file, or its bytes) through every service and
        pipeline; the merged ``result``."""
        body = (
            video if isinstance(video, bytes) else await asyncio.to_thread(Path(video).read_bytes)
        )
        params = {"processes": ",".join(processes)} if processes is not None else None

        def parse(response: httpx.Response) -> dict[str, Any]:
            document = read_json(response)
            if not isinstance(document, dict) or not isinstance(document.get("result"), dict):
                raise ProtocolError(f"expected {{'result': ...}}, got {str(document)[:80]}")
            return dict(document["result"])

        return await self._http.call(
            Call(
                "POST",
                "/batch",
                parse,
                content=body,
                headers={"Content-Type": content_type},
                params=params,
            )
        )

    async def close(self) -> None:
        """End the session (``end``: the server does not keep it for a reconnect), disconnect
        and close the HTTP client; returns once every connection the client opened is closed
        (or after ``timeout``, should the server not answer the closing)."""
        sio, self._sio = self._sio, None
        session, self._http_session = self._http_session, None
        if sio is not None:
            with contextlib.suppress(Exception):  # gone already: it ends on the server anyway
                if sio.connected and not self._lost:
                    await sio.call("end", timeout=self.connection.timeout_s)
            await self._shutdown(sio, session)
        await self._http.aclose()

    async def _shutdown(self, sio: Any, session: Any) -> None:
        """Disconnect ``sio``, close its aiohttp ``session``, and wait until their sockets
        are closed, on every path: connected, refused, or failed half-way."""
        with contextlib.suppress(Exception):
            if sio.connected:
                await sio.disconnect()
            await sio.shutdown()
        if session is not None and not session.closed:
            with contextlib.suppress(Exception):
                await session.close()
        await self._sockets.closed(self.connection.timeout_s)


class SyncVideoAnalysisClient:
    """:class:`VideoAnalysisClient` for blocking code: the same arguments, methods and
    errors, over one code path (the async client runs on an event loop in a thread this
    client owns, see :mod:`.loop_thread`).

    ::

        with SyncVideoAnalysisClient("http://127.0.0.1:8000") as analysis:
            ack = analysis.process(bgr_frame)
            for result in analysis.results(timeout=5):
                print(result.window, result.result)

    Every call waits at most as long as the async client's own bounds allow (then
    :class:`~.errors.Timeout`); :meth:`close` (or leaving the ``with`` block) ends the session
    and the thread.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        session_id: str | None = None,
        processes: Iterable[str] | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        verify: Verify = True,
        session_id_name: str = "session_id",
    ) -> None:
        self._client = VideoAnalysisClient(
            url,
            session_id=session_id,
            processes=processes,
            api_key=api_key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            verify=verify,
            session_id_name=session_id_name,
        )
        self.connection = self._client.connection
        self._loop = LoopThread("framebroker-video-analysis-client")

    @property
    def session_id(self) -> str | None:
        """The session's id: as given, or the one :meth:`connect` asked for."""
        return self._client.session_id

    @property
    def processes(self) -> list[str] | None:
        return self._client.processes

    @property
    def errors(self) -> list[ApiError]:
        """Windows that failed as a whole (see :class:`VideoAnalysisClient`)."""
        return self._client.errors

    def __enter__(self) -> SyncVideoAnalysisClient:
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

    def new_session_id(self) -> str:
        """A fresh id from ``GET /get_session_id``."""
        return self._loop.run(self._client.new_session_id(), patience(self.connection))

    def connect(self) -> None:
        """Get a session id when none was given, and connect with it; a client that could
        not connect is closed on the server's side: make a new one to try again."""
        # Asking for the id, then connecting (each tried again as the connection says), and
        # after a refusal the wait for its sockets to close.
        self._loop.run(self._client.connect(), patience(self.connection, steps=3))

    def test(self, data: Any = None) -> dict[str, Any]:
        """The original API's ``test`` event: the server echoes ``data`` with the session id."""
        return self._loop.run(self._client.test(data), patience(self.connection, retried=False))

    def process(self, frame: Image) -> FrameAck:
        """Send one frame (see :meth:`VideoAnalysisClient.process`); its acknowledgement."""
        return self._loop.run(self._client.process(frame), patience(self.connection))

    def results(self, *, timeout: float | None = None) -> Iterator[WindowResult]:
        """Each window's result as it comes, until the connection ends (then
        :class:`~.errors.ConnectionLost`) or no result comes for ``timeout`` seconds (then
        the iteration just ends), as :meth:`VideoAnalysisClient.results`."""
        # The async generator bounds each wait by ``timeout`` itself.
        return self._loop.iterate(self._client.results(timeout=timeout), None)

    def next_result(self, timeout: float | None = None) -> WindowResult:
        """The next window's result; :class:`~.errors.Timeout` when none comes in time."""
        wait = timeout or self.connection.timeout_s
        return self._loop.run(self._client.next_result(wait), wait + GRACE_S)

    def options(self) -> dict[str, Any]:
        """``GET /options``: ``{"processes": [names], "details": {...}}``."""
        return self._loop.run(self._client.options(), patience(self.connection))

    def batch(
        self,
        video: str | os.PathLike[str] | bytes,
        *,
        processes: Iterable[str] | None = None,
        content_type: str = "video/mp4",
    ) -> dict[str, Any]:
        """``POST /batch``: a whole video (a file, or its bytes) through every service and
        pipeline; the merged ``result``."""
        # No bound of its own: an upload takes as long as its size needs, and httpx bounds
        # every read and write of it by the connection's timeout.
        return self._loop.run(
            self._client.batch(video, processes=processes, content_type=content_type), None
        )

    def close(self) -> None:
        """End the session, disconnect, and end the client's thread. Closing twice does
        nothing more."""
        if self._loop.closed:
            return
        try:
            with contextlib.suppress(Timeout):  # the loop's own closing cancels what is left
                # ``end``, the disconnect, the sockets' closing: each bounded by timeout_s.
                self._loop.run(
                    self._client.close(), patience(self.connection, steps=3, retried=False)
                )
        finally:
            self._loop.close()
