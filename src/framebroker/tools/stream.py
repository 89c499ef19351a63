"""``framebroker stream VIDEO URL``: the WebRTC model broker's mock client, a video file
played as a camera.

This is :class:`~framebroker.client.WebRTCClient` on the command line. The file (or an
``rtsp://`` URL, or a camera device) is decoded in real time and sent as a WebRTC video
track, with a data channel for predictions. Signaling goes over the WebSocket at ``URL``
(``ws://host:8000/webrtc/ws``, or the original API's ``ws://host:8084``), or with
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
import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from ..client.errors import ApiError, ClientError, ConnectionFailed
from ..client.webrtc import SignalingError, WebRTCClient, WebRTCStream
from ..errors import InvalidInput
from ..media.sources import SourceError

__all__ = ["StreamError", "StreamOptions", "run", "stream"]


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


def _checked_url(options: StreamOptions) -> str:
    parts = urlsplit(options.url)
    if options.use_http:
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise StreamError(
                f"expected an http:// or https:// URL with --use-http, got {options.url!r}", 2
            )
    elif parts.scheme in ("http", "https") and parts.netloc:
        raise StreamError(
            f"{options.url!r} is an HTTP URL: add --use-http to POST the offer to it, or give "
            "the signaling WebSocket (ws://HOST:8000/webrtc/ws)",
            2,
        )
    elif parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise StreamError(f"expected a ws:// or wss:// URL, got {options.url!r}", 2)
    return options.url


def _print(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":")) + "\n")
    out.flush()


async def _start(session: WebRTCStream, options: StreamOptions) -> None:
    """Offer and answer; every failure here is the exit status 2 kind."""
    try:
        await session.open()
    except (SourceError, InvalidInput) as exc:
        raise StreamError(exc.message, 2) from None
    except ApiError as exc:
        reason = exc.body.get("error") or exc.message
        raise StreamError(f"the server refused the offer: {reason} ({exc.status})", 2) from None
    except ConnectionFailed as exc:
        if options.use_http:
            raise StreamError(f"cannot post the offer to {options.url}: {exc.message}", 2) from None
        raise StreamError(exc.message, 2) from None
    except ClientError as exc:
        raise StreamError(exc.message, 2) from None


async def stream(options: StreamOptions, out: TextIO) -> dict[str, Any]:
    """Stream ``options.video`` and return the server's final result message.

    Raises :class:`StreamError` (with the exit status to use) when it cannot.
    """
    client = WebRTCClient(
        _checked_url(options),
        timeout=options.timeout_s,
        retries=0,
        verify=not options.insecure,
    )
    session = client.stream(options.video, loop=options.loop)
    first_error: ApiError | None = None
    try:
        await _start(session, options)
        _print(out, {"type": "answer", "session_id": session.session_id})
        try:
            await session.connected()
            async for message in session:
                _print(out, message.raw)
                if isinstance(message, SignalingError) and first_error is None:
                    first_error = message.error
        except ClientError as exc:
            raise StreamError(exc.message) from None
    finally:
        await session.close()
    if session.track.error is not None:
        raise StreamError(f"the video source failed: {session.track.error}")
    if session.result is None:
        reason = first_error.body.get("error") if first_error is not None else None
        raise StreamError(f"the server reported: {reason or 'no result'}")
    return session.result.raw


def run(options: StreamOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run :func:`stream` to completion; returns the exit status (standard streams by
    default)."""
    try:
        asyncio.run(stream(options, out if out is not None else sys.stdout))
    except StreamError as exc:
        print(f"framebroker stream: {exc.message}", file=err if err is not None else sys.stderr)
        return exc.status
    return 0
