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
from ..runtime.broker import Broker
from . import frame_upload
from .box_requests import read_tracking_request, tracked_boxes
from .context import ServerContext
from .http import client_of, json_response

__all__ = ["TRACKING_PIPELINE", "router"]

SESSION_HEADER = "Session-Id"
TRACKING_PIPELINE: tuple[str, ...] = ("bytetrack", "annotate")
TRANSPORT = "rest"


def _listing(broker: Broker) -> dict[str, Any]:
    return {
        "sessions": broker.manager.ids(),
        "active_threads": threading.active_count(),
        "timestamp": time.time(),
    }


def _is_json(content_type: str | None) -> bool:
    return not content_type or "json" in content_type.lower()


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter()
    broker = ctx.broker
    post_frame = frame_upload.frame_handler(ctx)

    @api.get("/", include_in_schema=False)
    async def list_sessions() -> Response:
        return json_response(_listing(broker))

    @api.post("/", include_in_schema=False)
    async def track(request: Request) -> Response:
        content_type = request.headers.get("content-type")
        if frame_upload.is_form(content_type):
            return await post_frame(request)
        if not _is_json(content_type):
            raise UnsupportedMediaType(
                "expected Content-Type application/json (boxes to track) or "
                f"multipart/form-data (a video frame), got {content_type!r}",
                field="Content-Type",
            )
        req = await read_tracking_request(request, ctx)
        sid = request.headers.get(SESSION_HEADER)
        client = client_of(request)
        if sid is None:
            session = await broker.create_session(
                transport=TRANSPORT, pipeline=TRACKING_PIPELINE, client=client
            )
        else:
            session = await broker.attach(
                sid, transport=TRANSPORT, pipeline=TRACKING_PIPELINE, client=client
            )
        result = await broker.submit(session, req.to_frame())
        perf = [result.timings.get("bytetrack", 0.0)]
        reply: dict[str, Any] = {"tracked_boxes": tracked_boxes(req, result)}
        if req.image is not None:
            reply["annotated_image"] = result.outputs.get("annotated_image")
            perf.append(result.timings.get("annotate", 0.0))
        reply["tracker_perf"] = perf
        reply["timestamp"] = time.time()
        if result.errors:
            reply["errors"] = result.errors
        return json_response(reply, headers={SESSION_HEADER: session.id})

    @api.delete("/", include_in_schema=False)
    async def end(request: Request) -> Response:
        sid = request.headers.get(SESSION_HEADER)
        if not sid:
            raise InvalidInput(
                f"the {SESSION_HEADER} header is required to end a session", field=SESSION_HEADER
            )
        await broker.end_session(sid, reason="deleted")
        return json_response(_listing(broker))

    return api
