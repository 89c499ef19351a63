"""A token bucket for frames, driven by the frames' own arrival times (no clock inside)."""

from __future__ import annotations

import math

from ..errors import FrameRateExceeded

__all__ = ["FrameRate"]


class FrameRate:
    """``fps`` frames a second on average, with bursts of up to ``burst`` frames (default: one
    second's worth, at least one frame).

    A refused frame costs nothing, so a client that backs off as told gets in. Times need not
    come from a monotonic clock: a time earlier than the last one (a wall clock stepped back)
    refills nothing, and the bucket carries on from it.
    """

    def __init__(self, fps: float, burst: float | None = None) -> None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
        size = fps if burst is None else burst
        if not (math.isfinite(size) and size > 0):
            raise ValueError(f"burst must be a finite number > 0, got {burst!r}")
        self.fps = float(fps)
        self.burst = max(1.0, float(size))
        self._tokens = self.burst
        self._last: float | None = None

    def take(self, at: float) -> float:
        """Spend one frame arriving at ``at`` (seconds): ``0.0`` when it may pass, else the
        seconds until one would."""
        if self._last is not None and at > self._last:
            self._tokens = min(self.burst, self._tokens + (at - self._last) * self.fps)
        self._last = at
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.fps

    def admit(self, at: float, session_id: str) -> None:
        """:meth:`take`, raising :class:`~framebroker.errors.FrameRateExceeded` (naming
        session ``session_id``, the limit and when to retry) for a frame that may not pass."""
        wait = self.take(at)
        if wait > 0:
            raise FrameRateExceeded(
                f"session {session_id} sends more than {self.fps:g} frames a second "
                f"(limits.max_fps_per_session); this frame is dropped, retry in {wait:.3f} s",
                limit="max_fps_per_session",
                retry_after_s=wait,
            )
