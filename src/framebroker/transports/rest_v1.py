"""The versioned resource API: ``/v1/sessions``, ``/v1/sessions/{id}``, ``.../frames``.

Everything the tracking API does, with resources, status codes and an OpenAPI document that
tools can generate clients from. Frame bodies are validated by the same parser as the tracking API
(not by pydantic) so both APIs give the same answers to the same mistakes; the pydantic
models below document the shapes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ..core.detections import MAX_CLASS_ID, MAX_COORDINATE
from ..errors import SessionNotFound
from ..sessions import FrameOut as Outcome
from ..sessions import SessionInfo
from .box_requests import BOX_FORMAT_HEADER, BoxReader, TrackingRequest, tracked_boxes
from .context import ServerContext
from .http import ErrorOut, client_of, json_response, require_json

__all__ = ["router"]

TRANSPORT = "rest-v1"
DEFAULT_PIPELINE: tuple[str, ...] = ("bytetrack", "annotate")
FRAME_FIELDS = ("boxes", "box_format", "image")


class ProcessorSpecIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="registered name or module:attr; other keys are parameters")


class SessionCreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline: list[str | ProcessorSpecIn] | None = Field(
        None,
        description="processors in order; default bytetrack then annotate",
        examples=[["bytetrack", "annotate"], [{"name": "bytetrack", "track_thresh": 0.6}]],
    )


class SessionOut(BaseModel):
    id: str
    state: Literal["active", "ended"]
    transport: str | None = None
    pipeline: list[str] = []
    settings: list[dict[str, Any]] = Field(
        [],
        description="what each processor runs with: its name, every option (defaults filled "
        "in) and the spec's rate/enabled/ends_stage",
    )
    created_at: float | None = None
    stats: dict[str, Any] = {}
    summary: dict[str, Any] | None = None
    node: str | None = Field(
        None, description="in a cluster, the node that runs the session (absent on one server)"
    )


class SessionListOut(BaseModel):
    sessions: list[SessionOut]


Coordinate = Annotated[float, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE)]
BoxRow = tuple[
    Coordinate,
    Coordinate,
    Coordinate,
    Coordinate,
    Annotated[float, Field(ge=0, le=100)],
    Annotated[int, Field(ge=0, le=MAX_CLASS_ID)],
]


class FrameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    boxes: list[BoxRow] = Field(
        description="rows [a, b, c, d, score, class]; scores above 1 are percents; an xyxy "
        "box needs c > a and d > b, the others a width c > 0 and a height d > 0",
        examples=[[[20, 23, 12, 24, 89, 0], [12, 34, 45, 56, 78, 1]]],
    )
    box_format: Literal["xyxy", "xywh", "cxcywh"] | None = Field(
        None, description="how a, b, c, d describe a box (header Box-Format wins)"
    )
    image: str | None = Field(None, description="base64 JPEG or PNG; asks for annotated_image")


class TrackOut(BaseModel):
    track_id: int
    row_index: int = Field(description="position of the detection in the request's boxes")
    box: list[float] = Field(description="the detection's box in the request's box format")
    score: float
    class_id: int


class FrameOut(BaseModel):
    session_id: str
    frame_index: int
    tracks: list[TrackOut]
    tracked_boxes: list[list[float]]
    annotated_image: str | None = None
    timings: dict[str, float] = Field(description="seconds per processor that ran")
    outputs: dict[str, Any] = {}
    errors: list[dict[str, str]] = []


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "invalid input"},
    404: {"model": ErrorOut, "description": "no such session"},
    413: {"model": ErrorOut, "description": "over a size limit"},
    429: {
        "model": ErrorOut,
        "description": "the client holds limits.max_sessions_per_client sessions, or the "
        "session sends over limits.max_fps_per_session (Retry-After says when to retry)",
    },
    503: {
        "model": ErrorOut,
        "description": "server at capacity (capacity_exceeded), or its database cannot be "
        "reached now (store_unavailable: nothing was changed, retry)",
    },
}
_NOT_JSON: dict[int | str, dict[str, Any]] = {
    415: {"model": ErrorOut, "description": "the body was not sent as application/json"},
}


def _session_out(info: SessionInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": info.id,
        "state": info.state,
        "transport": info.transport,
        "pipeline": info.pipeline,
        "settings": info.settings,
        "created_at": info.created_at,
        "stats": info.stats,
    }
    if info.state == "ended":
        out["summary"] = info.summary
    if info.node is not None:
        out["node"] = info.node
    return out


def _frame_out(req: TrackingRequest, result: Outcome) -> dict[str, Any]:
    outputs = dict(result.outputs)
    annotated = outputs.pop("annotated_image", None)
    dets = result.detections
    tracks = []
    if dets is not None and len(dets):
        dets = dets.take(dets.track_id >= 0)  # rows no confirmed track owns are left out
        boxes = dets.boxes(req.box_format).tolist()
        for i, tid, box, score, cls in zip(
            dets.index.tolist(),
            dets.track_id.tolist(),
            boxes,
            dets.score.tolist(),
            dets.class_id.tolist(),
            strict=True,
        ):
            tracks.append(
                {"track_id": tid, "row_index": i, "box": box, "score": score, "class_id": cls}
            )
    return {
        "session_id": result.session_id,
        "frame_index": result.index,
        "tracks": tracks,
        "tracked_boxes": tracked_boxes(req, result),
        "annotated_image": annotated if req.image is not None else None,
        "timings": result.timings,
        "outputs": outputs,
        "errors": result.errors,
    }


def router(ctx: ServerContext, boxes: BoxReader) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["sessions"], responses=_ERRORS)
    sessions = ctx.sessions

    @api.post(
        "/sessions",
        status_code=201,
        response_model=SessionOut,
        responses=_NOT_JSON,
        dependencies=[Depends(require_json)],
    )
    async def create_session(request: Request, body: SessionCreateIn | None = None) -> Response:
        """Start a session; the server makes its id."""
        pipeline = None
        if body is not None and body.pipeline is not None:
            pipeline = [p if isinstance(p, str) else p.model_dump() for p in body.pipeline]
            sessions.check_pipeline(pipeline, client=True)
        info = await sessions.create(
            transport=TRANSPORT, pipeline=pipeline or DEFAULT_PIPELINE, client=client_of(request)
        )
        return json_response(_session_out(info), 201, {"Location": f"/v1/sessions/{info.id}"})

    @api.get("/sessions", response_model=SessionListOut)
    async def list_sessions() -> Response:
        """Live sessions on this server."""
        return json_response({"sessions": [_session_out(s) for s in await sessions.live()]})

    @api.get("/sessions/{session_id}", response_model=SessionOut)
    async def get_session(session_id: str) -> Response:
        """A live session, or the stored record of an ended one."""
        return json_response(_session_out(await sessions.info(session_id)))

    @api.delete("/sessions/{session_id}", response_model=SessionOut)
    async def end_session(session_id: str) -> Response:
        """End a session: every processor's ``end`` runs and the summary is stored."""
        info = await sessions.info(session_id)
        if info.state != "active":
            raise SessionNotFound(session_id, field="session_id")
        summary = await sessions.end(session_id, reason="deleted")
        return json_response(
            {
                "id": summary.id,
                "state": "ended",
                "transport": summary.transport,
                "pipeline": summary.pipeline,
                "created_at": summary.created_at,
                "stats": summary.stats,
                "summary": summary.to_dict(),
            }
        )

    @api.post(
        "/sessions/{session_id}/frames",
        response_model=FrameOut,
        responses=_NOT_JSON,
        openapi_extra={
            "parameters": [
                {
                    "name": BOX_FORMAT_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "how a, b, c, d describe a box; wins over box_format",
                    "schema": {"type": "string", "enum": ["xyxy", "xywh", "cxcywh"]},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": FrameIn.model_json_schema()}},
            },
        },
    )
    async def post_frame(session_id: str, request: Request) -> Response:
        """Track one frame of boxes; with an image, also get it back annotated.

        A session suspended by a server restart resumes here, with its tracks."""
        require_json(request)
        req = await boxes.read(request, allowed_fields=FRAME_FIELDS)
        client = client_of(request)
        _, result = await sessions.attach_and_submit(
            session_id, req.to_frame(), transport=TRANSPORT, client=client, create=False
        )
        return json_response(_frame_out(req, result))

    return api
