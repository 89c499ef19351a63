"""When the reader thread delivers frames: timestamps that only go forward, pacing at the
source's rate, and the backoff between reconnections.

Used by :class:`~.reader.VideoSource`; none of them reads or decodes anything.
"""

from __future__ import annotations

import math
import threading
import time

__all__ = ["Backoff", "Pacer", "Timeline"]

# How long realtime pacing may keep skipping frames without catching up before it resets its
# schedule instead (see Pacer).
_MAX_CATCH_UP_S = 1.0


class Backoff:
    """Delays between reconnection attempts: ``base``, doubling up to ``cap``.

    :meth:`reset` after a success, so the next drop is retried quickly again.
    """

    __slots__ = ("_next", "base", "cap")

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"backoff base must be a positive number of seconds, got {base!r}")
        if not (math.isfinite(cap) and cap >= base):
            raise ValueError(f"backoff cap must be at least the base ({base}), got {cap!r}")
        self.base = base
        self.cap = cap
        self._next = base

    def next_delay(self) -> float:
        """The delay before the coming attempt; each call doubles the following one."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.base


class Timeline:
    """Source timestamps made into seconds that only go forward.

    A rewound file, a reconnected stream or a camera whose clock jumps back starts a new run
    of timestamps; each run is placed one frame interval after the last frame delivered, so
    consumers (trackers, rate limits, the ``latest`` policy) never see time go backwards.
    """

    __slots__ = ("_last", "_offset", "_segment_start")

    def __init__(self) -> None:
        self._last: float | None = None
        self._offset = 0.0
        self._segment_start: float | None = None

    def new_segment(self, start_s: float | None) -> None:
        """The next frame begins a new run whose clock starts at ``start_s`` (None: at it)."""
        self._segment_start = start_s
        self._offset = math.nan

    def stamp(self, raw: float | None, interval: float) -> float:
        last = self._last
        if math.isnan(self._offset):
            origin = self._segment_start if self._segment_start is not None else raw
            head = 0.0 if last is None else last + interval
            self._offset = head - (origin if origin is not None else 0.0)
        if raw is None:
            t = 0.0 if last is None else last + interval
        else:
            t = raw + self._offset
            if last is not None and t <= last:
                self._offset += last + interval - t
                t = last + interval
        t = max(t, 0.0)
        self._last = t
        return t


class Pacer:
    """Holds frames back to their due time on a monotonic clock, and skips late ones.

    A frame more than one interval late is skipped (the next one is already due), which
    brings a slow consumer back onto the source's clock instead of letting it drift. When
    skipping does not catch up (decoding itself is slower than real time, or a live source's
    delay grew), the schedule restarts from the current frame rather than dropping forever.
    """

    __slots__ = ("_origin", "_run", "_stop")

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._origin: tuple[float, float] | None = None  # (monotonic time, pts) of the schedule
        self._run: tuple[float, float] | None = None  # (monotonic time, lateness) a skip began

    def reset(self) -> None:
        self._origin = None
        self._run = None

    def admit(self, pts: float, interval: float) -> bool:
        """Wait until ``pts`` is due; False if the frame should be skipped instead."""
        now = time.monotonic()
        if self._origin is None:
            self._origin = (now, pts)
            return True
        late = now - (self._origin[0] + pts - self._origin[1])
        if late < 0:
            self._stop.wait(-late)
            self._run = None
            return True
        if late < interval:
            self._run = None
            return True
        if self._run is None:
            self._run = (now, late)
            return False
        started, late_then = self._run
        if late - late_then < interval and now - started < _MAX_CATCH_UP_S:
            return False
        self._origin = (now, pts)
        self._run = None
        return True
