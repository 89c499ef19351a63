"""ByteTrack as a pipeline stage: one tracker per session, track ids attached to the detections."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...core.detections import Detections
from ...core.frame import Frame
from ...core.processor import ProcessContext, Processor
from .config import ByteTrackConfig
from .tracker import ByteTrack

__all__ = ["ByteTrackProcessor"]


class ByteTrackProcessor(Processor):
    """Replaces ``frame.detections`` with the detections that confirmed tracks own this frame.

    Each kept detection is the client's own box with ``track_id`` set; detections no confirmed
    track owns are left out (a new box becomes a track only once it is confirmed, as in the
    paper). Keyword arguments are :class:`ByteTrackConfig` fields.
    """

    name = "bytetrack"

    def __init__(self, **params: Any) -> None:
        self.tracker = ByteTrack(ByteTrackConfig(**params))

    @classmethod
    def options(cls) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(ByteTrackConfig)}

    @classmethod
    def warm_up(cls) -> None:
        # Loads (or, on a fresh install, compiles and caches) the tracker kernel: seconds
        # that would otherwise fall on the first request.
        ByteTrack().update([[0.0, 0.0, 10.0, 10.0]], [0.9])

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        dets = frame.detections if frame.detections is not None else Detections.empty()
        out = self.tracker.update(dets.xyxy, dets.score)
        frame.detections = dets.with_tracks(out.det_index, out.track_id)
        return None

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"tracker": {"frames": self.tracker.frame_id, "tracks_started": self.tracks_started}}

    @property
    def tracks_started(self) -> int:
        return int(self.tracker.get_state().get("next_id", 1)) - 1

    def snapshot(self) -> dict[str, Any] | None:
        return self.tracker.get_state()

    def restore(self, state: dict[str, Any]) -> None:
        self.tracker.set_state(state)
