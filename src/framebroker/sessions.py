"""The seam between whatever serves clients and whatever runs sessions: :class:`Sessions`.

Every transport, the console, and the runtime services that serve clients (sources, the live
hub, video analysis) reach sessions only through this interface, by session id, with plain
data: :class:`FrameIn` in, :class:`FrameOut` and :class:`SessionInfo` out, bus messages
through :class:`Feed`. No :class:`~framebroker.core.Session`, pipeline or lane crosses it.

Inside one process the data is passed by reference, so the seam costs nothing on the hot
path: a frame's pixels reach the processors without a copy or an encoding, and a result's
outputs reach the transport as the processors made them. A cluster implements the same
protocol by finding a session's owner and relaying: then :meth:`FrameIn.to_wire` and
:meth:`FrameOut.to_wire` turn each side into JSON-able data and back.

The in-process implementation is :class:`framebroker.runtime.broker.Broker`; tests of the
transports also run against an in-memory fake (``tests/fake_sessions.py``).

Errors are the typed exceptions of :mod:`framebroker.errors` (``SessionNotFound``,
``CapacityExceeded``, ``ProcessorTimeout``, ...); the transports map them to their wire.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from .core.bus import Message
from .core.detections import Detections
from .core.frame import ImageSource, RawImage
from .core.inbox import Backpressure
from .core.manager import ProcessorSpec
from .core.session import SessionSummary

__all__ = [
    "Backpressure",
    "Feed",
    "FrameIn",
    "FrameOut",
    "Message",
    "ProcessorSpec",
    "SessionInfo",
    "SessionSummary",
    "Sessions",
]


def _detections_to_wire(dets: Detections | None) -> dict[str, Any] | None:
    if dets is None:
        return None
    return {
        "xyxy": dets.xyxy.tolist(),
        "score": dets.score.tolist(),
        "class_id": dets.class_id.tolist(),
        "track_id": dets.track_id.tolist(),
        "index": dets.index.tolist(),
    }


def _detections_from_wire(data: dict[str, Any] | None) -> Detections | None:
    if data is None:
        return None
    return Detections(
        xyxy=np.asarray(data["xyxy"], dtype=np.float64).reshape(-1, 4),
        score=np.asarray(data["score"], dtype=np.float64),
        class_id=np.asarray(data["class_id"], dtype=np.int64),
        track_id=np.asarray(data["track_id"], dtype=np.int64),
        index=np.asarray(data["index"], dtype=np.int64),
    )


@dataclass(frozen=True, slots=True)
class FrameIn:
    """One frame as a client sent it: an image not decoded yet (or none), the boxes it came
    with, its metadata, and when it arrived (seconds since the epoch).

    ``control``: not a client's frame but an order to the session's processors carried in
    ``meta`` (close a video window now); it is not held to the session's frame rate.
    """

    image: ImageSource | None = None
    detections: Detections | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    received_at: float = field(default_factory=time.time)
    control: bool = False

    @classmethod
    def from_array(cls, image: Any, **kwargs: Any) -> FrameIn:
        """A frame whose pixels are already a BGR ``uint8`` array of shape (H, W, 3)."""
        return cls(image=RawImage(image), **kwargs)

    def to_wire(self) -> dict[str, Any]:
        """JSON-able form, for relaying to another process; the image is sent as raw BGR
        pixels (decoded here, once)."""
        out: dict[str, Any] = {
            "meta": self.meta,
            "received_at": self.received_at,
            "detections": _detections_to_wire(self.detections),
            "image": None,
            "control": self.control,
        }
        if self.image is not None:
            pixels = np.ascontiguousarray(self.image.decode())
            out["image"] = {
                "width": int(pixels.shape[1]),
                "height": int(pixels.shape[0]),
                "bgr": base64.b64encode(pixels.tobytes()).decode("ascii"),
            }
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> FrameIn:
        image = None
        if data.get("image") is not None:
            raw = data["image"]
            pixels = np.frombuffer(base64.b64decode(raw["bgr"]), dtype=np.uint8)
            image = RawImage(pixels.reshape(int(raw["height"]), int(raw["width"]), 3))
        return cls(
            image=image,
            detections=_detections_from_wire(data.get("detections")),
            meta=dict(data.get("meta") or {}),
            received_at=float(data["received_at"]),
            control=bool(data.get("control")),
        )


@dataclass(frozen=True, slots=True)
class FrameOut:
    """What one frame produced, as :class:`~framebroker.core.FrameResult` says, in plain data.

    ``index``: the frame's number in its session (from 0). ``outputs``: every processor's
    output merged in pipeline order. ``timings``: seconds per processor that ran. ``errors``:
    one entry per processor that raised. ``ran`` / ``skipped``: which processors ran, and why
    the others did not. ``dropped``: the frame was overtaken by a newer one and never
    processed (``latest`` policy). ``detections``: the frame's boxes after the pipeline (with
    track ids once a tracker ran), each keeping the ``index`` of the row it came from.
    ``timestamp``: the frame's own clock (``meta["timestamp"]``, else its arrival).
    """

    session_id: str
    index: int
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    dropped: bool = False
    detections: Detections | None = None
    timestamp: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """JSON-able form, for relaying to another process (outputs must be JSON-able)."""
        return {
            "session_id": self.session_id,
            "index": self.index,
            "outputs": self.outputs,
            "timings": self.timings,
            "errors": self.errors,
            "ran": self.ran,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "detections": _detections_to_wire(self.detections),
            "timestamp": self.timestamp,
            "meta": self.meta,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> FrameOut:
        return cls(
            session_id=str(data["session_id"]),
            index=int(data["index"]),
            outputs=dict(data.get("outputs") or {}),
            timings=dict(data.get("timings") or {}),
            errors=list(data.get("errors") or []),
            ran=list(data.get("ran") or []),
            skipped=dict(data.get("skipped") or {}),
            dropped=bool(data.get("dropped")),
            detections=_detections_from_wire(data.get("detections")),
            timestamp=float(data.get("timestamp") or 0.0),
            meta=dict(data.get("meta") or {}),
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as listings show it: a live one (``state="active"``) or the stored record of
    an ended one (``state="ended"``, with its ``summary``).

    ``stage_widths`` (live sessions): how many frames each stage of the pipeline works on at
    once; ``queue`` the frames that may wait for it. A client that paces itself by the
    pipeline (a video read as fast as it is processed) sizes its window from them.
    """

    id: str
    state: Literal["active", "ended"]
    transport: str | None = None
    pipeline: list[str] = field(default_factory=list)
    settings: list[dict[str, Any]] = field(default_factory=list)
    """What each processor runs with: its name and every option, defaults filled in."""
    created_at: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    backpressure: str | None = None
    idle_s: float | None = None
    summary: dict[str, Any] | None = None
    stage_widths: tuple[int, ...] = ()
    queue: int = 0
    node: str | None = None
    """In a cluster, the node that runs the session (``None`` on a single server)."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "state": self.state,
            "transport": self.transport,
            "pipeline": self.pipeline,
            "settings": self.settings,
            "created_at": self.created_at,
            "stats": self.stats,
            "backpressure": self.backpressure,
            "idle_s": self.idle_s,
            "summary": self.summary,
        }
        if self.node is not None:
            out["node"] = self.node
        return out


class Feed(Protocol):
    """A subscriber's bounded mailbox of bus messages (see :class:`~framebroker.core.Bus`):
    a slow subscriber loses its oldest messages (``dropped``), never slows the publisher."""

    @property
    def dropped(self) -> int: ...

    async def wait(self) -> None:
        """Until a message is queued (at once when one is)."""

    def drain(self) -> list[Message]:
        """Every queued message, oldest first."""

    def close(self) -> None: ...


class Sessions(Protocol):
    """Sessions by id: create, attach, submit frames, end, inspect, and the bus.

    Topics: ``session/<id>/result`` (a :class:`FrameOut` for each processed frame),
    ``session/<id>/ended`` (the summary as a dict), ``session/<id>/prediction`` (one processor's
    answer in a ``newest`` session: ``model``, ``frame``, ``meta``, ``outputs``, ``merged``,
    ``error``, ``latency_s``, ``disabled``), ``live/<source>/frame|stats|event`` (the live people
    counter).
    """

    async def create(
        self,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        session_id: str | None = None,
        backpressure: Backpressure = Backpressure.WAIT,
        client: str | None = None,
    ) -> SessionInfo:
        """A new session (id made here unless ``session_id``); ``client``, the creator's
        address, holds one of its ``max_sessions_per_client`` slots until it ends.

        Raises ``InvalidInput`` (a bad id or pipeline), ``ProcessorLoadError``,
        ``SessionConflict``, ``CapacityExceeded``, ``ClientSessionLimit``.
        """

    async def attach(
        self,
        session_id: str,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
        create: bool = True,
    ) -> SessionInfo:
        """The live session ``session_id``; else the one a server stop suspended, resumed
        with its state; else (with ``create``) a new one; else ``SessionNotFound``."""

    async def submit(self, session_id: str, frame: FrameIn) -> FrameOut:
        """Queue ``frame`` on the session and wait for what it produced.

        Raises ``SessionNotFound``, ``CapacityExceeded`` (the session's queue is full),
        ``FrameRateExceeded`` and ``ProcessorTimeout``.
        """

    async def attach_and_submit(
        self,
        session_id: str,
        frame: FrameIn,
        *,
        transport: str,
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
        create: bool = True,
    ) -> tuple[SessionInfo, FrameOut]:
        """:meth:`attach`, then :meth:`submit` ``frame`` to that session: the tracking
        APIs' "create or attach, then track" as one call, so that a cluster reaches a
        session's owner once per request rather than twice. Raises what both raise."""

    def offer(self, session_id: str, frame: FrameIn) -> bool:
        """Hand a live frame to a ``newest`` session, whose processors each take the newest
        frame they can keep up with; never waits. Answers come on
        ``session/<id>/prediction``. ``False``: the frame was over the session's frame rate
        (dropped, counted). Raises ``SessionNotFound``, and ``ValueError`` for a session of
        another policy."""

    async def end(self, session_id: str, *, reason: str = "ended") -> SessionSummary:
        """End the session: queued frames finish, every processor's ``end`` runs, the summary
        is stored and returned. Raises ``SessionNotFound``."""

    async def info(self, session_id: str) -> SessionInfo:
        """The live session, else the stored record of an ended one; else
        ``SessionNotFound``."""

    async def live(self) -> list[SessionInfo]:
        """The live sessions."""

    def subscribe(
        self,
        pattern: str,
        *,
        maxlen: int | None = None,
        keep: Callable[[Message], bool] | None = None,
    ) -> Feed:
        """A mailbox for the topics ``pattern`` matches (a topic, or a prefix and ``*``);
        messages ``keep`` says yes to are never the ones dropped for room."""

    def publish(self, topic: str, payload: Any) -> int:
        """Hand ``payload`` to every subscriber of ``topic``; returns how many."""

    def check_pipeline(self, specs: Sequence[ProcessorSpec], *, client: bool = False) -> None:
        """Raise ``ProcessorLoadError`` unless ``specs`` would build; with ``client``, unless
        a client may ask for it (registered processors only, no server-only parameter)."""

    def check_client(self, client: str | None) -> None:
        """Raise ``ClientSessionLimit`` if ``client`` already holds its share of sessions."""

    async def prepare(self, specs: Sequence[ProcessorSpec]) -> None:
        """Load the processors ``specs`` name and warm them up, before a client waits on
        them; raises ``ProcessorLoadError``."""
