"""Association costs and assignment, as the reference ByteTrack computes them."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

__all__ = ["assign", "fuse_score", "iou_distance"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

_EMPTY = np.zeros(0, np.int64)


def iou_distance(a: F64, b: F64) -> F64:
    """``1 - IoU`` between boxes ``a`` (n, 4) and ``b`` (m, 4), xyxy.

    Uses the ``+1`` pixel convention of the reference (cython_bbox): a box from x1 to x2
    covers ``x2 - x1 + 1`` pixels. Matching it keeps results identical to the reference.
    """
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        return np.zeros((n, m))
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    iw = np.minimum(a[:, 2:3], b[:, 2]) - np.maximum(a[:, 0:1], b[:, 0]) + 1
    ih = np.minimum(a[:, 3:4], b[:, 3]) - np.maximum(a[:, 1:2], b[:, 1]) + 1
    np.maximum(iw, 0, out=iw)
    np.maximum(ih, 0, out=ih)
    inter = iw * ih
    return 1.0 - inter / (area_a[:, None] + area_b - inter)


def fuse_score(cost: F64, scores: F64) -> F64:
    """Fold detection confidence into the IoU cost: ``1 - IoU * score``."""
    if cost.size == 0:
        return cost
    return 1.0 - (1.0 - cost) * scores


def assign(cost: F64, thresh: float) -> tuple[I64, I64]:
    """Minimum-cost matching that leaves pairs costing ``thresh`` or more unmatched.

    The reference calls ``lap.lapjv(cost, extend_cost=True, cost_limit=thresh)``: a square
    problem padded so that leaving a row and a column unmatched costs ``thresh``. Its optimum
    minimises the sum of ``cost - thresh`` over matched pairs, which is what a rectangular
    assignment on ``min(cost - thresh, 0)`` finds, on a matrix a quarter the size.
    Returns matched row and column indices.
    """
    if cost.size == 0:
        return _EMPTY, _EMPTY
    gain = cost - thresh
    np.minimum(gain, 0.0, out=gain)
    rows, cols = linear_sum_assignment(gain)
    keep = gain[rows, cols] < 0
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)
