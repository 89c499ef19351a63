"""The people counter's settings: ``[people]`` (what is counted, and kept) and ``[live]``
(what listeners are pushed). Validated once, when the server starts; the feed, the live
publisher and the pipeline read them as they are, with no copy in between.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..compat import original_env

__all__ = ["LiveSettings", "PeopleCounterSettings"]


class PeopleCounterSettings(BaseModel):
    """The people counter run on ``--source`` feeds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = Field("UTC", description="IANA zone for the daily reset and timestamps")
    lines: list[dict[str, Any]] | None = Field(
        None,
        description='counting lines {"name", "start": [x, y], "end": [x, y], "in": "left"}; '
        "default: a horizontal line through the middle, in = below",
    )
    min_frames: int = Field(3, ge=1, description="frames on the new side before a crossing counts")
    detector: str = Field("nanodet-g", description="bundled model name or a path to an ONNX file")
    event_window_s: float = Field(60.0, gt=0)
    event_threshold: int = Field(10, ge=1, description="count_in within the window that starts one")
    event_cooldown_s: float = Field(30.0, ge=0)
    faces: bool = Field(True, description="save the best face crop of each person")
    max_faces: int = Field(10_000, ge=1)
    face_retention_days: int = Field(30, ge=1)

    @model_validator(mode="after")
    def _known_zone(self) -> PeopleCounterSettings:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown IANA time zone {self.timezone!r}") from None
        return self


class LiveSettings(BaseModel):
    """The WebSocket push of the live people counter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jpeg_quality: int = Field(
        default_factory=original_env("WEBSOCKET_STREAM_QUALITY", 70),
        validate_default=True,
        ge=1,
        le=100,
        description="JPEG quality of pushed frames; the original API's WEBSOCKET_STREAM_QUALITY "
        "environment variable is read as the default",
    )
    max_fps: float = Field(15.0, ge=0, description="frames pushed per second at most; 0: all")
    stats_interval_s: float = Field(0.5, gt=0)
    client_queue: int = Field(8, ge=1, description="frames kept for a slow client")
    send_timeout_s: float = Field(10.0, gt=0, description="a client not reading is dropped")
