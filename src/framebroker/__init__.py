"""framebroker: a real-time vision stream server, and the library it is built from.

What runs in the server is importable and works without one::

    from framebroker import ByteTrack
    tracker = ByteTrack(track_thresh=0.5)
    out = tracker.update(xyxy, scores)          # one frame
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .core import (
    Backpressure,
    BaseModel,
    BoxFormat,
    Bus,
    Detections,
    Frame,
    FrameResult,
    Pipeline,
    ProcessContext,
    Processor,
    Rate,
    Session,
    SessionManager,
)
from .errors import FramebrokerError

if TYPE_CHECKING:
    from .processors.annotate import Annotator
    from .processors.bytetrack import ByteTrack, ByteTrackConfig, TrackOutput
    from .processors.bytetrack.processor import ByteTrackProcessor
    from .processors.detect import PersonDetector
    from .processors.face_gallery import FaceGallery
    from .processors.heart_rate import HeartRate
    from .processors.line_counter import Line, LineCounter
    from .processors.traffic_events import TrafficEvents

# Processors load on first use, so `import framebroker.core` stays light.
_LAZY = {
    "ByteTrack": "framebroker.processors.bytetrack",
    "ByteTrackConfig": "framebroker.processors.bytetrack",
    "TrackOutput": "framebroker.processors.bytetrack",
    "ByteTrackProcessor": "framebroker.processors.bytetrack.processor",
    "Annotator": "framebroker.processors.annotate",
    "PersonDetector": "framebroker.processors.detect",
    "FaceGallery": "framebroker.processors.face_gallery",
    "HeartRate": "framebroker.processors.heart_rate",
    "Line": "framebroker.processors.line_counter",
    "LineCounter": "framebroker.processors.line_counter",
    "TrafficEvents": "framebroker.processors.traffic_events",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'framebroker' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Annotator",
    "Backpressure",
    "BaseModel",
    "BoxFormat",
    "Bus",
    "ByteTrack",
    "ByteTrackConfig",
    "ByteTrackProcessor",
    "Detections",
    "FaceGallery",
    "Frame",
    "FrameResult",
    "FramebrokerError",
    "HeartRate",
    "Line",
    "LineCounter",
    "PersonDetector",
    "Pipeline",
    "ProcessContext",
    "Processor",
    "Rate",
    "Session",
    "SessionManager",
    "TrackOutput",
    "TrafficEvents",
    "__version__",
]
