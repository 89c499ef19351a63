"""ByteTrack's knobs, validated once, with the reference demo's defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ByteTrackConfig"]


@dataclass(frozen=True, slots=True)
class ByteTrackConfig:
    """Thresholds and timing of the tracker (Zhang et al., ByteTrack, ECCV 2022).

    ``track_thresh`` splits detections into the high-score set (first association, may start
    tracks) and the low-score set (second association only); ``match_thresh`` is the cost
    limit of the first association; a track lost for more than
    ``int(frame_rate / 30 * track_buffer)`` frames is dropped; a new track needs a score of at
    least ``new_track_thresh`` (default ``track_thresh + 0.1``, as the reference).
    """

    track_thresh: float = 0.5
    match_thresh: float = 0.8
    track_buffer: int = 30
    frame_rate: float = 30.0
    low_thresh: float = 0.1
    new_track_thresh: float | None = None
    second_match_thresh: float = 0.5
    unconfirmed_match_thresh: float = 0.7
    duplicate_iou_distance: float = 0.15
    fuse_score: bool = True

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        def unit(name: str) -> None:
            v = getattr(self, name)
            check(name, isinstance(v, int | float) and 0.0 <= v <= 1.0, "a number in [0, 1]")

        for name in (
            "track_thresh",
            "match_thresh",
            "low_thresh",
            "second_match_thresh",
            "unconfirmed_match_thresh",
            "duplicate_iou_distance",
        ):
            unit(name)
        if self.new_track_thresh is not None:
            check(
                "new_track_thresh",
                isinstance(self.new_track_thresh, int | float) and self.new_track_thresh >= 0,
                "a number >= 0 or None",
            )
        check(
            "track_buffer",
            isinstance(self.track_buffer, int) and self.track_buffer >= 1,
            "an integer >= 1",
        )
        check(
            "frame_rate",
            isinstance(self.frame_rate, int | float)
            and math.isfinite(self.frame_rate)
            and self.frame_rate > 0,
            "a number > 0",
        )
        check(
            "low_thresh",
            self.low_thresh <= self.track_thresh,
            f"<= track_thresh ({self.track_thresh})",
        )
        check("fuse_score", isinstance(self.fuse_score, bool), "true or false")

    @property
    def det_thresh(self) -> float:
        """Score a detection needs to start a track."""
        if self.new_track_thresh is not None:
            return float(self.new_track_thresh)
        return self.track_thresh + 0.1

    @property
    def max_time_lost(self) -> int:
        return int(self.frame_rate / 30.0 * self.track_buffer)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
