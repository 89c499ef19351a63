"""The video sources a server reads itself (``serve --source``), as resources: ``/v1/sources``.

``GET /v1/sources`` lists them with their state (``running``, ``stopped``, ``ended``: a file
came to its end, ``failed``: its reader gave up) and why a source is not running;
In a cluster (``serve --cluster``) a source runs on one node at a time, the one that holds
its lease; ``node`` names it, and the other nodes configured with it say ``standby`` (they
take it over if that node stops); a stop or start asked of any node is done by that one.
``starting``: this node holds it and is starting it.
``POST /v1/sources/{name}/stop`` stops one (its session ends, its counts are kept) and
``POST /v1/sources/{name}/start`` opens it again, the day's counts carrying on. Ending a
source's session from outside (``DELETE /v1/sessions/{name}``, the console) stops it the
same way, and it can be started again here.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

from ..people.feed import Sources
from .http import ErrorOut, json_response

__all__ = ["router"]


class SourceOut(BaseModel):
    name: str
    uri: str = Field(description="the source, with any password in it replaced by ***")
    state: Literal["running", "stopped", "ended", "failed", "starting", "standby"]
    reason: str | None = Field(
        None,
        description="why it is not running: stopped, session_ended, finished, or the error",
    )
    node: str | None = Field(
        None,
        description="in a cluster, the node that runs it (null while none does, and "
        "without a cluster)",
    )
    session_id: str | None = Field(None, description="the session it feeds")
    frames_read: int
    frames_submitted: int
    frames_failed: int


class SourceListOut(BaseModel):
    sources: list[SourceOut]


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no source of that name"},
}


def router(sources: Sources) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["sources"], responses=_ERRORS)

    @api.get("/sources", response_model=SourceListOut)
    async def list_sources() -> Response:
        """The server's video sources and their state."""
        return json_response({"sources": [feed.describe() for feed in sources]})

    @api.get("/sources/{name}", response_model=SourceOut)
    async def get_source(name: str) -> Response:
        """One source and its state."""
        return json_response(sources.get(name).describe())

    @api.post("/sources/{name}/stop", response_model=SourceOut)
    async def stop_source(name: str) -> Response:
        """Stop reading the source and end its session (idempotent); in a cluster, on the
        node that runs it."""
        return json_response(await sources.act(name, "stop"))

    @api.post(
        "/sources/{name}/start",
        response_model=SourceOut,
        responses={
            400: {"model": ErrorOut, "description": "the source cannot be opened"},
            409: {"model": ErrorOut, "description": "another node of the cluster runs it"},
        },
    )
    async def start_source(name: str) -> Response:
        """Open the source again and feed a new session from it (idempotent); in a
        cluster, on the node that holds it."""
        return json_response(await sources.act(name, "start"))

    return api
