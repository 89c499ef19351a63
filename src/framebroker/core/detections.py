"""Per-frame detections as column arrays, built from and returned to client rows.

Clients send boxes as rows ``[a, b, c, d, score, class]`` in one of three box formats. The
tracker and every processor work on columns (``xyxy``, ``score``, ``class_id``,
``track_id``); ``index`` remembers which input row each detection came from so that a
transport can hand the client its own rows back unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidBoxes, PayloadTooLarge

__all__ = ["BoxFormat", "Detections", "rows_of"]

ROW_LENGTH = 6
MAX_COORDINATE = 1e9
"""Box numbers further than this from 0 are refused: no picture is that large, and sums of
numbers near the float limit overflow to infinity on the way to ``xyxy``."""
MAX_CLASS_ID = 2**31 - 1


class BoxFormat(StrEnum):
    """How the first four numbers of a row describe a box."""

    XYXY = "xyxy"  # left, top, right, bottom
    XYWH = "xywh"  # left, top, width, height
    CXCYWH = "cxcywh"  # centre x, centre y, width, height

    @classmethod
    def parse(cls, value: str, *, field: str = "box_format") -> BoxFormat:
        """Read a format name; raises :class:`InvalidBoxes` naming the accepted ones."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            accepted = ", ".join(f.value for f in cls)
            raise InvalidBoxes(
                f"unknown box format {value!r}; expected one of {accepted}", field=field
            ) from None


def _to_xyxy(boxes: NDArray[np.float64], fmt: BoxFormat) -> NDArray[np.float64]:
    if fmt is BoxFormat.XYXY:
        return boxes
    out = boxes.copy()
    if fmt is BoxFormat.XYWH:
        out[:, 2:] += boxes[:, :2]
    else:
        half = boxes[:, 2:] / 2.0
        out[:, :2] = boxes[:, :2] - half
        out[:, 2:] = boxes[:, :2] + half
    return out


def _from_xyxy(xyxy: NDArray[np.float64], fmt: BoxFormat) -> NDArray[np.float64]:
    if fmt is BoxFormat.XYXY:
        return xyxy.copy()
    out = xyxy.copy()
    wh = xyxy[:, 2:] - xyxy[:, :2]
    if fmt is BoxFormat.XYWH:
        out[:, 2:] = wh
    else:
        out[:, :2] = xyxy[:, :2] + wh / 2.0
        out[:, 2:] = wh
    return out


def _check_row(i: int, row: Any, fmt: BoxFormat) -> None:
    where = f"boxes[{i}]"
    if not isinstance(row, list | tuple):
        raise InvalidBoxes(
            f"{where}: expected a list of {ROW_LENGTH} numbers, got {type(row).__name__}",
            field=where,
        )
    if len(row) != ROW_LENGTH:
        raise InvalidBoxes(
            f"{where}: expected {ROW_LENGTH} numbers [a, b, c, d, score, class], got {len(row)}",
            field=where,
        )
    for j, v in enumerate(row):
        if type(v) is not int and type(v) is not float:
            raise InvalidBoxes(
                f"{where}[{j}]: expected a number, got {type(v).__name__} {v!r}",
                field=f"{where}[{j}]",
            )
        if not math.isfinite(v):
            raise InvalidBoxes(f"{where}[{j}]: expected a finite number, got {v}", field=where)
        if j < 4 and abs(v) > MAX_COORDINATE:
            raise InvalidBoxes(
                f"{where}[{j}]: box numbers must be within ±{MAX_COORDINATE:g}, got {v}",
                field=f"{where}[{j}]",
            )
    a, b, c, d, score, cls = row
    if fmt is BoxFormat.XYXY:
        if c <= a or d <= b:
            raise InvalidBoxes(
                f"{where}: xyxy box needs right > left and bottom > top, got {row[:4]}",
                field=where,
            )
    elif c <= 0 or d <= 0:
        raise InvalidBoxes(
            f"{where}: {fmt.value} box needs width > 0 and height > 0, got {c} x {d}",
            field=where,
        )
    if not 0 <= score <= 100:
        raise InvalidBoxes(
            f"{where}[4]: score must be in [0, 1] (or a percent in (1, 100]), got {score}",
            field=f"{where}[4]",
        )
    if not 0 <= cls <= MAX_CLASS_ID or cls != int(cls):
        raise InvalidBoxes(
            f"{where}[5]: class must be a non-negative integer up to {MAX_CLASS_ID}, got {cls}",
            field=f"{where}[5]",
        )


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """N detections in column form; validated at construction.

    ``score`` is always in [0, 1]; ``track_id`` is -1 where no track owns the detection;
    ``index`` is the position of each detection's row in the client's request.
    """

    xyxy: NDArray[np.float64]
    score: NDArray[np.float64]
    class_id: NDArray[np.int64]
    track_id: NDArray[np.int64]
    index: NDArray[np.int64]

    def __post_init__(self) -> None:
        n = self.xyxy.shape[0] if self.xyxy.ndim == 2 else -1
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {self.xyxy.shape}")
        for name in ("score", "class_id", "track_id", "index"):
            col = getattr(self, name)
            if col.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {col.shape}")

    @classmethod
    def empty(cls) -> Detections:
        return cls.from_arrays(np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def from_arrays(
        cls,
        xyxy: Any,
        score: Any,
        class_id: Any = None,
        track_id: Any = None,
    ) -> Detections:
        """Build from array-likes; missing class ids are 0 and missing track ids -1."""
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        n = boxes.shape[0]
        return cls(
            xyxy=boxes,
            score=np.asarray(score, dtype=np.float64).reshape(n),
            class_id=(
                np.zeros(n, np.int64)
                if class_id is None
                else np.asarray(class_id, dtype=np.int64).reshape(n)
            ),
            track_id=(
                np.full(n, -1, np.int64)
                if track_id is None
                else np.asarray(track_id, dtype=np.int64).reshape(n)
            ),
            index=np.arange(n, dtype=np.int64),
        )

    @classmethod
    def from_rows(
        cls, rows: Any, box_format: BoxFormat = BoxFormat.XYWH, *, max_rows: int = 10_000
    ) -> Detections:
        """Parse client rows ``[a, b, c, d, score, class]``.

        Scores above 1 are read as percents. Raises :class:`InvalidBoxes` naming the first
        bad row and what was wrong with it, or :class:`PayloadTooLarge` past ``max_rows``.
        """
        if not isinstance(rows, list):
            raise InvalidBoxes(
                f"boxes: expected a list of rows, got {type(rows).__name__}", field="boxes"
            )
        if len(rows) > max_rows:
            raise PayloadTooLarge(
                f"boxes: {len(rows)} rows is over the limit of {max_rows}", field="boxes"
            )
        for i, row in enumerate(rows):
            _check_row(i, row, box_format)
        if not rows:
            return cls.empty()
        arr = np.array(rows, dtype=np.float64)
        score = arr[:, 4]
        score = np.where(score > 1.0, score / 100.0, score)
        return cls(
            xyxy=_to_xyxy(arr[:, :4], box_format),
            score=score,
            class_id=arr[:, 5].astype(np.int64),
            track_id=np.full(len(rows), -1, np.int64),
            index=np.arange(len(rows), dtype=np.int64),
        )

    @classmethod
    def from_supervision(cls, detections: Any) -> Detections:
        """Adopt a ``supervision.Detections`` (duck-typed: supervision is optional)."""
        n = len(detections.xyxy)
        conf = detections.confidence if detections.confidence is not None else np.ones(n)
        return cls.from_arrays(
            detections.xyxy, conf, detections.class_id, getattr(detections, "tracker_id", None)
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def take(self, indices: NDArray[np.int64] | NDArray[np.bool_]) -> Detections:
        """The subset at ``indices`` (or a boolean mask), keeping each row's origin."""
        return Detections(
            xyxy=self.xyxy[indices],
            score=self.score[indices],
            class_id=self.class_id[indices],
            track_id=self.track_id[indices],
            index=self.index[indices],
        )

    def with_tracks(self, indices: NDArray[np.int64], track_ids: NDArray[np.int64]) -> Detections:
        """The detections at ``indices``, owned by ``track_ids`` (same length)."""
        sub = self.take(indices)
        return Detections(sub.xyxy, sub.score, sub.class_id, track_ids.astype(np.int64), sub.index)

    def boxes(self, box_format: BoxFormat = BoxFormat.XYXY) -> NDArray[np.float64]:
        """The boxes in ``box_format`` as an (N, 4) array."""
        return _from_xyxy(self.xyxy, box_format)

    def rows(self, box_format: BoxFormat = BoxFormat.XYXY) -> list[list[float]]:
        """Rows ``[a, b, c, d, score, class, track_id]`` for JSON replies."""
        out = np.column_stack(
            [self.boxes(box_format), self.score, self.class_id, self.track_id]
        ).tolist()
        return [[*map(float, r[:5]), int(r[5]), int(r[6])] for r in out]

    def __repr__(self) -> str:
        return f"Detections(n={len(self)})"


def rows_of(source_rows: Sequence[Any], detections: Detections) -> list[list[Any]]:
    """The client's own rows for ``detections`` with each track id appended, unchanged."""
    return [
        [*source_rows[i], tid]
        for i, tid in zip(detections.index.tolist(), detections.track_id.tolist(), strict=True)
    ]
