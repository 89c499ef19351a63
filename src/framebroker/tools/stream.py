"""``framebroker stream VIDEO URL``: the WebRTC model broker's mock client, a video file
played as a camera.

The file (or an ``rtsp://`` URL, or a camera device) is decoded in real time and sent as a
WebRTC video track, with a data channel for predictions. Signaling goes over the WebSocket
at ``URL`` (``ws://host:8000/webrtc/ws``, or the original API's ``ws://host:8084``), or with
``use_http`` as a ``POST`` of the offer to ``URL`` (``http://host:8000/offer``, or the
original API's ``http://host:8083``, to which ``/offer`` is added).

Every message from the server is printed to ``out`` as one line of JSON as it arrives: first
``{"type": "answer", "session_id": ...}`` (the answer without its SDP), then predictions,
then the final ``result``. When the file ends (or on Ctrl-C) the client asks
for the result (``{"type": "end"}`` on the socket, or on the data channel over HTTP),
prints it and disconnects.

Exit status: 0 the stream ran and the result came; 1 the connection failed or the server
reported an error after the answer; 2 the source, the URL or the offer was refused before
streaming began. Failures are one line on ``err``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

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

from ..errors import InvalidInput
from ..media.convert import reformat
from ..media.reader import VideoSource
from ..media.sources import SourceError

__all__ = ["SourceTrack", "StreamError", "StreamOptions", "run", "stream"]

log = logging.getLogger(__name__)

_CLOCK = 90_000
_TIME_BASE = Fraction(1, _CLOCK)


class StreamError(Exception):
    """The stream could not run; ``status`` is the exit status to report it with."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """``timeout_s`` bounds connecting, the answer, ICE, and waiting for the result."""

    video: str
    url: str
    use_http: bool = False
    loop: bool = False
    timeout_s: float = 30.0
    insecure: bool = False


class SourceTrack(VideoStreamTrack):
    """A video source played in real time as a WebRTC track.

    Frames are decoded in the source's reader thread (:class:`~framebroker.media.reader.
    VideoSource`); the track keeps only the newest one, so a slow encoder skips frames
    rather than falling behind. The track ends when the source does.
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
        # In the encoder's own format already: aiortc would otherwise convert it with a new
        # swscale context, and its threads, for every frame (see media.convert).
        frame = reformat(av.VideoFrame.from_ndarray(image, format="bgr24"), format="yuv420p")
        frame.pts = round(pts_s * _CLOCK)
        frame.time_base = _TIME_BASE
        self.sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop(timeout=0)
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the reader thread to finish (call off the event loop)."""
        return self._source.wait(timeout)


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        raise StreamError(
            f"{url!r} is an HTTP URL: add --use-http to POST the offer to it, or give the "
            "signaling WebSocket (ws://HOST:8000/webrtc/ws)",
            2,
        )
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise StreamError(f"expected a ws:// or wss:// URL, got {url!r}", 2)
    return urlunsplit(parts._replace(path=parts.path or "/"))


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StreamError(f"expected an http:// or https:// URL with --use-http, got {url!r}", 2)
    path = parts.path if parts.path not in ("", "/") else "/offer"
    return urlunsplit(parts._replace(path=path))


class _Printer:
    """Prints server messages as JSON lines and remembers the result and the first error."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.predictions = 0
        self.got_result = asyncio.Event()

    def answered(self, session_id: object) -> None:
        """Print the answer's session id (not its SDP): where to find the session later."""
        self._print({"type": "answer", "session_id": session_id})

    def _print(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message, separators=(",", ":")) + "\n")
        self.out.flush()

    def handle(self, text: str | bytes) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("server sent something that is not JSON: %r", text[:80])
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "prediction":
            self.predictions += 1
        elif kind == "result":
            self.result = message
            self.got_result.set()
        elif kind == "error" and self.error is None:
            self.error = message.get("data") if isinstance(message.get("data"), dict) else {}
        self._print(message)


async def _wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    connected = asyncio.Event()

    def check() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            connected.set()

    pc.on("connectionstatechange", check)
    check()
    try:
        await asyncio.wait_for(connected.wait(), timeout)
    except TimeoutError:
        raise StreamError(f"the peer connection did not connect within {timeout:g} s") from None
    if pc.connectionState != "connected":
        raise StreamError(f"the peer connection {pc.connectionState} (ICE or DTLS failed)")


async def _until_done(track: SourceTrack, pc: RTCPeerConnection, printer: _Printer) -> None:
    """Wait for the source to end, the connection to drop, or the server to end it."""
    while not track.ended and pc.connectionState == "connected" and not printer.got_result.is_set():
        await asyncio.sleep(0.1)


async def _offer(pc: RTCPeerConnection) -> dict[str, str]:
    await pc.setLocalDescription(await pc.createOffer())
    desc = pc.localDescription
    return {"sdp": desc.sdp, "type": desc.type}


def _refused(error: dict[str, Any]) -> StreamError:
    return StreamError(
        f"the server refused the offer: {error.get('message') or error.get('error')} "
        f"({error.get('code')})",
        2,
    )


async def _over_websocket(
    options: StreamOptions,
    pc: RTCPeerConnection,
    track: SourceTrack,
    printer: _Printer,
) -> None:
    url = _ws_url(options.url)
    context = _ssl_context(options) if url.startswith("wss:") else None
    try:
        ws = await asyncio.wait_for(
            websockets.connect(url, ssl=context, max_size=2**22), options.timeout_s
        )
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        raise StreamError(f"cannot connect to {url}: {exc or type(exc).__name__}", 2) from None
    async with ws:
        await ws.send(json.dumps({"type": "offer", "data": await _offer(pc)}))
        try:
            answer = await asyncio.wait_for(_read_answer(ws, printer), options.timeout_s)
        except TimeoutError:
            raise StreamError(f"no answer within {options.timeout_s:g} s", 2) from None
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        reader = asyncio.create_task(_read_all(ws, printer))
        try:
            await _wait_connected(pc, options.timeout_s)
            await _until_done(track, pc, printer)
            if not printer.got_result.is_set():
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(json.dumps({"type": "end"}))
                await _wait_result(printer, options.timeout_s)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await reader


async def _read_answer(ws: websockets.ClientConnection, printer: _Printer) -> dict[str, str]:
    while True:
        message = json.loads(await ws.recv())
        if message.get("type") == "answer":
            data = message["data"]
            printer.answered(message.get("session_id"))
            return {"sdp": data["sdp"], "type": data["type"]}
        if message.get("type") == "error":
            raise _refused(message.get("data") or {})


async def _read_all(ws: websockets.ClientConnection, printer: _Printer) -> None:
    async for text in ws:
        printer.handle(text)


async def _wait_result(printer: _Printer, timeout: float) -> None:
    try:
        await asyncio.wait_for(printer.got_result.wait(), timeout)
    except TimeoutError:
        raise StreamError(f"no final result within {timeout:g} s") from None


async def _over_http(
    options: StreamOptions,
    pc: RTCPeerConnection,
    track: SourceTrack,
    printer: _Printer,
    channel: RTCDataChannel,
) -> None:
    url = _http_url(options.url)
    body = json.dumps(await _offer(pc)).encode()
    loop = asyncio.get_running_loop()
    status, reply = await loop.run_in_executor(None, _post_json, url, body, options)
    if status != 200:
        try:
            refusal = json.loads(reply)
        except ValueError:
            refusal = {"error": reply[:200].decode(errors="replace")}
        message = refusal.get("error") or refusal.get("message")
        raise _refused({"message": message, "code": status})
    answer = json.loads(reply)
    printer.answered(answer.get("session_id"))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    await _wait_connected(pc, options.timeout_s)
    await _until_done(track, pc, printer)
    if not printer.got_result.is_set() and channel.readyState == "open":
        channel.send(json.dumps({"type": "end"}))
    await _wait_result(printer, options.timeout_s)


def _post_json(url: str, body: bytes, options: StreamOptions) -> tuple[int, bytes]:
    """POST ``body`` as JSON; returns the status and the reply (stdlib: no extra client)."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    context = _ssl_context(options) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=options.timeout_s, context=context) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except (OSError, urllib.error.URLError) as exc:
        raise StreamError(f"cannot post the offer to {url}: {exc}", 2) from None


def _ssl_context(options: StreamOptions) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def stream(options: StreamOptions, out: TextIO) -> dict[str, Any]:
    """Stream ``options.video`` and return the server's final result message.

    Raises :class:`StreamError` (with the exit status to use) when it cannot.
    """
    track = SourceTrack(options.video, loop=options.loop)
    try:
        track.open()
    except (SourceError, InvalidInput) as exc:
        raise StreamError(exc.message, 2) from None
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    printer = _Printer(out)
    try:
        pc.addTrack(track)
        channel = pc.createDataChannel("predictions")
        if options.use_http:
            channel.on("message", printer.handle)
            await _over_http(options, pc, track, printer, channel)
        else:
            await _over_websocket(options, pc, track, printer)
    finally:
        track.stop()
        await pc.close()
        await asyncio.get_running_loop().run_in_executor(None, track.join, 5.0)
    if track.error is not None:
        raise StreamError(f"the video source failed: {track.error}")
    if printer.error is not None and printer.result is None:
        raise StreamError(f"the server reported: {printer.error.get('message')}")
    assert printer.result is not None
    return printer.result


def run(options: StreamOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run :func:`stream` to completion; returns the exit status (standard streams by
    default)."""
    try:
        asyncio.run(stream(options, out if out is not None else sys.stdout))
    except StreamError as exc:
        print(f"framebroker stream: {exc.message}", file=err if err is not None else sys.stderr)
        return exc.status
    return 0
