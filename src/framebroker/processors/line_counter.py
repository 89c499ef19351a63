"""Count tracked objects crossing lines, per line and per direction, reset at local midnight.

A crossing is decided per track from its anchor point (the bottom centre of its box by
default: where a person stands) in two steps:

1. *Candidate*: between two consecutive sightings of the track the anchor changes side of the
   line **and** the movement segment between the two anchor positions intersects the line
   segment (touching counts). Going around the end of a short line changes side without
   intersecting it and is not a candidate; the track's side is simply updated.
2. *Confirmation*: the anchor stays on the new side for ``min_frames`` consecutive sightings of
   the track, the crossing sighting included. A sighting back on the old side first cancels the
   candidate, so jitter on the line never counts twice. A sighting exactly on the line neither
   confirms nor cancels.

A confirmed crossing into the line's ``in`` side counts ``in``, the other way ``out``. Time comes
only from each frame's own timestamp, so a replay faster than realtime counts like live.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import numpy as np

from ..core.detections import Detections
from ..core.frame import Frame
from ..core.processor import ProcessContext, Processor
from .checks import is_count, is_number, parse_day, parse_zone

__all__ = ["Anchor", "Line", "LineCounter", "Side", "parse_lines"]

Side = Literal["left", "right"]
Anchor = Literal["bottom_center", "center"]

_SIDES: tuple[str, ...] = ("left", "right")
_ANCHORS: tuple[str, ...] = ("bottom_center", "center")
_LINE_KEYS = frozenset({"name", "start", "end", "in"})
DEFAULT_LINE_NAME = "middle"
_STATE_VERSION = 1


def _point(value: Any, what: str) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(is_number(v) for v in value)
    ):
        raise ValueError(f"{what} must be a pair of finite numbers [x, y], got {value!r}")
    return (float(value[0]), float(value[1]))


def _cross(ax: float, ay: float, bx: float, by: float, px: float, py: float) -> float:
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


@dataclass(frozen=True, slots=True)
class Line:
    """A directed counting segment in pixels; ``in_side`` names the side that counts as in.

    Left and right are as seen standing on ``start`` and looking at ``end`` on the picture as
    displayed (y grows downwards): for a line from ``(0, 100)`` to ``(640, 100)`` the left side
    is above it and the right side below. Raises ``ValueError`` for an empty name, a point that
    is not two finite numbers, ``start == end`` or an unknown side.
    """

    name: str
    start: tuple[float, float]
    end: tuple[float, float]
    in_side: Side

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"line name must be a non-empty string, got {self.name!r}")
        start = _point(self.start, f"line {self.name!r} start")
        end = _point(self.end, f"line {self.name!r} end")
        if start == end:
            raise ValueError(f"line {self.name!r} needs two distinct points, got {start} twice")
        if self.in_side not in _SIDES:
            raise ValueError(
                f"line {self.name!r} in side must be 'left' or 'right', got {self.in_side!r}"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Line:
        """Parse ``{"name": ..., "start": [x, y], "end": [x, y], "in": "left" | "right"}``.

        Raises ``ValueError`` naming the missing, unknown or malformed key.
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                "a line must be an object {name, start, end, in}, "
                f"got {type(data).__name__} {data!r}"
            )
        missing = sorted(_LINE_KEYS - set(data))
        if missing:
            raise ValueError(f"line {data!r} lacks {missing}; expected keys name, start, end, in")
        unknown = sorted(str(k) for k in set(data) - _LINE_KEYS)
        if unknown:
            raise ValueError(
                f"line {data!r} has unknown keys {unknown}; expected name, start, end, in"
            )
        return cls(
            name=data["name"],
            start=data["start"],
            end=data["end"],
            in_side=data["in"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The :meth:`from_dict` form (JSON-serialisable)."""
        return {
            "name": self.name,
            "start": list(self.start),
            "end": list(self.end),
            "in": self.in_side,
        }

    @property
    def in_sign(self) -> int:
        """The sign of :meth:`side_of` on the in side: left is negative with y pointing down."""
        return -1 if self.in_side == "left" else 1

    def side_of(self, x: float, y: float) -> int:
        """``-1`` left of the line, ``1`` right of it, ``0`` on its (infinite) extension."""
        (ax, ay), (bx, by) = self.start, self.end
        return _sign(_cross(ax, ay, bx, by, x, y))

    def intersects(self, px: float, py: float, qx: float, qy: float) -> bool:
        """Whether the segment from ``(px, py)`` to ``(qx, qy)`` touches this line segment.

        Only called when the two points are on different sides of the line, or one is on it,
        so the collinear case (both on the extension) never needs handling.
        """
        (ax, ay), (bx, by) = self.start, self.end
        o1 = _sign(_cross(ax, ay, bx, by, px, py))
        o2 = _sign(_cross(ax, ay, bx, by, qx, qy))
        o3 = _sign(_cross(px, py, qx, qy, ax, ay))
        o4 = _sign(_cross(px, py, qx, qy, bx, by))
        return o1 * o2 <= 0 and o3 * o4 <= 0


def _as_line(value: Line | Mapping[str, Any], i: int) -> Line:
    if isinstance(value, Line):
        return value
    try:
        return Line.from_dict(value)
    except ValueError as exc:
        raise ValueError(f"lines[{i}]: {exc}") from None


def parse_lines(lines: Sequence[Line | Mapping[str, Any]]) -> tuple[Line, ...]:
    """Counting lines from ``[{"name", "start": [x, y], "end": [x, y], "in"}, ...]``.

    Raises ``ValueError`` naming the line at fault and what it expected.
    """
    if isinstance(lines, str | bytes) or not isinstance(lines, Sequence) or not lines:
        raise ValueError(f"lines must be a non-empty list of lines or None, got {lines!r}")
    parsed = tuple(_as_line(v, i) for i, v in enumerate(lines))
    names = [line.name for line in parsed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"line names must be unique, repeated: {dupes}")
    return parsed


def _counts(value: Any, names: Iterable[str], what: str) -> dict[str, dict[str, int]]:
    """Per-line ``{"in", "out"}`` counts for exactly the known names (missing ones are zero)."""
    known = list(names)
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must map line names to {{'in': n, 'out': n}}, got {value!r}")
    unknown = sorted(str(k) for k in set(value) - set(known))
    if unknown:
        raise ValueError(f"{what} names unknown lines {unknown}; the lines are {known}")
    out: dict[str, dict[str, int]] = {}
    for name in known:
        entry = value.get(name, {"in": 0, "out": 0})
        if (
            not isinstance(entry, Mapping)
            or set(entry) - {"in", "out"}
            or not all(is_count(entry.get(k, 0)) for k in ("in", "out"))
        ):
            raise ValueError(
                f"{what}[{name!r}] must be {{'in': n, 'out': n}} with integers n >= 0, "
                f"got {entry!r}"
            )
        out[name] = {"in": int(entry.get("in", 0)), "out": int(entry.get("out", 0))}
    return out


class _Track:
    """What the counter remembers of one track: its last anchor and, per line, its side."""

    __slots__ = ("pending", "seen", "sides", "x", "y")

    def __init__(
        self,
        x: float,
        y: float,
        seen: int,
        sides: list[int],
        pending: list[tuple[int, int, float] | None],
    ) -> None:
        self.x = x
        self.y = y
        self.seen = seen
        # Confirmed side per line (-1, 1, or 0 until the anchor is first off the line).
        self.sides = sides
        # Per line, a candidate crossing: (new side, sightings on it so far, when it crossed).
        self.pending = pending

    def to_json(self, track_id: int) -> list[Any]:
        return [
            track_id,
            self.x,
            self.y,
            self.seen,
            list(self.sides),
            [None if p is None else list(p) for p in self.pending],
        ]

    @classmethod
    def from_json(cls, row: Any, n_lines: int) -> tuple[int, _Track]:
        bad = ValueError(
            "each snapshot track must be [track_id, x, y, seen, sides, pending] with "
            f"{n_lines} sides and pendings, got {row!r}"
        )
        if not isinstance(row, list) or len(row) != 6:
            raise bad
        tid, x, y, seen, sides, pending = row
        if not (
            isinstance(tid, int)
            and is_number(x)
            and is_number(y)
            and isinstance(seen, int)
            and isinstance(sides, list)
            and len(sides) == n_lines
            and all(s in (-1, 0, 1) for s in sides)
            and isinstance(pending, list)
            and len(pending) == n_lines
        ):
            raise bad
        parsed: list[tuple[int, int, float] | None] = []
        for p in pending:
            if p is None:
                parsed.append(None)
            elif (
                isinstance(p, list)
                and len(p) == 3
                and p[0] in (-1, 1)
                and is_count(p[1])
                and is_number(p[2])
            ):
                parsed.append((int(p[0]), int(p[1]), float(p[2])))
            else:
                raise bad
        return tid, cls(float(x), float(y), seen, [int(s) for s in sides], parsed)


_LIBRARY = ProcessContext(session_id="library")


def _tracked(detections: Any) -> Detections:
    """framebroker ``Detections`` as they are; supervision's with ``tracker_id`` as track ids."""
    if isinstance(detections, Detections):
        return detections
    xyxy = getattr(detections, "xyxy", None)
    if xyxy is None:
        raise TypeError(
            f"expected framebroker or supervision Detections, got {type(detections).__name__}"
        )
    tracker_id = getattr(detections, "tracker_id", None)
    if tracker_id is None and len(xyxy):
        raise ValueError(
            "supervision Detections need tracker_id to be counted: run a tracker first "
            "(framebroker.ByteTrack().track(detections))"
        )
    confidence = getattr(detections, "confidence", None)
    return Detections.from_arrays(
        xyxy,
        np.ones(len(xyxy)) if confidence is None else np.clip(confidence, 0, 1),
        getattr(detections, "class_id", None),
        tracker_id,
    )


class LineCounter(Processor):
    """Counts tracks crossing one or more lines; outputs the day's counts on every frame.

    Reads ``frame.detections`` as left by a tracker earlier in the pipeline and uses only
    detections with ``track_id >= 0`` (and, with ``classes``, of those classes). Each frame
    outputs::

        {"count_in": int, "count_out": int,              # all lines, today
         "lines": {name: {"in": int, "out": int}},
         "day": "YYYY-MM-DD",                            # local date in ``timezone``
         "crossings": [{"track_id", "line", "direction": "in" | "out",
                        "timestamp", "crossed_at"}]}     # confirmed on this frame only

    ``timestamp`` is the confirming frame's timestamp (the crossing belongs to that frame's
    counts and day); ``crossed_at`` the timestamp of the sighting on which the anchor crossed.

    Arguments (keyword only):

    - ``lines``: :class:`Line` objects or their dicts. ``None`` (the default) means one line
      named ``"middle"`` across the frame at half its height, in = below; it is placed on the
      first frame from the image size, or ``meta["width"]``/``meta["height"]`` when the frame
      carries no image (that frame raises ``ValueError`` if it has neither).
    - ``anchor``: ``"bottom_center"`` (where a person stands) or ``"center"``.
    - ``min_frames``: sightings on the new side that confirm a crossing (>= 1).
    - ``max_missing``: frames a track may go unseen before it is forgotten (>= 0). A pending
      crossing of a forgotten track is dropped, uncounted.
    - ``timezone``: IANA name; counts reset on the first frame of a later local date. A frame
      dated before the current day (a clock stepping back) is counted into the current day.
    - ``initial``: ``{"day": "YYYY-MM-DD", "lines": {name: {"in": n, "out": n}}}`` to resume
      a day; reset if the first frame falls on a later local date, else kept.
    - ``classes``: class ids to count, or ``None`` for all.

    The constructor raises ``ValueError`` naming the expected and the received value.
    """

    name = "line_counter"

    def __init__(
        self,
        *,
        lines: Sequence[Line | Mapping[str, Any]] | None = None,
        anchor: Anchor = "bottom_center",
        min_frames: int = 3,
        max_missing: int = 60,
        timezone: str = "UTC",
        initial: Mapping[str, Any] | None = None,
        classes: Iterable[int] | None = None,
    ) -> None:
        if anchor not in _ANCHORS:
            raise ValueError(f"anchor must be 'bottom_center' or 'center', got {anchor!r}")
        if not is_count(min_frames) or min_frames < 1:
            raise ValueError(f"min_frames must be an integer >= 1, got {min_frames!r}")
        if not is_count(max_missing):
            raise ValueError(f"max_missing must be an integer >= 0, got {max_missing!r}")
        self.anchor: Anchor = anchor
        self.min_frames = min_frames
        self.max_missing = max_missing
        self.timezone = parse_zone(timezone)
        self.classes = self._parse_classes(classes)
        self._configured = lines is not None
        self._lines: tuple[Line, ...] = parse_lines(lines) if lines is not None else ()
        names = [ln.name for ln in self._lines] if lines is not None else [DEFAULT_LINE_NAME]
        self._counts = {n: {"in": 0, "out": 0} for n in names}
        self._day: date | None = None
        if initial is not None:
            if not isinstance(initial, Mapping) or set(initial) - {"day", "lines"}:
                raise ValueError(
                    "initial must be {'day': 'YYYY-MM-DD', 'lines': {name: {'in': n, 'out': n}}}"
                    f", got {initial!r}"
                )
            self._day = parse_day(initial.get("day"), "initial['day']")
            self._counts = _counts(initial.get("lines", {}), names, "initial['lines']")
        self._frame = 0
        # Ordered by last sighting (a seen track is moved to the end), so pruning pops from the
        # front and stops at the first track still alive: O(pruned), not O(tracks).
        self._tracks: dict[int, _Track] = {}

    @staticmethod
    def _parse_classes(classes: Iterable[int] | None) -> frozenset[int] | None:
        if classes is None:
            return None
        if isinstance(classes, str | bytes) or not isinstance(classes, Iterable):
            raise ValueError(f"classes must be a list of class ids >= 0 or None, got {classes!r}")
        values = list(classes)
        if not values or not all(is_count(c) for c in values):
            raise ValueError(
                f"classes must be a non-empty list of class ids >= 0 or None, got {values!r}"
            )
        return frozenset(values)

    @property
    def lines(self) -> tuple[Line, ...]:
        """The lines counted; empty until the default line is placed on the first frame."""
        return self._lines

    @property
    def tracked(self) -> int:
        """How many tracks the counter currently remembers (bounded by ``max_missing``)."""
        return len(self._tracks)

    # -- per frame --------------------------------------------------------------------------

    def _place_default_line(self, frame: Frame) -> None:
        width: Any = frame.meta.get("width")
        height: Any = frame.meta.get("height")
        if frame.source is not None:
            width, height = frame.source.width, frame.source.height
        if not (is_number(width) and is_number(height) and width > 0 and height > 0):
            raise ValueError(
                "line_counter without lines places one across the middle of the frame and "
                "needs its size: send an image or meta width and height > 0, got "
                f"width={width!r} height={height!r}"
            )
        mid = height / 2.0
        self._lines = (Line(DEFAULT_LINE_NAME, (0.0, mid), (float(width), mid), "right"),)

    def _roll_day(self, timestamp: float) -> None:
        today = datetime.fromtimestamp(timestamp, self.timezone).date()
        if self._day is None or today > self._day:
            if self._day is not None:
                for c in self._counts.values():
                    c["in"] = c["out"] = 0
            self._day = today

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        if not self._lines:
            self._place_default_line(frame)
        timestamp = frame.timestamp
        self._roll_day(timestamp)
        self._frame += 1
        crossings: list[dict[str, Any]] = []
        dets = frame.detections
        if dets is not None and len(dets):
            xyxy = dets.xyxy.tolist()
            tids = dets.track_id.tolist()
            cls = dets.class_id.tolist()
            center = self.anchor == "center"
            done: set[int] = set()
            for box, tid, c in zip(xyxy, tids, cls, strict=True):
                if tid < 0 or tid in done or (self.classes is not None and c not in self.classes):
                    continue
                done.add(tid)
                x = (box[0] + box[2]) / 2.0
                y = (box[1] + box[3]) / 2.0 if center else box[3]
                self._observe(tid, x, y, timestamp, crossings)
        self._prune()
        # For drawing: an annotator later in the pipeline shows the lines it counts on.
        frame.meta["counting_lines"] = self._lines
        return {**self._totals(), "day": self._day_str(), "crossings": crossings}

    def _observe(
        self, tid: int, x: float, y: float, timestamp: float, crossings: list[dict[str, Any]]
    ) -> None:
        track = self._tracks.pop(tid, None)
        if track is None:
            sides = [line.side_of(x, y) for line in self._lines]
            self._tracks[tid] = _Track(x, y, self._frame, sides, [None] * len(self._lines))
            return
        for i, line in enumerate(self._lines):
            now = line.side_of(x, y)
            if now == 0:
                continue  # on the line: neither confirms nor cancels
            confirmed = track.sides[i]
            pending = track.pending[i]
            if pending is not None:
                new_side, seen, crossed_at = pending
                if now != new_side:
                    track.pending[i] = None  # back on the old side before confirmation
                elif seen + 1 >= self.min_frames:
                    track.pending[i] = None
                    track.sides[i] = now
                    self._count(line, tid, now, timestamp, crossed_at, crossings)
                else:
                    track.pending[i] = (new_side, seen + 1, crossed_at)
            elif now != confirmed:
                if confirmed == 0 or not line.intersects(track.x, track.y, x, y):
                    track.sides[i] = now  # first side known, or went around the line's end
                elif self.min_frames <= 1:
                    track.sides[i] = now
                    self._count(line, tid, now, timestamp, timestamp, crossings)
                else:
                    track.pending[i] = (now, 1, timestamp)
        track.x, track.y, track.seen = x, y, self._frame
        self._tracks[tid] = track

    def _count(
        self,
        line: Line,
        tid: int,
        side: int,
        timestamp: float,
        crossed_at: float,
        crossings: list[dict[str, Any]],
    ) -> None:
        direction = "in" if side == line.in_sign else "out"
        self._counts[line.name][direction] += 1
        crossings.append(
            {
                "track_id": tid,
                "line": line.name,
                "direction": direction,
                "timestamp": timestamp,
                "crossed_at": crossed_at,
            }
        )

    def _prune(self) -> None:
        tracks = self._tracks
        oldest = self._frame - self.max_missing
        while tracks:
            tid = next(iter(tracks))
            if tracks[tid].seen >= oldest:
                break
            del tracks[tid]

    # -- as a library -----------------------------------------------------------------------

    def count(
        self,
        detections: Any,
        *,
        timestamp: float | None = None,
        frame_size: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """Count one frame of tracked detections outside a pipeline; the same output as
        :meth:`process`.

        Takes supervision ``Detections`` (``xyxy``, ``tracker_id``, ``class_id``; duck-typed,
        so supervision stays optional: the output of a supervision tracker, or of
        :meth:`ByteTrack.track <framebroker.ByteTrack.track>`) or framebroker's
        :class:`~framebroker.core.Detections`. ``timestamp`` is the frame's time in seconds
        since 1970 (now when ``None``); ``frame_size`` ``(width, height)`` places the default
        line when the counter was built without lines. Raises ``TypeError`` for anything
        else, ``ValueError`` for detections without track ids.
        """
        frame = Frame(detections=_tracked(detections))
        if timestamp is not None:
            frame.meta["timestamp"] = timestamp
        if frame_size is not None:
            frame.meta["width"], frame.meta["height"] = frame_size
        out = self.process(frame, _LIBRARY)
        assert out is not None
        return out

    # -- reporting and resuming -------------------------------------------------------------

    def _day_str(self) -> str | None:
        return None if self._day is None else self._day.isoformat()

    def _totals(self) -> dict[str, Any]:
        return {
            "count_in": sum(c["in"] for c in self._counts.values()),
            "count_out": sum(c["out"] for c in self._counts.values()),
            "lines": {name: dict(c) for name, c in self._counts.items()},
        }

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        """``{"line_counter": {"day", "count_in", "count_out", "lines"}}`` for the summary."""
        return {"line_counter": {"day": self._day_str(), **self._totals()}}

    def snapshot(self) -> dict[str, Any] | None:
        """Counts, day, placed lines and every remembered track, as JSON-ready values."""
        return {
            "version": _STATE_VERSION,
            "day": self._day_str(),
            "lines": {name: dict(c) for name, c in self._counts.items()},
            "geometry": [line.to_dict() for line in self._lines],
            "frame": self._frame,
            "tracks": [t.to_json(tid) for tid, t in self._tracks.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot`; raises ``ValueError`` if it does not fit these lines.

        A counter built with explicit lines needs the snapshot's lines to be the same; one
        built with the default line takes the line the snapshot placed.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"expected a line_counter snapshot of version {_STATE_VERSION}, got {state!r}"
            )
        geometry = state.get("geometry")
        if not isinstance(geometry, list):
            raise ValueError(f"snapshot geometry must be a list of lines, got {geometry!r}")
        lines = tuple(_as_line(g, i) for i, g in enumerate(geometry))
        if self._configured and lines and lines != self._lines:
            raise ValueError(
                f"snapshot lines {[ln.to_dict() for ln in lines]} differ from this counter's "
                f"{[ln.to_dict() for ln in self._lines]}"
            )
        lines = lines or self._lines
        names = [ln.name for ln in lines] if lines else [DEFAULT_LINE_NAME]
        counts = _counts(state.get("lines"), names, "snapshot lines")
        day = None if state.get("day") is None else parse_day(state.get("day"), "snapshot day")
        frame = state.get("frame")
        if not is_count(frame):
            raise ValueError(f"snapshot frame must be an integer >= 0, got {frame!r}")
        rows = state.get("tracks")
        if not isinstance(rows, list) or (rows and not lines):
            raise ValueError(f"snapshot tracks must be a list (empty without lines), got {rows!r}")
        tracks = dict(_Track.from_json(row, len(lines)) for row in rows)
        self._lines, self._counts, self._day = lines, counts, day
        self._frame = frame
        self._tracks = tracks
