"""The tracking API: the ByteTrack HTTP server's API at ``/``, field for field.

``GET /`` lists sessions, ``POST /`` tracks one frame of boxes for the session named by the
``Session-Id`` header (created on first use; a new id is made and returned in the
``Session-Id`` response header when the client sends none), ``DELETE /`` ends a session.

A ``multipart/form-data`` ``POST /`` is the frame server instead
(:mod:`~framebroker.transports.frame_upload`): the two APIs share the path and are told
apart by content type.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..errors import InvalidInput, UnsupportedMediaType
from ..sessions import Sessions
from .box_requests import BoxReader, tracked_boxes
from .context import ServerContext
from .frame_upload import Handler, is_form
from .http import client_of, json_response

__all__ = ["TRACKING_PIPELINE", "router"]

SESSION_HEADER = "Session-Id"
TRACKING_PIPELINE: tuple[str, ...] = ("bytetrack", "annotate")
TRANSPORT = "rest"


async def _listing(sessions: Sessions) -> dict[str, Any]:
    return {
        "sessions": [info.id for info in await sessions.live()],
        "active_threads": threading.active_count(),
        "timestamp": time.time(),
    }


def _is_json(content_type: str | None) -> bool:
    return not content_type or "json" in content_type.lower()


def router(ctx: ServerContext, boxes: BoxReader, post_frame: Handler) -> APIRouter:
    """``GET/POST/DELETE /``; a multipart ``POST /`` goes to ``post_frame`` (the frame
    server's handler)."""
    api = APIRouter()
    sessions = ctx.sessions

    @api.get("/", include_in_schema=False)
    async def list_sessions() -> Response:
        return json_response(await _listing(sessions))

    @api.post("/", include_in_schema=False)
    async def track(request: Request) -> Response:
        content_type = request.headers.get("content-type")
        if is_form(content_type):
            return await post_frame(request)
        if not _is_json(content_type):
            raise UnsupportedMediaType(
                "expected Content-Type application/json (boxes to track) or "
                f"multipart/form-data (a video frame), got {content_type!r}",
                field="Content-Type",
            )
        req = await boxes.read(request)
        sid = request.headers.get(SESSION_HEADER)
        client = client_of(request)
        if sid is None:
            info = await sessions.create(
                transport=TRANSPORT, pipeline=TRACKING_PIPELINE, client=client
            )
            result = await sessions.submit(info.id, req.to_frame())
        else:
            info, result = await sessions.attach_and_submit(
                sid, req.to_frame(), transport=TRANSPORT, pipeline=TRACKING_PIPELINE, client=client
            )
        perf = [result.timings.get("bytetrack", 0.0)]
        reply: dict[str, Any] = {"tracked_boxes": tracked_boxes(req, result)}
        if req.image is not None:
            reply["annotated_image"] = result.outputs.get("annotated_image")
            perf.append(result.timings.get("annotate", 0.0))
        reply["tracker_perf"] = perf
        reply["timestamp"] = time.time()
        if result.errors:
            reply["errors"] = result.errors
        return json_response(reply, headers={SESSION_HEADER: info.id})

    @api.delete("/", include_in_schema=False)
    async def end(request: Request) -> Response:
        sid = request.headers.get(SESSION_HEADER)
        if not sid:
            raise InvalidInput(
                f"the {SESSION_HEADER} header is required to end a session", field=SESSION_HEADER
            )
        await sessions.end(sid, reason="deleted")
        return json_response(await _listing(sessions))

    return api
