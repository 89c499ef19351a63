"""High-traffic events from a line counter's crossings: started, ended, counted per day.

An event starts on the frame where the number of ``in`` crossings in the last ``window_s``
seconds reaches ``threshold``; it ends on the first frame where that windowed count has stayed
below the threshold for ``cooldown_s`` seconds. Time comes only from the frames' own
timestamps, so a replay faster than realtime produces the same events as live.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from ..core.frame import Frame
from ..core.processor import ProcessContext, Processor
from .checks import is_count, is_number, parse_day, parse_zone

__all__ = ["TrafficEvents"]

_STATE_VERSION = 1


def _optional_number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if not is_number(value):
        raise ValueError(f"{what} must be a finite number or null, got {value!r}")
    return float(value)


class TrafficEvents(Processor):
    """Turns ``frame.results["crossings"]`` (from a :class:`LineCounter`) into traffic events.

    Every frame outputs ``{"event_active": bool, "current_event_count_in": int,
    "daily_event_count": int}``; the frame on which an event starts adds ``"event":
    {"status": "started", "start_time": "HH:MM:SS"}`` and the one on which it ends ``"event":
    {"status": "ended", "start_time", "end_time", "count_in"}`` (local times in ``timezone``).

    ``current_event_count_in`` counts the ``in`` crossings of the event: those in the window
    that started it (the burst that made it an event belongs to it) plus every one on later
    frames until it ends; it is 0 while no event is active. ``daily_event_count`` counts the
    events started on the current local date and resets on the first frame of a later one (an
    event running over midnight goes on, and is counted on the day it started).

    Arguments (keyword only): ``window_s`` (> 0), ``threshold`` (integer >= 1), ``cooldown_s``
    (>= 0), ``timezone`` (IANA name) and ``initial`` (``{"day": "YYYY-MM-DD",
    "daily_event_count": n}`` to resume a day, reset if the first frame falls on a later date). The
    constructor raises ``ValueError`` naming the expected and the received value. Memory is
    bounded: the window keeps one entry per frame that had ``in`` crossings in the last
    ``window_s`` seconds.
    """

    name = "traffic_events"

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        threshold: int = 10,
        cooldown_s: float = 30.0,
        timezone: str = "UTC",
        initial: Mapping[str, Any] | None = None,
    ) -> None:
        if not is_number(window_s) or window_s <= 0:
            raise ValueError(f"window_s must be a finite number of seconds > 0, got {window_s!r}")
        if not is_count(threshold) or threshold < 1:
            raise ValueError(f"threshold must be an integer >= 1, got {threshold!r}")
        if not is_number(cooldown_s) or cooldown_s < 0:
            raise ValueError(
                f"cooldown_s must be a finite number of seconds >= 0, got {cooldown_s!r}"
            )
        self.window_s = float(window_s)
        self.threshold = threshold
        self.cooldown_s = float(cooldown_s)
        self.timezone = parse_zone(timezone)
        self._day: date | None = None
        self._daily = 0
        if initial is not None:
            if not isinstance(initial, Mapping) or set(initial) != {"day", "daily_event_count"}:
                raise ValueError(
                    "initial must be {'day': 'YYYY-MM-DD', 'daily_event_count': n}, "
                    f"got {initial!r}"
                )
            self._day = parse_day(initial["day"], "initial['day']")
            if not is_count(initial["daily_event_count"]):
                raise ValueError(
                    "initial['daily_event_count'] must be an integer >= 0, "
                    f"got {initial['daily_event_count']!r}"
                )
            self._daily = int(initial["daily_event_count"])
        # (frame timestamp, in crossings on that frame), oldest first; pruned past window_s.
        self._window: deque[tuple[float, int]] = deque()
        self._in_window = 0
        self._active = False
        self._started_at = 0.0
        self._event_in = 0
        # When the windowed count last fell below the threshold during an event.
        self._below_since: float | None = None
        self._last: float | None = None

    @property
    def event_active(self) -> bool:
        return self._active

    @property
    def window_len(self) -> int:
        """Entries in the sliding window (bounded by the frames of the last ``window_s``)."""
        return len(self._window)

    def _clock(self, timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, self.timezone).strftime("%H:%M:%S")

    def _roll_day(self, timestamp: float) -> None:
        today = datetime.fromtimestamp(timestamp, self.timezone).date()
        if self._day is None or today > self._day:
            if self._day is not None:
                self._daily = 0
            self._day = today

    def _slide(self, timestamp: float) -> None:
        horizon = timestamp - self.window_s
        window = self._window
        while window and window[0][0] <= horizon:
            at, n = window.popleft()
            before = self._in_window
            self._in_window -= n
            if self._active and before >= self.threshold > self._in_window:
                # The count is a step function of time: it fell at this entry's expiry, which
                # may lie between two frames.
                self._below_since = at + self.window_s

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        timestamp = frame.timestamp
        self._roll_day(timestamp)
        self._last = timestamp
        crossings = frame.results.get("crossings", [])
        arrived = 0
        if isinstance(crossings, list):
            arrived = sum(
                1 for c in crossings if isinstance(c, Mapping) and c.get("direction") == "in"
            )
        if arrived:
            self._window.append((timestamp, arrived))
            self._in_window += arrived
        self._slide(timestamp)
        event: dict[str, Any] | None = None
        if self._active:
            self._event_in += arrived
            if self._in_window >= self.threshold:
                self._below_since = None
            else:
                if self._below_since is None:
                    self._below_since = timestamp
                if timestamp - self._below_since >= self.cooldown_s:
                    event = self._close(timestamp)
        elif self._in_window >= self.threshold:
            self._active = True
            self._started_at = timestamp
            self._event_in = self._in_window
            self._below_since = None
            self._daily += 1
            event = {"status": "started", "start_time": self._clock(timestamp)}
        out = self._stats()
        if event is not None:
            out["event"] = event
        return out

    def _close(self, timestamp: float) -> dict[str, Any]:
        ended = {
            "status": "ended",
            "start_time": self._clock(self._started_at),
            "end_time": self._clock(timestamp),
            "count_in": self._event_in,
        }
        self._active = False
        self._event_in = 0
        self._below_since = None
        return ended

    def _stats(self) -> dict[str, Any]:
        return {
            "event_active": self._active,
            "current_event_count_in": self._event_in if self._active else 0,
            "daily_event_count": self._daily,
        }

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        """``{"traffic_events": {"day", "daily_event_count"}}``, plus ``"event"`` (ended at the
        last frame's time) when an event was still active: the session's end closes it."""
        summary: dict[str, Any] = {
            "day": None if self._day is None else self._day.isoformat(),
            "daily_event_count": self._daily,
        }
        if self._active:
            summary["event"] = self._close(self._last if self._last is not None else 0.0)
        return {"traffic_events": summary}

    def snapshot(self) -> dict[str, Any] | None:
        """The day, its count, the window and any active event, as JSON-ready values."""
        return {
            "version": _STATE_VERSION,
            "day": None if self._day is None else self._day.isoformat(),
            "daily_event_count": self._daily,
            "window": [[at, n] for at, n in self._window],
            "active": self._active,
            "started_at": self._started_at,
            "event_count_in": self._event_in,
            "below_since": self._below_since,
            "last": self._last,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot`; raises ``ValueError`` for a malformed state."""
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"expected a traffic_events snapshot of version {_STATE_VERSION}, got {state!r}"
            )
        day = None if state.get("day") is None else parse_day(state.get("day"), "snapshot day")
        daily, active = state.get("daily_event_count"), state.get("active")
        started_at, event_in = state.get("started_at"), state.get("event_count_in")
        if not (
            is_count(daily)
            and isinstance(active, bool)
            and is_number(started_at)
            and is_count(event_in)
        ):
            raise ValueError(
                "snapshot needs daily_event_count and event_count_in >= 0, active true/false "
                f"and a numeric started_at, got {state!r}"
            )
        rows = state.get("window")
        if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 2 and is_number(r[0]) and is_count(r[1]) for r in rows
        ):
            raise ValueError(f"snapshot window must be a list of [timestamp, count], got {rows!r}")
        below = _optional_number(state.get("below_since"), "snapshot below_since")
        last = _optional_number(state.get("last"), "snapshot last")
        self._day, self._daily, self._active = day, int(daily), active
        self._started_at, self._event_in = float(started_at), int(event_in)
        self._window = deque((float(at), int(n)) for at, n in rows)
        self._in_window = sum(n for _, n in self._window)
        self._below_since, self._last = below, last
