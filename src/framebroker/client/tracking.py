"""The tracking API (``/v1/sessions``): boxes in, tracked boxes out, sync and async.

::

    from framebroker.client import TrackingClient

    with TrackingClient("http://127.0.0.1:8000") as client:
        session = client.create_session(class_names={0: "person"})
        result = client.track(session.id, [[20, 23, 12, 24, 0.89, 0]], image=frame)
        for box in result.tracks:
            print(box.track_id, box.box, box.class_id)
        picture = result.annotated_image()      # BGR array (result.annotated_jpeg: bytes)
        client.end_session(session.id)

Boxes are rows ``[a, b, c, d, score, class]`` in ``box_format`` (``xywh``, ``xyxy`` or
``cxcywh``), an (N, 6) array, or supervision ``Detections`` (sent as ``xyxy``). The
request/answer shapes are built and read by pure functions here; :class:`TrackingClient`
and :class:`AsyncTrackingClient` only send them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import httpx
import numpy as np
from numpy.typing import NDArray

from .connection import Backoff, Connection, Verify
from .errors import ProtocolError
from .http import AsyncHttpClient, Call, HttpClient, read_json
from .images import Image, decode_image, encode_image

if TYPE_CHECKING:
    import supervision as sv

__all__ = [
    "AsyncTrackingClient",
    "BoxFormat",
    "SessionInfo",
    "TrackResult",
    "TrackedBox",
    "TrackingClient",
]

BoxFormat = Literal["xywh", "xyxy", "cxcywh"]
_FORMATS = ("xywh", "xyxy", "cxcywh")


@dataclass(frozen=True, slots=True)
class TrackedBox:
    """A detection a confirmed track owns: ``box`` as sent (in ``box_format``), and which
    row of the request it was (``row_index``)."""

    track_id: int
    row_index: int
    box: tuple[float, float, float, float]
    score: float
    class_id: int
    box_format: BoxFormat = "xywh"

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The box as corners ``(x1, y1, x2, y2)``, whatever format it was sent in."""
        a, b, c, d = self.box
        if self.box_format == "xyxy":
            return self.box
        if self.box_format == "xywh":
            return (a, b, a + c, b + d)
        return (a - c / 2, b - d / 2, a + c / 2, b + d / 2)


@dataclass(frozen=True, slots=True)
class TrackResult:
    """The answer to one frame. ``annotated_jpeg`` is there when an image was sent (with an
    ``annotate`` step in the session's pipeline); ``timings`` are seconds per processor;
    ``errors`` the processors that failed on this frame (the frame still went through)."""

    session_id: str
    frame_index: int
    tracks: tuple[TrackedBox, ...]
    tracked_boxes: list[list[float]]
    timings: dict[str, float]
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    annotated_jpeg: bytes | None = None

    def annotated_image(self) -> NDArray[np.uint8] | None:
        """The annotated picture as a BGR array (decoded with OpenCV), or ``None``."""
        return None if self.annotated_jpeg is None else decode_image(self.annotated_jpeg)

    def to_supervision(self) -> sv.Detections:
        """The tracked boxes as supervision ``Detections`` (``xyxy``, ``confidence``,
        ``class_id``, ``tracker_id``); needs ``supervision`` installed."""
        from .supervision import tracked_to_detections

        return tracked_to_detections(self.tracks)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as the server describes it; ``summary`` once it has ended."""

    id: str
    state: str
    transport: str | None
    pipeline: list[str]
    created_at: float | None
    stats: dict[str, Any]
    summary: dict[str, Any] | None = None


# -- requests and answers, without I/O ---------------------------------------------------------


def session_body(
    pipeline: Sequence[str | Mapping[str, Any]] | None,
    class_names: Mapping[int, str] | Sequence[str] | None,
) -> dict[str, Any]:
    """The body of ``POST /v1/sessions``. ``class_names`` (a mapping, or a sequence indexed
    by class number) is given to the pipeline's ``annotate`` step, which then labels boxes
    by name; a pipeline without one gets the default ``bytetrack, annotate``."""
    steps: list[Any] = list(pipeline) if pipeline is not None else []
    if class_names is not None:
        names = (
            {str(k): str(v) for k, v in class_names.items()}
            if isinstance(class_names, Mapping)
            else {str(i): str(v) for i, v in enumerate(class_names)}
        )
        if not steps:
            steps = ["bytetrack", "annotate"]
        named = False
        for i, step in enumerate(steps):
            name = step if isinstance(step, str) else step.get("name")
            if name == "annotate":
                spec = {"name": "annotate"} if isinstance(step, str) else dict(step)
                steps[i] = spec | {"class_names": names}
                named = True
        if not named:
            raise ValueError("class_names needs an 'annotate' step in the pipeline")
    return {"pipeline": steps} if steps else {}


def box_rows(boxes: Any, box_format: BoxFormat | None) -> tuple[list[list[float]], BoxFormat]:
    """``boxes`` as JSON rows and the format they are in (see the module)."""
    if hasattr(boxes, "xyxy") and hasattr(boxes, "confidence"):
        from .supervision import detections_to_rows

        return detections_to_rows(boxes), "xyxy"
    fmt: BoxFormat = box_format or "xywh"
    if fmt not in _FORMATS:
        raise ValueError(f"box_format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    if isinstance(boxes, np.ndarray):
        if boxes.ndim != 2 or (len(boxes) and boxes.shape[1] != 6):
            raise ValueError(f"boxes must be an (N, 6) array, got shape {boxes.shape}")
        rows: list[list[float]] = boxes.astype(float).tolist()
        for row in rows:
            row[5] = int(row[5])
        return rows, fmt
    return [list(row) for row in boxes], fmt


def frame_body(
    boxes: Any, image: Image | None, box_format: BoxFormat | None
) -> tuple[dict[str, Any], BoxFormat]:
    """The body of ``POST /v1/sessions/{id}/frames`` and the box format it uses."""
    rows, fmt = box_rows(boxes, box_format)
    body: dict[str, Any] = {"boxes": rows, "box_format": fmt}
    if image is not None:
        body["image"] = base64.b64encode(encode_image(image)).decode("ascii")
    return body, fmt


def parse_session(document: Any) -> SessionInfo:
    if not isinstance(document, dict) or not isinstance(document.get("id"), str):
        raise ProtocolError(f"expected a session object, got {str(document)[:80]}")
    return SessionInfo(
        id=document["id"],
        state=str(document.get("state", "active")),
        transport=document.get("transport"),
        pipeline=list(document.get("pipeline") or []),
        created_at=document.get("created_at"),
        stats=dict(document.get("stats") or {}),
        summary=document.get("summary"),
    )


def parse_frame(document: Any, box_format: BoxFormat) -> TrackResult:
    if not isinstance(document, dict) or not isinstance(document.get("tracks"), list):
        raise ProtocolError(f"expected a frame result, got {str(document)[:80]}")
    tracks = tuple(
        TrackedBox(
            track_id=int(t["track_id"]),
            row_index=int(t["row_index"]),
            box=(float(t["box"][0]), float(t["box"][1]), float(t["box"][2]), float(t["box"][3])),
            score=float(t["score"]),
            class_id=int(t["class_id"]),
            box_format=box_format,
        )
        for t in document["tracks"]
    )
    jpeg = None
    if document.get("annotated_image"):
        try:
            jpeg = base64.b64decode(document["annotated_image"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ProtocolError("annotated_image is not base64") from None
    return TrackResult(
        session_id=str(document.get("session_id", "")),
        frame_index=int(document.get("frame_index", -1)),
        tracks=tracks,
        tracked_boxes=list(document.get("tracked_boxes") or []),
        timings=dict(document.get("timings") or {}),
        outputs=dict(document.get("outputs") or {}),
        errors=list(document.get("errors") or []),
        annotated_jpeg=jpeg,
    )


def _session(response: httpx.Response) -> SessionInfo:
    return parse_session(read_json(response))


def _sessions(response: httpx.Response) -> list[SessionInfo]:
    document = read_json(response)
    if not isinstance(document, dict) or not isinstance(document.get("sessions"), list):
        raise ProtocolError(f"expected a list of sessions, got {str(document)[:80]}")
    return [parse_session(s) for s in document["sessions"]]


def _path(session_id: str) -> str:
    if not session_id or "/" in session_id:
        raise ValueError(f"session_id must be a non-empty id without '/', got {session_id!r}")
    return f"/v1/sessions/{session_id}"


class _Calls:
    """The API's requests, as :class:`Call` s (shared by the sync and async clients)."""

    @staticmethod
    def create(
        pipeline: Sequence[str | Mapping[str, Any]] | None,
        class_names: Mapping[int, str] | Sequence[str] | None,
    ) -> Call[SessionInfo]:
        return Call("POST", "/v1/sessions", _session, json=session_body(pipeline, class_names))

    @staticmethod
    def track(
        session_id: str, boxes: Any, image: Image | None, box_format: BoxFormat | None
    ) -> Call[TrackResult]:
        body, fmt = frame_body(boxes, image, box_format)
        return Call(
            "POST",
            f"{_path(session_id)}/frames",
            lambda r: parse_frame(read_json(r), fmt),
            json=body,
        )


class TrackingClient:
    """The tracking API over one kept-alive HTTP connection (see the module).

    ``url`` is the server (``http://127.0.0.1:8000``, or ``https://``); ``api_key`` is sent
    as ``Authorization: Bearer``; ``verify`` checks TLS (a path: a custom CA's PEM file);
    ``timeout`` bounds connecting and each answer; ``retries`` and ``backoff`` say how a
    refused (429, 503) or unconnectable request is tried again. Every method raises a
    :class:`~framebroker.client.errors.ClientError`: an ``ApiError`` subclass carrying the
    server's ``code`` and ``field`` when the server refused, a ``TransportError`` when it
    could not be reached.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        verify: Verify = True,
    ) -> None:
        self.connection = Connection(url, api_key, timeout, retries, backoff or Backoff(), verify)
        self._http = HttpClient(self.connection)

    def __enter__(self) -> TrackingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def create_session(
        self,
        pipeline: Sequence[str | Mapping[str, Any]] | None = None,
        *,
        class_names: Mapping[int, str] | Sequence[str] | None = None,
    ) -> SessionInfo:
        """Start a session (default pipeline: ``bytetrack``, ``annotate``); ``class_names``
        label the annotated boxes by name."""
        return self._http.call(_Calls.create(pipeline, class_names))

    def track(
        self,
        session_id: str,
        boxes: Any,
        image: Image | None = None,
        *,
        box_format: BoxFormat | None = None,
    ) -> TrackResult:
        """Track one frame of ``boxes`` (see the module); with ``image`` (a BGR array, or
        JPEG/PNG bytes) the result carries it annotated. A frame is not sent twice after a
        lost connection: that raises ``ConnectionLost``."""
        return self._http.call(_Calls.track(session_id, boxes, image, box_format))

    def get_session(self, session_id: str) -> SessionInfo:
        """A live session, or an ended one with its summary."""
        return self._http.call(Call("GET", _path(session_id), _session))

    def list_sessions(self) -> list[SessionInfo]:
        """The server's live sessions."""
        return self._http.call(Call("GET", "/v1/sessions", _sessions))

    def end_session(self, session_id: str) -> SessionInfo:
        """End a session; its summary is in the answer's ``summary``."""
        return self._http.call(Call("DELETE", _path(session_id), _session))


class AsyncTrackingClient:
    """:class:`TrackingClient` for asyncio: the same arguments, methods and errors."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        verify: Verify = True,
    ) -> None:
        self.connection = Connection(url, api_key, timeout, retries, backoff or Backoff(), verify)
        self._http = AsyncHttpClient(self.connection)

    async def __aenter__(self) -> AsyncTrackingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create_session(
        self,
        pipeline: Sequence[str | Mapping[str, Any]] | None = None,
        *,
        class_names: Mapping[int, str] | Sequence[str] | None = None,
    ) -> SessionInfo:
        return await self._http.call(_Calls.create(pipeline, class_names))

    async def track(
        self,
        session_id: str,
        boxes: Any,
        image: Image | None = None,
        *,
        box_format: BoxFormat | None = None,
    ) -> TrackResult:
        return await self._http.call(_Calls.track(session_id, boxes, image, box_format))

    async def get_session(self, session_id: str) -> SessionInfo:
        return await self._http.call(Call("GET", _path(session_id), _session))

    async def list_sessions(self) -> list[SessionInfo]:
        return await self._http.call(Call("GET", "/v1/sessions", _sessions))

    async def end_session(self, session_id: str) -> SessionInfo:
        return await self._http.call(Call("DELETE", _path(session_id), _session))
