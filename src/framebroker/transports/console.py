"""The web console: the static pages at ``/ui/`` and the little JSON they read.

The pages (``framebroker/ui/``: overview, live, faces, camera) are plain HTML, CSS and one
small JavaScript module each; nothing is built at install and nothing comes from another
origin, which the Content-Security-Policy sent with every page enforces. They talk to the
APIs every other client uses (``/v1/sessions``, the live people counter's WebSocket
``/ws/live``, the WebRTC model broker's signaling socket ``/webrtc/ws``) plus the read-only
endpoints below, which only the store can answer:

- ``GET /v1/console``: what the pages need to know about this server (sources, models);
- ``GET /v1/faces?limit=&before=``: saved faces, newest first, paged by face id;
- ``GET /v1/faces/{face_id}.jpg``: one face crop, found by its integer id through the
  store's index (a client string never becomes a path);
- ``GET /v1/sources/{name}/counts/hourly?day=``: a source's crossings per hour of a day;
- ``GET /v1/sources/{name}/events?day=``: a source's traffic events of a day.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .. import __version__
from ..config import Settings
from ..core.manager import ProcessorSpec
from ..errors import InvalidInput
from ..people.feed import parse_source_arg
from ..people.records import MAX_FACE_ID, FaceCrops, PeopleRecords, face_filename
from ..plugins import spec_name
from .context import ServerContext
from .http import json_response

__all__ = ["UI_DIR", "UI_PATH", "ConsoleFiles", "router", "static_files"]

UI_PATH = "/ui"
UI_DIR = Path(__file__).resolve().parent.parent / "ui"
LIVE_WS_PATH = "/ws/live"
SIGNALING_WS_PATH = "/webrtc/ws"
DEFAULT_FACE_PAGE = 48
MAX_FACE_PAGE = 200
# A few spare rows per page in case some files are gone (being expired, say).
_SPARE_FACES = 16
_SOURCE_NAME = r"^[A-Za-z0-9._~-]{1,255}$"
_DAY = r"^\d{4}-\d{2}-\d{2}$"
_FACE_ID = re.compile(r"[0-9]{1,19}")
_STORE_AWAY: dict[int | str, dict[str, Any]] = {
    503: {"description": "the database cannot be reached now (store_unavailable); retry"}
}

SECURITY_HEADERS = {
    # Everything the pages load comes from this server: no CDN, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Revalidate on each load (ETag), so an upgraded server never runs yesterday's script.
    "Cache-Control": "no-cache",
}


PAGES: tuple[tuple[str, str, str], ...] = (
    ("index.html", "Overview", "overview.js"),
    ("live.html", "Live", "live.js"),
    ("faces.html", "Faces", "faces.js"),
    ("camera.html", "Camera", "camera.js"),
)
"""The console's pages: file, title (and navigation label), script. Each file holds only its
``<main>``; :func:`render_pages` puts it in the one frame (``_frame.html``: the head, the
skip link, the brand and the navigation), so the pages share it instead of each keeping a
copy."""


def _link(file: str) -> str:
    return "./" if file == "index.html" else file


def render_pages(directory: Path = UI_DIR) -> dict[str, bytes]:
    """Every page, framed, by file name; read once, when the console is mounted."""
    frame = (directory / "_frame.html").read_text(encoding="utf-8")
    out = {}
    for file, title, script in PAGES:
        items = []
        for other, label, _ in PAGES:
            current = ' aria-current="page"' if other == file else ""
            items.append(f'      <li><a href="{_link(other)}"{current}>{label}</a></li>')
        nav = "\n".join(items)
        page = (
            frame.replace("{{title}}", title)
            .replace("{{script}}", script)
            .replace("{{nav}}", nav)
            .replace("{{main}}", (directory / file).read_text(encoding="utf-8").rstrip())
        )
        out[file] = page.encode("utf-8")
    return out


class ConsoleFiles(StaticFiles):
    """The console's files, each sent with :data:`SECURITY_HEADERS`; pages come framed."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, html=True)
        self.pages = render_pages(directory)

    async def get_response(self, path: str, scope: Scope) -> Response:
        name = "index.html" if path in ("", ".") else path
        if name == "_frame.html":
            response: Response = Response(status_code=404)
        elif name in self.pages:
            response = Response(self.pages[name], media_type="text/html; charset=utf-8")
        else:
            response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def static_files() -> ConsoleFiles:
    """The ASGI app serving ``framebroker/ui`` (mount it at :data:`UI_PATH`)."""
    return ConsoleFiles(UI_DIR)


# -- response shapes (for the OpenAPI document) ---------------------------------------------


class ModelOut(BaseModel):
    name: str = Field(description="registered name or module:attr")
    label: str = Field(description="short name for display")


class ConsoleOut(BaseModel):
    version: str
    server_time: float = Field(description="epoch seconds, to align the browser's clock")
    timezone: str = Field(description="IANA zone of the people counter's days")
    today: str = Field(description="YYYY-MM-DD in that zone")
    sources: list[str] = Field(description="names of the video sources this server reads")
    live_ws: str = Field(description="path of the people counter's live WebSocket")
    signaling_ws: str = Field(description="path of the WebRTC model broker signaling WebSocket")
    webrtc_models: list[ModelOut] = Field(description="models each camera connection runs")
    api_keys: bool = Field(
        description="whether this server asks for API keys (then the pages send theirs)"
    )


class FaceOut(BaseModel):
    face_id: int
    track_id: int
    source: str
    day: str
    created_at: float
    updated_at: float
    time: str = Field(description="created_at as YYYY-MM-DD HH:MM:SS in the server's zone")
    quality: float
    url: str = Field(description="the JPEG, changing when a better crop replaces it")


class FacePageOut(BaseModel):
    faces: list[FaceOut]
    next_before: int | None = Field(description="pass as before= for the next page; null: last")


class HourOut(BaseModel):
    hour: int
    count_in: int
    count_out: int


class HourlyOut(BaseModel):
    source: str
    day: str
    hours: list[HourOut] = Field(description="24 rows, hour 0 to 23, summed over lines")


class EventOut(BaseModel):
    id: int
    start_time: str
    end_time: str | None
    started_at: float
    ended_at: float | None
    count_in: int | None = Field(
        description="people in during the event; null while it runs, and for an event a "
        "server that died left running (ended at its next start: the count is unknown)"
    )


class EventsOut(BaseModel):
    source: str
    day: str
    events: list[EventOut]


# -- helpers --------------------------------------------------------------------------------


def _model_label(spec: ProcessorSpec) -> tuple[str, str]:
    name = spec_name(spec)
    short = name.rpartition(":")[2].rpartition(".")[2] or name
    return name, short


def _day(value: str | None, tz: ZoneInfo) -> str:
    if value is None:
        return datetime.now(tz).strftime("%Y-%m-%d")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidInput(f"day must be a date YYYY-MM-DD, got {value!r}", field="day") from None


def _face_out(row: dict[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    face_id = int(row["face_id"])
    created, updated = float(row["created_at"]), float(row["updated_at"])
    return {
        "face_id": face_id,
        "track_id": int(row["track_id"]),
        "source": row["source"],
        "day": row["day"],
        "created_at": created,
        "updated_at": updated,
        "time": datetime.fromtimestamp(created, tz).strftime("%Y-%m-%d %H:%M:%S"),
        "quality": round(float(row["quality"]), 4),
        "url": f"/v1/faces/{face_id}.jpg?v={int(updated * 1000)}",
    }


def _event_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "start_time": row["start_time"],
        "end_time": row["end_time"],
        "started_at": float(row["started_at"]),
        "ended_at": None if row["ended_at"] is None else float(row["ended_at"]),
        "count_in": row["count_in"],
    }


def router(
    ctx: ServerContext,
    settings: Settings,
    records: PeopleRecords | None,
    crops: FaceCrops | None = None,
) -> APIRouter:
    """The console's JSON endpoints; ``records`` (and ``crops``) are ``None`` when the store
    keeps no people records (then the lists are empty). The console describes the whole
    server, so it reads every settings section it shows."""
    api = APIRouter(prefix="/v1", tags=["console"])
    offload = ctx.offload
    tz = ZoneInfo(settings.people.timezone)
    sources = [parse_source_arg(arg, i)[0] for i, arg in enumerate(settings.sources)]
    models = [_model_label(spec) for spec in settings.webrtc.models]
    keyed = bool(settings.auth.api_keys)

    @api.get("/console", response_model=ConsoleOut)
    async def console_info() -> Response:
        """What the web console needs to know about this server."""
        now = time.time()
        return json_response(
            {
                "version": __version__,
                "server_time": now,
                "timezone": settings.people.timezone,
                "today": datetime.fromtimestamp(now, tz).strftime("%Y-%m-%d"),
                "sources": sources,
                "live_ws": LIVE_WS_PATH,
                "signaling_ws": SIGNALING_WS_PATH,
                "webrtc_models": [{"name": n, "label": label} for n, label in models],
                "api_keys": keyed,
            }
        )

    @api.get("/faces", response_model=FacePageOut, responses=_STORE_AWAY)
    async def list_faces(
        limit: int = Query(DEFAULT_FACE_PAGE, ge=1, le=MAX_FACE_PAGE),
        before: int | None = Query(
            None, ge=1, le=MAX_FACE_ID, description="only faces with a lower id"
        ),
    ) -> Response:
        """Saved faces, newest first; ``next_before`` asks for the page after this one."""
        if records is None or crops is None:
            return json_response({"faces": [], "next_before": None})

        def page() -> tuple[list[dict[str, Any]], int | None]:
            assert records is not None
            assert crops is not None
            fetch = limit + _SPARE_FACES
            rows = records.faces_page(fetch, before)
            there = crops.present([face_filename(int(row["face_id"])) for row in rows])
            kept: list[dict[str, Any]] = []
            last: int | None = None
            scanned = 0
            for row in rows:
                if len(kept) == limit:
                    break
                scanned += 1
                last = int(row["face_id"])
                if face_filename(last) in there:
                    kept.append(_face_out(row, tz))
            # Rows left unread, or a full fetch that may have more behind it.
            more = scanned < len(rows) or len(rows) == fetch
            return kept, (last if more else None)

        faces, next_before = await offload(page)
        return json_response({"faces": faces, "next_before": next_before})

    @api.get(
        "/faces/{face_id}.jpg",
        response_class=FileResponse,
        responses={
            200: {"content": {"image/jpeg": {}}},
            404: {"description": "no such face"},
            **_STORE_AWAY,
        },
    )
    async def face_image(
        face_id: str = PathParam(description="the integer id the store gave the face"),
    ) -> Response:
        """One saved face crop, by the id the store gave it."""
        # Matched here rather than by an :int convertor, which answers 500 to an id of
        # thousands of digits; anything but a stored id is simply no face.
        if not _FACE_ID.fullmatch(face_id) or int(face_id) > MAX_FACE_ID:
            shown = face_id if len(face_id) <= 40 else f"{face_id[:40]}…"
            raise HTTPException(404, f"no face {shown!r}: face ids are the store's integers")
        number = int(face_id)
        record = jpeg = None
        if records is not None and crops is not None:
            record = await offload(records.get_face, number)
            if record is not None:
                jpeg = await offload(crops.read, face_filename(number))
        if jpeg is None:
            raise HTTPException(404, f"face {number} not found")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @api.get("/sources/{name}/counts/hourly", response_model=HourlyOut, responses=_STORE_AWAY)
    async def hourly_counts(
        name: str = PathParam(pattern=_SOURCE_NAME),
        day: str | None = Query(None, pattern=_DAY, description="YYYY-MM-DD; default today"),
    ) -> Response:
        """A source's line crossings per hour of ``day``, summed over its lines."""
        the_day = _day(day, tz)
        if records is None:
            hours = [{"hour": h, "count_in": 0, "count_out": 0} for h in range(24)]
        else:
            hours = await offload(records.hourly_totals, name, the_day)
        return json_response({"source": name, "day": the_day, "hours": hours})

    @api.get("/sources/{name}/events", response_model=EventsOut, responses=_STORE_AWAY)
    async def traffic_events(
        name: str = PathParam(pattern=_SOURCE_NAME),
        day: str | None = Query(None, pattern=_DAY, description="YYYY-MM-DD; default today"),
    ) -> Response:
        """A source's traffic events of ``day``, oldest first; a running one has no end."""
        the_day = _day(day, tz)
        rows = []
        if records is not None:
            rows = await offload(records.events_on, name, the_day)
        return json_response(
            {"source": name, "day": the_day, "events": [_event_out(r) for r in rows]}
        )

    return api
