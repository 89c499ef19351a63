"""Reading MOTChallenge files and running a tracker over them (for evaluation and benchmarks)."""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .config import ByteTrackConfig
from .tracker import ByteTrack

__all__ = ["MotSequence", "load_sequence", "track_sequence"]

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MotSequence:
    """Detections of one sequence, grouped per frame (1-based), boxes as xyxy."""

    name: str
    frame_rate: float
    length: int
    frames: dict[int, tuple[F64, F64]]

    def __iter__(self) -> Iterator[tuple[int, F64, F64]]:
        empty = (np.zeros((0, 4)), np.zeros(0))
        for fid in range(1, self.length + 1):
            boxes, scores = self.frames.get(fid, empty)
            yield fid, boxes, scores


def load_sequence(seq_dir: Path) -> MotSequence:
    """``seqinfo.ini`` and ``det/det.txt`` (``frame,-1,x,y,w,h,score,...``) of a sequence."""
    info = configparser.ConfigParser()
    info.read(seq_dir / "seqinfo.ini")
    seq = info["Sequence"]
    raw = np.loadtxt(seq_dir / "det" / "det.txt", delimiter=",", ndmin=2)
    raw = raw[np.argsort(raw[:, 0], kind="stable")]
    frames: dict[int, tuple[F64, F64]] = {}
    ids = raw[:, 0].astype(np.int64)
    bounds = np.flatnonzero(np.diff(ids)) + 1
    for chunk in np.split(raw, bounds):
        xyxy = chunk[:, 2:6].copy()
        xyxy[:, 2:] += xyxy[:, :2]
        frames[int(chunk[0, 0])] = (xyxy, chunk[:, 6].copy())
    length = max(int(seq["seqLength"]), max(frames, default=0))
    return MotSequence(seq_dir.name, float(seq["frameRate"]), length, frames)


def track_sequence(seq: MotSequence, config: ByteTrackConfig) -> F64:
    """Rows ``frame, id, x, y, w, h, score`` for every confirmed track of every frame."""
    tracker = ByteTrack(config)
    out: list[F64] = []
    for fid, boxes, scores in seq:
        res = tracker.update(boxes, scores)
        if len(res):
            rows = np.empty((len(res), 7))
            rows[:, 0] = fid
            rows[:, 1] = res.track_id
            rows[:, 2:4] = res.xyxy[:, :2]
            rows[:, 4:6] = res.xyxy[:, 2:] - res.xyxy[:, :2]
            rows[:, 6] = res.score
            out.append(rows)
    return np.concatenate(out) if out else np.zeros((0, 7))
