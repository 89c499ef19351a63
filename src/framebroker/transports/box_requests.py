"""Boxes-in, tracks-out requests as both HTTP APIs read them (the tracking API at ``/`` and
``/v1``).

Parsing is a pure function of the body, so a large body can be parsed in the worker pool
instead of on the event loop.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from ..config import Limits
from ..core.detections import BoxFormat, Detections, rows_of
from ..errors import InvalidInput
from ..media.image import EncodedImage, decode_base64_image
from ..sessions import FrameIn, FrameOut
from .context import Offload
from .http import parse_json, read_body

__all__ = [
    "BOX_FORMAT_HEADER",
    "INLINE_PARSE_BYTES",
    "BoxReader",
    "TrackingRequest",
    "parse_tracking_request",
    "tracked_boxes",
]

INLINE_PARSE_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the event loop; larger ones in the worker pool."""

BOX_FORMAT_HEADER = "Box-Format"


@dataclass(frozen=True, slots=True)
class TrackingRequest:
    rows: list[Any]
    detections: Detections
    box_format: BoxFormat
    image: EncodedImage | None

    def to_frame(self) -> FrameIn:
        return FrameIn(image=self.image, detections=self.detections)


def parse_tracking_request(
    body: bytes,
    *,
    limits: Limits,
    default_format: str,
    format_header: str | None = None,
    allowed_fields: Collection[str] | None = None,
) -> TrackingRequest:
    """Read ``{"boxes": [[a,b,c,d,score,class], ...], "image"?: base64, "box_format"?: ...}``.

    The box format comes from the ``Box-Format`` header, else the ``box_format`` field, else
    ``default_format``. With ``allowed_fields`` set, unknown fields are refused.
    """
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise InvalidInput(
            f"body: expected a JSON object, got {type(payload).__name__}", field="body"
        )
    if allowed_fields is not None:
        unknown = sorted(set(payload) - set(allowed_fields))
        if unknown:
            raise InvalidInput(
                f"unknown field(s) {unknown}; expected some of {sorted(allowed_fields)}",
                field=unknown[0],
            )
    if "boxes" not in payload:
        raise InvalidInput("boxes: required field is missing", field="boxes")
    field_format = payload.get("box_format")
    if field_format is not None and not isinstance(field_format, str):
        raise InvalidInput("box_format: expected a string", field="box_format")
    if format_header is not None:
        fmt = BoxFormat.parse(format_header, field=BOX_FORMAT_HEADER)
    elif field_format is not None:
        fmt = BoxFormat.parse(field_format)
    else:
        fmt = BoxFormat(default_format)
    rows = payload["boxes"]
    detections = Detections.from_rows(rows, fmt, max_rows=limits.max_boxes)
    image = None
    raw_image = payload.get("image")
    if raw_image is not None:
        if not isinstance(raw_image, str):
            raise InvalidInput(
                f"image: expected a base64 string, got {type(raw_image).__name__}", field="image"
            )
        image = decode_base64_image(
            raw_image, max_bytes=limits.max_body_bytes, max_pixels=limits.max_image_pixels
        )
    return TrackingRequest(rows=rows, detections=detections, box_format=fmt, image=image)


@dataclass(frozen=True, slots=True)
class BoxReader:
    """Reads tracking requests within ``limits``; ``default_format`` is the server's
    ``box_format``; ``offload`` parses large bodies in the worker pool."""

    limits: Limits
    default_format: str
    offload: Offload

    async def read(
        self, request: Request, *, allowed_fields: Collection[str] | None = None
    ) -> TrackingRequest:
        """Read and parse a tracking request body within the limits; large bodies are parsed
        in the worker pool so the event loop never walks ten thousand rows."""
        body = await read_body(request, self.limits.max_body_bytes)

        def parse() -> TrackingRequest:
            return parse_tracking_request(
                body,
                limits=self.limits,
                default_format=self.default_format,
                format_header=request.headers.get(BOX_FORMAT_HEADER),
                allowed_fields=allowed_fields,
            )

        if len(body) <= INLINE_PARSE_BYTES:
            return parse()
        parsed: TrackingRequest = await self.offload(parse)
        return parsed


def tracked_boxes(request: TrackingRequest, result: FrameOut) -> list[list[Any]]:
    """The client's rows that a confirmed track owns, unchanged, with the track id appended."""
    dets = result.detections
    if dets is None:
        return []
    return rows_of(request.rows, dets.take(dets.track_id >= 0))
