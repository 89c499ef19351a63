"""The frames the cluster and checkpoint tests feed: boxes that appear one after another and
move, so a tracker starts a new track id every few frames and a session resumed from the wrong
state shows it."""

from __future__ import annotations

import numpy as np

from framebroker.core.detections import Detections
from framebroker.sessions import FrameIn, FrameOut


def boxes(k: int) -> list[list[float]]:
    """Frame ``k``: box ``i`` appears at frame ``4 i`` and moves 3 px a frame."""
    rows = []
    for i in range(min(6, k // 4 + 1)):
        x = 20.0 + 90.0 * i + 3.0 * (k - 4 * i)
        y = 30.0 + 40.0 * i
        rows.append([x, y, x + 40.0, y + 80.0, 0.9, 0])
    return rows


def frame(k: int) -> FrameIn:
    rows = np.asarray(boxes(k), dtype=np.float64)
    return FrameIn(detections=Detections.from_arrays(rows[:, :4], rows[:, 4], rows[:, 5]))


def track_ids(out: FrameOut) -> list[int]:
    assert out.detections is not None
    return [int(t) for t in out.detections.track_id]
