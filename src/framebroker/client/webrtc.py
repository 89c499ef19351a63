"""The WebRTC model broker: stream a camera, a file or your own frames as a WebRTC video
track; receive the models' predictions as they come, and the final result.

::

    from framebroker.client import WebRTCClient

    client = WebRTCClient("ws://127.0.0.1:8000/webrtc/ws")
    async with client.stream("clip.mp4") as stream:          # or an iterable of BGR arrays
        print(stream.session_id)
        async for message in stream:
            if message.type == "prediction":
                print(message.model, message.data)
    print(stream.result.data)                                # the merged final result

Signaling goes over the WebSocket at a ``ws(s)://`` URL, or as an HTTP ``POST`` of the offer
at an ``http(s)://`` URL (``/offer`` when it names no path); predictions then come on the data
channel. When the source ends the client asks for the result (``{"type": "end"}``); the
iteration ends with the :class:`StreamResult`. Needs aiortc and PyAV (``pip install
'framebroker[webrtc]'``); ``framebroker stream`` is this client on the command line.

:class:`SyncWebRTCClient` is the same client for blocking code: ``with client.stream(...) as
stream`` and ``for message in stream``; each :class:`SyncWebRTCStream` runs a
:class:`WebRTCStream` on an event loop in a thread of its own (:mod:`.loop_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import av
import numpy as np
import websockets
from aiortc import (
    MediaStreamError,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection

from ..media.convert import reformat
from ..media.reader import VideoSource
from .connection import Backoff, Connection, Verify
from .errors import (
    ApiError,
    ClientError,
    ConnectionFailed,
    ConnectionLost,
    ProtocolError,
    Timeout,
    api_error,
)
from .http import AsyncHttpClient, Call, read_json
from .loop_thread import GRACE_S, LoopThread, patience
from .ws import open_websocket

__all__ = [
    "ArrayTrack",
    "FileTrack",
    "Prediction",
    "SignalingError",
    "StreamResult",
    "SyncWebRTCClient",
    "SyncWebRTCStream",
    "WebRTCClient",
    "WebRTCMessage",
    "WebRTCStream",
]

_CLOCK = 90_000
_TRACK_JOIN_S = 5.0  # how long closing waits for a file's reader thread
_TIME_BASE = Fraction(1, _CLOCK)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The models' newest outputs merged (``data``), after ``model`` answered on ``frame``;
    ``error`` when that model failed on it. ``raw`` is the message as sent."""

    data: dict[str, Any]
    model: str | None
    frame: int | None
    latency_ms: float | None
    error: Any
    raw: dict[str, Any] = field(repr=False)
    type: Literal["prediction"] = "prediction"


@dataclass(frozen=True, slots=True)
class StreamResult:
    """The merged final result of every model (``data``), and why the session ended."""

    data: dict[str, Any]
    session_id: str | None
    reason: str | None
    raw: dict[str, Any] = field(repr=False)
    type: Literal["result"] = "result"


@dataclass(frozen=True, slots=True)
class SignalingError:
    """An ``error`` the server sent once streaming had begun; ``error`` is the client error
    it stands for (the session usually goes on)."""

    error: ApiError
    raw: dict[str, Any] = field(repr=False)
    type: Literal["error"] = "error"


WebRTCMessage = Prediction | StreamResult | SignalingError


def signaling_error(data: Any) -> ApiError:
    """The error for the ``data`` of an ``error`` message (``code`` is its HTTP status)."""
    body: dict[str, Any] = data if isinstance(data, dict) else {}
    status = body.get("code")
    return api_error(
        status if isinstance(status, int) else 400,
        {
            "error": body.get("message") or body.get("error"),
            "code": body.get("error"),
            **{k: v for k, v in body.items() if k not in ("message", "code", "error")},
        },
    )


def parse_message(message: dict[str, Any]) -> WebRTCMessage | None:
    """A server message as its type; ``None`` for types the client does not use."""
    kind = message.get("type")
    data = message.get("data")
    if kind == "prediction":
        latency = message.get("latency_ms")
        return Prediction(
            data=dict(data) if isinstance(data, dict) else {},
            model=message.get("model"),
            frame=message.get("frame"),
            latency_ms=float(latency) if isinstance(latency, int | float) else None,
            error=message.get("error"),
            raw=message,
        )
    if kind == "result":
        document = dict(data) if isinstance(data, dict) else {}
        return StreamResult(
            data=document,
            session_id=message.get("session_id") or document.get("session_id"),
            reason=message.get("reason") or document.get("reason"),
            raw=message,
        )
    if kind == "error":
        return SignalingError(signaling_error(data), message)
    return None


class FileTrack(VideoStreamTrack):
    """A video file, ``rtsp://`` URL or camera played in real time as a WebRTC track.

    Frames are decoded in the source's reader thread; the track keeps only the newest one,
    so a slow encoder skips frames rather than falling behind. It ends with the source.
    """

    def __init__(self, uri: str, *, loop: bool = False) -> None:
        super().__init__()
        self._source = VideoSource(
            uri, self._on_frame, realtime=True, loop=loop, reconnect=False, on_end=self._on_end
        )
        self._latest: tuple[NDArray[np.uint8], float] | None = None
        self._wake = asyncio.Event()
        self._ended = False
        self.error: BaseException | None = None
        self.sent = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Open the source and start reading; raises ``SourceError`` for a bad file."""
        self._loop = asyncio.get_running_loop()
        self._source.start()

    @property
    def ended(self) -> bool:
        return self._ended

    def _on_frame(self, image: NDArray[np.uint8], pts_s: float, index: int) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._put, image, pts_s)

    def _put(self, image: NDArray[np.uint8], pts_s: float) -> None:
        self._latest = (image, pts_s)
        self._wake.set()

    def _on_end(self, error: BaseException | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._finish, error)

    def _finish(self, error: BaseException | None) -> None:
        self.error = error
        self._ended = True
        self._wake.set()

    async def recv(self) -> av.VideoFrame:
        while self._latest is None:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            await self._wake.wait()
        image, pts_s = self._latest
        self._latest = None
        self.sent += 1
        return _video_frame(image, pts_s)

    def stop(self) -> None:
        super().stop()
        self._source.stop(timeout=0)
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the reader thread to finish (call off the event loop)."""
        return self._source.wait(timeout)


class ArrayTrack(VideoStreamTrack):
    """BGR arrays from an iterable (or async iterable) sent at ``fps`` frames a second.

    A plain iterable is advanced in a worker thread, so one that blocks (a camera read)
    does not stall the event loop. The track ends when the iterable does.
    """

    def __init__(
        self, frames: Iterable[NDArray[np.uint8]] | AsyncIterable[NDArray[np.uint8]], fps: float
    ) -> None:
        super().__init__()
        if not fps > 0:
            raise ValueError(f"fps must be above 0, got {fps!r}")
        self.fps = fps
        self._async: AsyncIterator[NDArray[np.uint8]] | None = (
            aiter(frames) if isinstance(frames, AsyncIterable) else None
        )
        self._sync: Iterator[NDArray[np.uint8]] | None = (
            iter(frames) if not isinstance(frames, AsyncIterable) else None
        )
        self._ended = False
        self._t0: float | None = None
        self.error: BaseException | None = None
        self.sent = 0

    def open(self) -> None:
        """Nothing to open; here so both tracks start the same way."""

    @property
    def ended(self) -> bool:
        return self._ended

    async def _next(self) -> NDArray[np.uint8] | None:
        try:
            if self._async is not None:
                return await anext(self._async)
            assert self._sync is not None
            return await asyncio.to_thread(next, self._sync, None)
        except StopAsyncIteration:
            return None

    async def recv(self) -> av.VideoFrame:
        if self._ended or self.readyState != "live":
            raise MediaStreamError
        image = await self._next()
        if image is None:
            self._ended = True
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        pts_s = self.sent / self.fps
        wait = self._t0 + pts_s - now
        if wait > 0:
            await asyncio.sleep(wait)
        self.sent += 1
        return _video_frame(np.ascontiguousarray(image), pts_s)

    def join(self, timeout: float) -> bool:
        return True


def _video_frame(image: NDArray[np.uint8], pts_s: float) -> av.VideoFrame:
    # In the encoder's own format already: aiortc would otherwise convert it with a new
    # swscale context, and its threads, for every frame (see media.convert).
    frame = reformat(av.VideoFrame.from_ndarray(image, format="bgr24"), format="yuv420p")
    frame.pts = round(pts_s * _CLOCK)
    frame.time_base = _TIME_BASE
    return frame


Source = str | Iterable[NDArray[np.uint8]] | AsyncIterable[NDArray[np.uint8]]


class WebRTCClient:
    """Streams sources to the WebRTC model broker (see the module).

    ``url`` is the signaling WebSocket (``ws://HOST:8000/webrtc/ws``, the original
    API's ``ws://HOST:8084``) or the HTTP offer URL (``http://HOST:8000/offer``, the original
    API's ``http://HOST:8083``); ``models`` chooses some of the server's models by name;
    ``timeout`` bounds connecting, the answer, ICE, and the wait for the result.
    """

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8000/webrtc/ws",
        *,
        models: Sequence[str] | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        verify: Verify = True,
    ) -> None:
        self.connection = Connection(
            url,
            api_key,
            timeout,
            retries,
            backoff or Backoff(),
            verify,
            schemes=("ws", "wss", "http", "https"),
        )
        self.models = list(models) if models is not None else None

    @property
    def use_http(self) -> bool:
        return urlsplit(self.connection.url).scheme.lower() in ("http", "https")

    def stream(self, source: Source, *, fps: float = 30.0, loop: bool = False) -> WebRTCStream:
        """A stream of ``source``: a file, URL or camera (played in real time, ``loop``: over
        and over) or an (async) iterable of BGR arrays sent at ``fps``. Use it as an async
        context manager; see :class:`WebRTCStream`."""
        track: FileTrack | ArrayTrack = (
            FileTrack(source, loop=loop) if isinstance(source, str) else ArrayTrack(source, fps)
        )
        return WebRTCStream(self, track)


class WebRTCStream:
    """One WebRTC session: ``async with`` opens it (:meth:`open` then :meth:`connected`),
    iteration yields each :data:`WebRTCMessage` until the :class:`StreamResult`, and leaving
    the block closes everything. :attr:`session_id` is known once the server answered;
    :attr:`result` once it sent the result."""

    def __init__(self, client: WebRTCClient, track: FileTrack | ArrayTrack) -> None:
        self.client = client
        self.connection = client.connection
        self.track = track
        self.session_id: str | None = None
        self.result: StreamResult | None = None
        self.errors: list[ApiError] = []
        self.predictions = 0
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[dict[str, Any] | ClientError] = asyncio.Queue()
        self._ended_sent = False
        self._done = False

    async def __aenter__(self) -> WebRTCStream:
        try:
            await self.open()
            await self.connected()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Start the source, send the offer and take the answer. Raises the source's
        ``SourceError``, :class:`~.errors.ConnectionFailed`, or the
        :class:`~.errors.ApiError` the server refused the offer with; a stream that could
        not open is closed (source, peer connection, signaling socket) before it raises."""
        try:
            await self._open()
        except BaseException:
            await asyncio.shield(self.close())
            raise

    async def _open(self) -> None:
        self.track.open()
        pc = self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self.track)
        self._channel = pc.createDataChannel("predictions")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
        if self.client.use_http:
            self._channel.on("message", self._on_channel)
            answer = await self._offer_over_http(offer)
        else:
            answer = await self._offer_over_websocket(offer)
        self.session_id = answer.get("session_id")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def connected(self) -> None:
        """Wait until ICE and DTLS are through; :class:`~.errors.ConnectionFailed` if not in
        time or not at all."""
        pc = self._pc
        assert pc is not None, "open() first"
        done = asyncio.Event()

        def check() -> None:
            if pc.connectionState in ("connected", "failed", "closed"):
                done.set()

        pc.on("connectionstatechange", check)
        check()
        try:
            await asyncio.wait_for(done.wait(), self.connection.timeout_s)
        except TimeoutError:
            raise ConnectionFailed(
                f"the peer connection did not connect within {self.connection.timeout_s:g} s"
            ) from None
        if pc.connectionState != "connected":
            raise ConnectionFailed(f"the peer connection {pc.connectionState} (ICE or DTLS)")

    def __aiter__(self) -> WebRTCStream:
        return self

    async def __anext__(self) -> WebRTCMessage:
        while not self._done:
            item = await self._next_item()
            if isinstance(item, ClientError):
                self._done = True
                raise item
            message = parse_message(item)
            if isinstance(message, Prediction):
                self.predictions += 1
            elif isinstance(message, StreamResult):
                self.result = message
                self._done = True
            elif isinstance(message, SignalingError):
                self.errors.append(message.error)
            if message is not None:
                return message
        raise StopAsyncIteration

    async def _next_item(self) -> dict[str, Any] | ClientError:
        """The next message; meanwhile, ask for the result once the source has ended, and
        notice a peer connection that dropped."""
        deadline: float | None = None
        while True:
            try:
                return await asyncio.wait_for(self._queue.get(), 0.1)
            except TimeoutError:
                pass
            pc = self._pc
            now = time.monotonic()
            if self._ended_sent:
                deadline = deadline or now + self.connection.timeout_s
                if now > deadline:
                    return Timeout(f"no final result within {self.connection.timeout_s:g} s")
            elif self.track.ended or pc is None or pc.connectionState != "connected":
                # The source is done or the media connection dropped: the server still
                # ends the session with its result, over a signaling path that is alive.
                await self.end()

    async def end(self) -> None:
        """Ask for the final result now (the iteration then ends with it)."""
        if self._ended_sent:
            return
        self._ended_sent = True
        text = json.dumps({"type": "end"})
        if self._ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._ws.send(text)
        elif self._channel is not None and self._channel.readyState == "open":
            self._channel.send(text)

    async def close(self) -> None:
        """Stop the source and close the connection (the server then ends the session)."""
        self.track.stop()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await self._reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._pc is not None:
            await self._pc.close()
        await asyncio.get_running_loop().run_in_executor(None, self.track.join, _TRACK_JOIN_S)

    # -- signaling ---------------------------------------------------------------------------

    def _offer_message(self, offer: dict[str, str]) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "offer", "data": offer}
        if self.client.models is not None:
            message["models"] = self.client.models
        return message

    async def _offer_over_websocket(self, offer: dict[str, str]) -> dict[str, Any]:
        url = self.connection.url
        attempt = 0
        while True:
            try:
                return await self._try_websocket(url, offer)
            except ClientError as exc:
                delay = self.connection.retry_delay(exc, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _try_websocket(self, url: str, offer: dict[str, str]) -> dict[str, Any]:
        if self._ws is None:
            self._ws = await open_websocket(self.connection, url, max_size=2**22)
        ws = self._ws
        await ws.send(json.dumps(self._offer_message(offer)))
        try:
            async with asyncio.timeout(self.connection.timeout_s):
                while True:
                    message = json.loads(await ws.recv())
                    kind = message.get("type") if isinstance(message, dict) else None
                    if kind == "answer":
                        data = message.get("data") or {}
                        self._reader = asyncio.create_task(self._read_websocket(ws))
                        return {**data, "session_id": message.get("session_id")}
                    if kind == "error":
                        raise signaling_error(message.get("data"))
                    if kind is None and isinstance(message, dict) and "error" in message:
                        # Refused before the signaling began: a missing or wrong API key.
                        status = 401 if message.get("code") == "unauthorized" else 400
                        raise api_error(status, message)
        except TimeoutError:
            raise Timeout(f"no answer within {self.connection.timeout_s:g} s") from None
        except websockets.ConnectionClosed as exc:
            self._ws = None
            raise ConnectionLost(f"{url}: the signaling socket closed ({exc})") from None
        except ValueError:
            raise ProtocolError(f"{url}: the server sent something that is not JSON") from None

    async def _read_websocket(self, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    self._queue.put_nowait(message)
        except websockets.ConnectionClosed:
            pass
        if not self._done and self.result is None:
            self._queue.put_nowait(ConnectionLost("the signaling socket closed"))

    async def _offer_over_http(self, offer: dict[str, str]) -> dict[str, Any]:
        parts = urlsplit(self.connection.url)
        path = parts.path if parts.path not in ("", "/") else "/offer"
        body: dict[str, Any] = dict(offer)
        if self.client.models is not None:
            body["models"] = self.client.models
        origin = dataclasses.replace(self.connection, url=f"{parts.scheme}://{parts.netloc}")
        http = AsyncHttpClient(origin)
        try:
            answer = await http.call(Call("POST", path, read_json, json=body))
        finally:
            await http.aclose()
        if not isinstance(answer, dict) or "sdp" not in answer:
            raise ProtocolError(f"expected an answer, got {str(answer)[:80]}")
        return answer

    def _on_channel(self, text: str | bytes) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict):
            self._queue.put_nowait(message)


class SyncWebRTCClient:
    """:class:`WebRTCClient` for blocking code: the same arguments and errors, over one code
    path. The client holds no connection; each :meth:`stream` does, on an event loop in a
    thread of its own (see :class:`SyncWebRTCStream`).

    ::

        client = SyncWebRTCClient("ws://127.0.0.1:8000/webrtc/ws")
        with client.stream("clip.mp4") as stream:         # or an iterable of BGR arrays
            for message in stream:
                if message.type == "prediction":
                    print(message.model, message.data)
        print(stream.result.data)
    """

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8000/webrtc/ws",
        *,
        models: Sequence[str] | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        verify: Verify = True,
    ) -> None:
        self._client = WebRTCClient(
            url,
            models=models,
            api_key=api_key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            verify=verify,
        )
        self.connection = self._client.connection

    @property
    def models(self) -> list[str] | None:
        return self._client.models

    @property
    def use_http(self) -> bool:
        return self._client.use_http

    def stream(
        self, source: str | Iterable[NDArray[np.uint8]], *, fps: float = 30.0, loop: bool = False
    ) -> SyncWebRTCStream:
        """A stream of ``source``, as :meth:`WebRTCClient.stream` (a plain iterable is
        advanced in a worker thread); use it as a context manager."""
        return SyncWebRTCStream(self._client.stream(source, fps=fps, loop=loop))


class SyncWebRTCStream:
    """One WebRTC session for blocking code: ``with`` opens it (the offer, then ICE and
    DTLS), iteration yields each :data:`WebRTCMessage` until the :class:`StreamResult`, and
    leaving the block closes everything, the stream's thread included. The attributes are
    the :class:`WebRTCStream`'s, which runs on that thread's event loop."""

    def __init__(self, stream: WebRTCStream) -> None:
        self._stream = stream
        self.connection = stream.connection
        self._loop: LoopThread | None = None

    @property
    def session_id(self) -> str | None:
        return self._stream.session_id

    @property
    def result(self) -> StreamResult | None:
        return self._stream.result

    @property
    def errors(self) -> list[ApiError]:
        return self._stream.errors

    @property
    def predictions(self) -> int:
        return self._stream.predictions

    def __enter__(self) -> SyncWebRTCStream:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[WebRTCMessage]:
        """Each message until the result. The async stream bounds the waits itself: it asks
        for the result when the source ends or the media connection drops, and raises
        :class:`~.errors.Timeout` when the result does not come in time."""
        return self._running().iterate(self._stream, None)

    def open(self) -> None:
        """Start the thread and the source, send the offer and wait for the connection, as
        ``async with`` a :class:`WebRTCStream` does; closed again when any of it fails."""
        if self._loop is not None:
            raise RuntimeError("this stream was opened already; make a new one")
        self._loop = LoopThread("framebroker-webrtc-stream")
        # The offer (connecting, then the answer, on every try), then ICE and DTLS.
        try:
            self._loop.run(self._stream.__aenter__(), patience(self.connection, steps=3))
        except BaseException:
            self._loop.close()  # the async stream closed itself before raising
            raise

    def end(self) -> None:
        """Ask for the final result now (the iteration then ends with it)."""
        self._running().run(self._stream.end(), patience(self.connection, retried=False))

    def close(self) -> None:
        """Stop the source, close the connection (the server then ends the session) and end
        the thread. Closing twice does nothing more."""
        loop = self._loop
        if loop is None or loop.closed:
            return
        try:
            with contextlib.suppress(Timeout):  # the loop's own closing cancels what is left
                wait = self.connection.timeout_s + _TRACK_JOIN_S + GRACE_S
                loop.run(self._stream.close(), wait)
        finally:
            loop.close()

    def _running(self) -> LoopThread:
        if self._loop is None:
            raise RuntimeError("open the stream first (with ... as stream)")
        return self._loop
