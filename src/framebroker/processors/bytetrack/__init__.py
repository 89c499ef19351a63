"""ByteTrack, faithful to the reference and vectorised; ``processor`` wraps it for pipelines."""

from __future__ import annotations

from .config import ByteTrackConfig
from .tracker import ByteTrack, TrackOutput

__all__ = ["ByteTrack", "ByteTrackConfig", "TrackOutput"]
