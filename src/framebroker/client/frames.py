"""The frame server for plugins (multipart ``POST /``): a picture and its ``frame``
metadata in, the processors' merged reply out.

::

    from framebroker.client import FramesClient

    with FramesClient("http://127.0.0.1:8000/") as frames:
        reply = frames.post(bgr_array, {"timestamp": 12.5, "frame_no": 300})
        reply["framebroker"]["ran"]                     # which processors ran

A BGR array is sent raw (``height x width x 3`` bytes, straight from the array's memory;
its ``width`` and ``height`` are added to ``frame`` unless it names them); JPEG or PNG
bytes are sent as they are. The reply is every field of ``frame`` unchanged plus one entry
per processor output and the run report under ``"framebroker"``.

:class:`FramesClient` keeps one HTTP/1.1 connection alive across frames
(:class:`~.poster.FramePoster`, which never copies the image into a body): it is what
``framebroker extract-frames`` sends with. :class:`AsyncFramesClient` does the same over
httpx for asyncio code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray

from .connection import Backoff, Connection, Verify, merged_headers
from .errors import ClientError, ProtocolError, api_error
from .http import transport_error
from .poster import FramePoster, Reply, multipart_envelope, new_boundary

__all__ = ["AsyncFramesClient", "FramesClient", "frame_json", "image_type_of", "read_reply"]

FrameImage = NDArray[np.uint8] | bytes | bytearray | memoryview
Metadata = Mapping[str, Any] | bytes | None


def _declares_size(frame: Mapping[str, Any]) -> bool:
    source = frame.get("source")
    return ("width" in frame or "height" in frame) or (
        isinstance(source, Mapping) and ("width" in source or "height" in source)
    )


def frame_json(frame: Metadata, image: FrameImage) -> bytes:
    """The ``frame`` part: ``frame`` as JSON (bytes are taken as JSON already), with an
    array's ``width`` and ``height`` added when it declares no size. Raises ``ValueError``
    for an array that is not ``uint8`` (H, W, 3)."""
    if isinstance(image, np.ndarray) and (
        image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3
    ):
        raise ValueError(
            f"image must be a BGR uint8 array of shape (H, W, 3), got {image.dtype} {image.shape}"
        )
    if isinstance(frame, bytes | bytearray | memoryview):
        return bytes(frame)
    document = dict(frame or {})
    if isinstance(image, np.ndarray) and not _declares_size(document):
        document["width"], document["height"] = int(image.shape[1]), int(image.shape[0])
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def image_type_of(image: FrameImage) -> str:
    """The ``image`` part's content type: JPEG and PNG by their signature, else raw."""
    if not isinstance(image, np.ndarray):
        head = bytes(memoryview(image)[:8])
        if head.startswith(b"\xff\xd8\xff"):
            return "image/jpeg"
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return "image/png"
    return "application/octet-stream"


def read_reply(reply: Reply) -> dict[str, Any]:
    """The reply's JSON object; an :class:`~.errors.ApiError` for any status but 200, a
    :class:`~.errors.ProtocolError` for a 200 that is not a JSON object."""
    if not reply.ok:
        try:
            body = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            body = None
        raise api_error(
            reply.status,
            body,
            reason=reply.reason,
            retry_after=reply.retry_after,
            text=reply.body[:1000].decode("utf-8", "replace"),
        )
    try:
        document = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        raise ProtocolError(
            f"HTTP 200 but the reply is not JSON ({reply.content_type or 'no type'})"
        ) from None
    if not isinstance(document, dict):
        raise ProtocolError(
            f"HTTP 200 but the reply is JSON {type(document).__name__}, not an object"
        )
    return document


def _headers(
    connection: Connection, session_id: str | None, extra: Mapping[str, str] | None
) -> dict[str, str]:
    return merged_headers(
        connection.headers(), {"Session-Id": session_id} if session_id else None, extra
    )


class FramesClient:
    """Posts frames to a frame server over one kept-alive connection (see the module).

    ``url`` is the frame server (``http://HOST:8000/``, or a plugin rig's own); ``headers``
    go with every frame, ``session_id`` as ``Session-Id`` (frames of one stream share a
    session; without it the server keys them by ``frame["source"]``). The other keywords
    are every client's (see :class:`~framebroker.client.TrackingClient`). A refused frame
    raises an :class:`~.errors.ApiError`; one refused with 429 or 503 is tried again first.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000/",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        verify: Verify = True,
        headers: Mapping[str, str] | None = None,
        session_id: str | None = None,
    ) -> None:
        self.connection = Connection(url, api_key, timeout, retries, backoff or Backoff(), verify)
        self._poster = FramePoster(
            url,
            headers=_headers(self.connection, session_id, headers),
            timeout=timeout,
            ssl_context=self.connection.ssl_context(),
        )

    def __enter__(self) -> FramesClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connections(self) -> int:
        """TCP connections opened so far (1 for a whole run, unless the server closed one)."""
        return self._poster.connections

    def connect(self) -> None:
        """Connect now, so that a wrong URL fails before any work; raises
        :class:`~.errors.ConnectionFailed`."""
        self._poster.connect()

    def post(self, image: FrameImage, frame: Metadata = None) -> dict[str, Any]:
        """Post one frame and return the server's merged reply (see the module)."""
        document = frame_json(frame, image)
        image_type = image_type_of(image)
        attempt = 0
        while True:
            try:
                return read_reply(self._poster.post(document, image, image_type=image_type))
            except ClientError as exc:
                delay = self.connection.retry_delay(exc, attempt)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._poster.close()


class AsyncFramesClient:
    """:class:`FramesClient` for asyncio, over httpx (the image is streamed, not copied)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000/",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        verify: Verify = True,
        headers: Mapping[str, str] | None = None,
        session_id: str | None = None,
    ) -> None:
        self.connection = Connection(url, api_key, timeout, retries, backoff or Backoff(), verify)
        self._boundary = new_boundary()
        self._client = httpx.AsyncClient(
            headers=_headers(self.connection, session_id, headers),
            timeout=timeout,
            verify=self.connection.ssl_context() or True,
        )

    async def __aenter__(self) -> AsyncFramesClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def post(self, image: FrameImage, frame: Metadata = None) -> dict[str, Any]:
        document = frame_json(frame, image)
        image_type = image_type_of(image)
        attempt = 0
        while True:
            try:
                return read_reply(await self._send(document, image, image_type))
            except ClientError as exc:
                delay = self.connection.retry_delay(exc, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _send(self, document: bytes, image: FrameImage, image_type: str) -> Reply:
        data = (
            np.ascontiguousarray(image).data if isinstance(image, np.ndarray) else memoryview(image)
        ).cast("B")
        if not data.nbytes:
            raise ValueError("image must hold at least one byte, got none")
        prefix, trailer = multipart_envelope(self._boundary, document, image_type=image_type)

        async def body() -> AsyncIterator[bytes]:
            yield prefix
            yield data  # type: ignore[misc]  # httpx writes any buffer; no copy into bytes
            yield trailer

        headers = {
            "Content-Type": "multipart/form-data; boundary=" + self._boundary.decode(),
            "Content-Length": str(len(prefix) + data.nbytes + len(trailer)),
        }
        url = self.connection.url
        try:
            response = await self._client.post(url, content=body(), headers=headers)
        except httpx.TransportError as exc:
            raise transport_error(exc, url) from None
        return Reply(
            response.status_code,
            response.reason_phrase,
            response.headers.get("content-type", ""),
            response.content,
            response.headers.get("retry-after"),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
