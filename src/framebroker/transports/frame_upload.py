"""The frame server: the OverTrack plugin rig's frame server, one video frame per multipart POST.

Where: ``POST /`` on the main port when the body is ``multipart/form-data`` (a JSON
``POST /`` stays the tracking API), and ``POST /`` on the ``frames`` compatibility listener
(``serve --compat``, port 5000 by default, where the original API's ``extract_frames`` posts).

The request has two parts (others are skipped):

``frame``
    A JSON object: the original API's metadata (``timestamp``, ``frame_no``, ``source``,
    ...), echoed unchanged. Its ``timestamp`` (seconds) is the frame's time, so a processor
    that runs every ``interval`` seconds follows the video's clock, and a replay faster than
    realtime behaves as live; without one, the arrival time is used.
``image``
    Raw BGR pixels, ``height`` rows of ``width`` pixels of 3 bytes each, as the original API sends;
    or a PNG or JPEG file. The size of a raw image comes from ``frame["width"]`` and
    ``frame["height"]``, else from ``frame["source"]["width"]`` and ``["height"]`` when
    ``source`` is an object (both meaning the size *as posted*, after any resizing), else
    from the ``frames.default_width`` x ``frames.default_height`` settings (1920x1080, the
    original API's size). A part of exactly ``width * height * 3`` bytes is raw; any other part is
    PNG or JPEG if its first bytes say so (their own header gives their size), and otherwise
    a 400 that states the expected and received byte counts. Declared sizes must be positive
    integers whose product is at most ``limits.max_image_pixels``. Processors read a raw
    image as a read-only ``(height, width, 3)`` array over the received bytes, not a copy.

The reply is 200 with every field of ``frame`` unchanged, then each top-level key the
processors returned (by convention one object per processor, ``{"its_name": {...}}``; a
frame field of the same name wins), then the run report under ``"framebroker"``::

    "framebroker": {"session_id": "...", "frame_index": 0, "ran": ["hud"],
                    "timings_ms": {"hud": 0.8},
                    "skipped": {"scene": "not_due"},                   # when any
                    "errors": [{"processor": "...", "error": "..."}],  # when one failed
                    "shadowed": ["key"]}                               # on a name clash

``ran`` lists the processors that ran on this frame, ``skipped`` the others and why
(``not_due``: its rate says not yet; ``disabled``: another processor switched it off).
A processor that raises, or returns what JSON cannot hold, is reported in ``errors``; the
reply is still a 200. A frame that itself carries a ``framebroker`` field keeps it and gets
no report.

Sessions: the one named by a ``Session-Id`` header (created on first use), else one per
stream: ``frames-`` plus a hash of the frame's ``source`` value when it has one (so keep
``source`` the same for every frame of a stream), else of the client's address. The id is
returned in the ``Session-Id`` response header. A session ends after
``limits.session_idle_timeout_s`` without frames. A client (one address) starting more than
``limits.max_sessions_per_client`` sessions, or sending one session more than
``limits.max_fps_per_session`` frames a second, gets a 429 naming the limit (the latter with
``Retry-After``); its other sessions go on.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ..config import FramesSettings, Limits
from ..core.frame import ImageSource
from ..core.manager import ProcessorSpec
from ..errors import (
    ConfigError,
    InvalidImage,
    InvalidInput,
    InvalidJSON,
    PayloadTooLarge,
    ProcessorLoadError,
)
from ..media.image import JPEG_MAGIC, PNG_MAGIC, RawBGRImage, open_image
from ..sessions import FrameIn, FrameOut, Sessions
from .context import ServerContext
from .http import client_of, json_response
from .multipart import FormLimits, FormPart, form_boundary, read_form

__all__ = [
    "REPORT_KEY",
    "FrameRequest",
    "check_pipeline",
    "frame_handler",
    "frame_reply",
    "is_form",
    "parse_frame_request",
    "raw_image_size",
    "router",
    "stream_session_id",
]

TRANSPORT = "frames"
REPORT_KEY = "framebroker"
"""The reply's run report; the one top-level name the server adds besides processor outputs."""
SESSION_HEADER = "Session-Id"
IMAGE = "image"
FRAME = "frame"
_PARTS = (IMAGE, FRAME)

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class FrameRequest:
    """A posted frame: its metadata (given to processors), its JSON as sent, its image."""

    frame: dict[str, Any]
    frame_json: bytes
    image: ImageSource

    def to_frame(self) -> FrameIn:
        return FrameIn(image=self.image, meta=self.frame)


def is_form(content_type: str | None) -> bool:
    """Whether a request body is ``multipart/form-data`` (the frame server) rather than JSON."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "multipart/form-data"


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _parse_frame(data: bytes) -> dict[str, Any]:
    if not data.strip():
        raise InvalidJSON(f"{FRAME}: the part is empty; expected a JSON object", field=FRAME)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"{FRAME}: not valid JSON: {exc}", field=FRAME) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{FRAME}: expected a JSON object, got {_json_type(value)}", field=FRAME)
    return value


def _dimension(holder: Mapping[str, Any], key: str, where: str) -> int:
    name = f"{where}.{key}"
    value = holder.get(key)
    if value is None:
        raise InvalidInput(
            f"{name}: missing; give width and height together (pixels of the posted image)",
            field=name,
        )
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"{name}: expected a positive integer, got {value!r}", field=name)
    return value


def declared_size(frame: Mapping[str, Any]) -> tuple[int, int, str] | None:
    """``(width, height, where)`` of the posted image as the frame declares it, or ``None``.

    ``where`` is ``"frame"`` or ``"frame.source"``. Raises :class:`InvalidInput` for a size
    given by halves or not as positive integers.
    """
    holders: list[tuple[Mapping[str, Any], str]] = [(frame, FRAME)]
    source = frame.get("source")
    if isinstance(source, dict):
        holders.append((source, f"{FRAME}.source"))
    for holder, where in holders:
        if "width" in holder or "height" in holder:
            return _dimension(holder, "width", where), _dimension(holder, "height", where), where
    return None


def parse_frame_request(
    form: Mapping[str, FormPart], *, limits: Limits, default_size: tuple[int, int]
) -> FrameRequest:
    """Check a read form and make its image source; no pixel is copied or decoded here.

    Raises :class:`InvalidInput` (missing part, ``frame`` not an object, bad declared size),
    :class:`InvalidJSON`, :class:`InvalidImage` (wrong byte count,
    truncated PNG/JPEG) and :class:`PayloadTooLarge` (more pixels than the limit).
    """
    missing = [name for name in _PARTS if name not in form]
    if missing:
        got = ", ".join(repr(n) for n in sorted(form)) or "none"
        raise InvalidInput(
            f"missing multipart part {missing[0]!r}: expected parts 'image' (the pixels) and "
            f"'frame' (a JSON object), got {got}",
            field=missing[0],
        )
    frame_json = bytes(form[FRAME].data)
    frame = _parse_frame(frame_json)
    declared = declared_size(frame)
    if declared is None:
        width, height = default_size
        origin = f"the default size {width}x{height}; set width and height in {FRAME} to change it"
    else:
        width, height, where = declared
        origin = f"{where}.width and {where}.height"
    if width * height > limits.max_image_pixels:
        raise PayloadTooLarge(
            f"{IMAGE}: {width}x{height} = {width * height} pixels (from {origin}) is over the "
            f"limit of {limits.max_image_pixels} pixels",
            field=IMAGE if declared is None else f"{declared[2]}.width",
        )
    data = form[IMAGE].data
    expected = width * height * 3
    image: ImageSource
    if data.nbytes == expected:
        image = RawBGRImage(data, width, height, field=IMAGE)
    elif bytes(data[:3]) == JPEG_MAGIC or bytes(data[:8]) == PNG_MAGIC:
        image = open_image(data, max_pixels=limits.max_image_pixels, field=IMAGE)
    else:
        raise InvalidImage(
            f"{IMAGE}: raw BGR {width}x{height} (from {origin}) needs width*height*3 = "
            f"{expected} bytes, received {data.nbytes}; PNG and JPEG files are recognised by "
            "their first bytes",
            field=IMAGE,
        )
    return FrameRequest(frame=frame, frame_json=frame_json, image=image)


def raw_image_size(
    name: str, first: memoryview, parts: Mapping[str, FormPart], *, default_size: tuple[int, int]
) -> int | None:
    """The byte count of a raw ``image`` part, when the ``frame`` part came first and its
    first bytes are no PNG or JPEG signature: lets the reader skip searching the pixels for
    the multipart delimiter (see :mod:`.multipart`). ``None`` when that is not known;
    anything wrong is left for :func:`parse_frame_request` to report."""
    if name != IMAGE or FRAME not in parts or first.nbytes < len(PNG_MAGIC):
        return None
    head = bytes(first[: len(PNG_MAGIC)])
    if head.startswith(JPEG_MAGIC) or head == PNG_MAGIC:
        return None
    try:
        declared = declared_size(_parse_frame(bytes(parts[FRAME].data)))
    except (InvalidInput, InvalidJSON):
        return None
    width, height = default_size if declared is None else declared[:2]
    return width * height * 3


def stream_session_id(frame: Mapping[str, Any], client: str | None) -> str:
    """The session of a stream that names none: from ``source``, else the client address.

    A stable hash, so every frame of one video (one ``source``) reaches the same session and
    its processors' state, across connections.
    """
    source = frame.get("source")
    if source is not None:
        basis = b"source:" + orjson.dumps(source, option=orjson.OPT_SORT_KEYS)
    else:
        basis = b"client:" + (client or "unknown").encode()
    return "frames-" + hashlib.sha256(basis).hexdigest()[:32]


def frame_reply(
    request: FrameRequest, result: FrameOut, *, check_json: bool = False
) -> dict[str, Any]:
    """``frame`` as sent, the processors' top-level outputs, then the run report.

    With ``check_json``, an output JSON cannot hold is left out and reported in ``errors``
    (each output is serialised once more to find it: only worth it after a failure).
    """
    # Parsed again rather than copied: processors may have changed the frame's meta.
    reply: dict[str, Any] = orjson.loads(request.frame_json)
    report: dict[str, Any] = {
        "session_id": result.session_id,
        "frame_index": result.index,
        "ran": list(result.ran),
        "timings_ms": {name: round(s * 1000.0, 3) for name, s in result.timings.items()},
    }
    errors = list(result.errors)
    shadowed = []
    for key, value in result.outputs.items():
        if key in reply or key == REPORT_KEY:
            shadowed.append(key)
            continue
        if check_json:
            try:
                orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
            except TypeError as exc:
                errors.append({"output": key, "error": f"not serialisable as JSON: {exc}"})
                continue
        reply[key] = value
    if result.skipped:
        report["skipped"] = dict(result.skipped)
    if errors:
        report["errors"] = errors
    if shadowed:
        report["shadowed"] = shadowed
    reply.setdefault(REPORT_KEY, report)
    return reply


def check_pipeline(sessions: Sessions, specs: Sequence[ProcessorSpec]) -> None:
    """Resolve every processor of ``frames.pipeline`` at start-up; raises :class:`ConfigError`
    naming the entry, so a typo stops the server instead of failing every frame."""
    for i, spec in enumerate(specs):
        try:
            sessions.check_pipeline([spec])
        except ProcessorLoadError as exc:
            raise ConfigError(f"frames.pipeline[{i}]: {exc.message}") from exc


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise InvalidInput(
            f"Content-Length: expected a byte count, got {value!r}", field="Content-Length"
        )
    return size


def frame_handler(ctx: ServerContext, settings: FramesSettings, limits: Limits) -> Handler:
    """The ``POST /`` handler of the frame server, shared by the main port and the compat
    listener.

    Raises :class:`ConfigError` when ``frames.pipeline`` names a processor that cannot be
    found.
    """
    sessions = ctx.sessions
    pipeline: tuple[ProcessorSpec, ...] = tuple(settings.pipeline)
    check_pipeline(sessions, pipeline)
    form_limits = FormLimits(
        max_body_bytes=limits.max_body_bytes,
        max_parts=limits.max_form_parts,
        max_header_bytes=limits.max_part_header_bytes,
    )
    default_size = (settings.default_width, settings.default_height)
    image_size = functools.partial(raw_image_size, default_size=default_size)

    async def post_frame(request: Request) -> Response:
        boundary = form_boundary(request.headers.get("content-type"))
        length = _content_length(request.headers.get("content-length"))
        # A client that leaves mid-body raises ClientDisconnect, answered (to nobody) and
        # counted by the error handlers.
        form = await read_form(
            request.stream(),
            boundary,
            form_limits,
            content_length=length,
            wanted=_PARTS,
            large=(IMAGE,),
            part_size=image_size,
        )
        req = parse_frame_request(form, limits=limits, default_size=default_size)
        sid = request.headers.get(SESSION_HEADER)
        client = client_of(request)
        if sid is None:
            sid = stream_session_id(req.frame, client)
        info, result = await sessions.attach_and_submit(
            sid, req.to_frame(), transport=TRANSPORT, pipeline=pipeline, client=client
        )
        headers = {SESSION_HEADER: info.id}
        try:
            return json_response(frame_reply(req, result), headers=headers)
        except TypeError:  # a processor returned something JSON cannot hold: say which
            reply = frame_reply(req, result, check_json=True)
            return json_response(reply, headers=headers)

    return post_frame


def router(handler: Handler) -> APIRouter:
    """The frame server alone at ``/``: the ``frames`` compatibility listener."""
    api = APIRouter()
    api.add_api_route("/", handler, methods=["POST"], include_in_schema=False)
    return api
