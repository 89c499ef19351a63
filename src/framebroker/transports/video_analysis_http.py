"""Video analysis over HTTP: ``GET /get_session_id``, ``GET /options`` and ``POST /batch``.

``POST /batch`` takes a video as ``multipart/form-data`` (the part named ``file``, else the
first part with a file name) or as the raw body (``video/*``, ``application/octet-stream``
or no ``Content-Type``), optionally ``?processes=a,b``, and answers
``{"result": {name: answer or {"error", "code", ...}}}`` once every service and pipeline has
answered. The upload is streamed to a temporary file under the data directory as it
arrives, never held whole in memory, and refused with 413 the moment it passes
``MAX_BUFFER_SIZE`` (at once when ``Content-Length`` says so); the file is deleted when the
request ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..config import Limits
from ..errors import CapacityExceeded, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from ..video_analysis.service import VideoAnalysis
from .context import ServerContext
from .http import json_response
from .multipart import FormLimits, MultipartParser, PartData, PartEnd, PartStart, form_boundary

__all__ = ["Upload", "receive_upload", "router"]

_FILE_PART = "file"
_WRITE_BATCH = 1024 * 1024  # bytes gathered before one write in the worker pool
RunBlocking = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Upload:
    path: Path
    size: int
    filename: str
    content_type: str


class _Spool:
    """Bytes to a temporary file, written in batches off the event loop."""

    def __init__(self, directory: Path, run_blocking: RunBlocking) -> None:
        self.directory = directory
        self.run_blocking = run_blocking
        self.size = 0
        self._pending = bytearray()
        self._file: IO[bytes] | None = None
        self.path: Path | None = None

    async def open(self) -> None:
        def create() -> tuple[IO[bytes], Path]:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="batch-", suffix=".upload", dir=self.directory)
            return os.fdopen(fd, "wb"), Path(name)

        self._file, self.path = await self.run_blocking(create)

    async def write(self, data: bytes | memoryview) -> None:
        self._pending += data
        self.size += len(data)
        if len(self._pending) >= _WRITE_BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self._pending and self._file is not None:
            chunk, self._pending = bytes(self._pending), bytearray()
            await self.run_blocking(self._file.write, chunk)

    async def reset(self) -> None:
        """Forget what was written: the file starts over, empty."""
        self._pending.clear()
        self.size = 0
        fh = self._file
        if fh is not None:

            def truncate() -> None:
                fh.seek(0)
                fh.truncate()

            await self.run_blocking(truncate)

    async def close(self) -> None:
        await self.flush()
        if self._file is not None:
            fh, self._file = self._file, None
            await self.run_blocking(fh.close)

    async def discard(self) -> None:
        if self._file is not None:
            fh, self._file = self._file, None
            await self.run_blocking(fh.close)
        if self.path is not None:
            path, self.path = self.path, None
            await self.run_blocking(lambda: path.unlink(missing_ok=True))


def _check_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise PayloadTooLarge(
            f"Content-Length is not a number: {declared!r}", field="Content-Length"
        )
    if int(declared) > limit:
        raise PayloadTooLarge(
            f"upload of {declared} bytes is over the limit of {limit} bytes (MAX_BUFFER_SIZE)",
            field="file",
        )


async def _raw(request: Request, spool: _Spool, limit: int) -> None:
    async for chunk in request.stream():
        if spool.size + len(chunk) > limit:
            raise PayloadTooLarge(
                f"upload is over the limit of {limit} bytes (MAX_BUFFER_SIZE)", field="file"
            )
        await spool.write(chunk)


async def _multipart(
    request: Request, spool: _Spool, limit: int, limits: Limits
) -> tuple[str, str]:
    parser = MultipartParser(
        form_boundary(request.headers.get("content-type")),
        FormLimits(
            max_body_bytes=limit,
            max_parts=limits.max_form_parts,
            max_header_bytes=limits.max_part_header_bytes,
        ),
    )
    # The part named 'file' wins; until one comes, the first part with a file name is kept.
    chosen: PartStart | None = None
    writing = False
    async for chunk in request.stream():
        parser.receive_data(chunk)
        for event in parser.events_received():
            if isinstance(event, PartStart):
                named = event.name == _FILE_PART and (chosen is None or chosen.name != _FILE_PART)
                first = chosen is None and event.filename is not None
                writing = named or first
                if writing:
                    if chosen is not None:
                        await spool.reset()
                    chosen = event
            elif isinstance(event, PartData):
                if writing:
                    await spool.write(event.data)
            elif isinstance(event, PartEnd):
                writing = False
    parser.receive_eof()
    if chosen is None:
        raise InvalidInput(
            f"file: expected a multipart part named {_FILE_PART!r} (or any part with a file "
            "name) holding the video",
            field="file",
        )
    return chosen.filename or "video.mp4", chosen.content_type or "application/octet-stream"


@contextlib.asynccontextmanager
async def receive_upload(
    request: Request, *, limit: int, limits: Limits, directory: Path, run_blocking: RunBlocking
) -> AsyncIterator[Upload]:
    """Stream the request's video to a temporary file; yields it, deletes it afterwards.

    Raises :class:`PayloadTooLarge` past ``limit`` bytes, :class:`UnsupportedMediaType` for a
    body that is neither a form nor a video, :class:`InvalidInput` for a form without the
    video or an empty one.
    """
    _check_declared(request, limit)
    content_type = (request.headers.get("content-type") or "").lower()
    is_form = content_type.startswith("multipart/form-data")
    raw_types = ("video/", "application/octet-stream")
    if content_type and not is_form and not content_type.startswith(raw_types):
        raise UnsupportedMediaType(
            "expected multipart/form-data with a 'file' part, or a video/* or "
            f"application/octet-stream body, got {content_type or 'no Content-Type'!r}",
            field="Content-Type",
        )
    spool = _Spool(directory, run_blocking)
    await spool.open()
    try:
        if is_form:
            filename, part_type = await _multipart(request, spool, limit, limits)
        else:
            await _raw(request, spool, limit)
            filename = "video.mp4"
            part_type = content_type.split(";")[0].strip() or "application/octet-stream"
        await spool.close()
        if spool.size == 0:
            raise InvalidInput("file: the upload is empty", field="file")
        assert spool.path is not None
        yield Upload(spool.path, spool.size, filename, part_type)
    finally:
        await spool.discard()


def _processes(request: Request) -> list[str] | None:
    raw = request.query_params.get("processes")
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


def router(ctx: ServerContext, analysis: VideoAnalysis, limits: Limits, uploads: Path) -> APIRouter:
    """``/get_session_id``, ``/options`` and ``/batch``; uploads are spooled in ``uploads``."""
    api = APIRouter(tags=["video analysis"])
    running = 0  # uploads being received or analysed: each may hold MAX_BUFFER_SIZE of disk

    @api.get("/get_session_id", summary="A new session id for a Socket.IO connection")
    async def get_session_id() -> Response:
        return json_response({"session_id": analysis.ids.issue()})

    @api.get("/options", summary="The services and pipelines a client may ask for")
    async def options() -> Response:
        return json_response(analysis.options())

    @api.post("/batch", summary="Send a whole video to every service and pipeline")
    async def batch(request: Request) -> Response:
        nonlocal running
        names = analysis.select(_processes(request))
        limit = analysis.settings.max_concurrent_batches
        if running >= limit:
            raise CapacityExceeded(f"{running} uploads are being handled, the limit is {limit}")
        running += 1
        try:
            async with receive_upload(
                request,
                limit=analysis.settings.max_buffer_size,
                limits=limits,
                directory=uploads,
                run_blocking=ctx.offload,
            ) as upload:
                result = await analysis.analyse_upload(
                    upload.path,
                    names,
                    filename=upload.filename,
                    content_type=upload.content_type,
                )
        finally:
            running -= 1
        return json_response({"result": result})

    return api
