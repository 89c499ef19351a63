"""One ByteTrack frame as a single compiled function (Numba, no GIL held).

Why compiled: a frame touches a few dozen tracks, so the NumPy version spends most of its time
on per-call overhead, not arithmetic. Here a frame is one call. The arithmetic is exactly that
of :mod:`.kalman` and :mod:`.matching` (the reference's), written as loops.

Track table layout (one row per track) is defined in :mod:`.tracker`; rows ``[0, n)`` are live.
The caller guarantees room for ``n + len(scores)`` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

from .kalman import STD_POSITION, STD_VELOCITY

__all__ = ["PARAMS", "linear_assignment", "step"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Fn = TypeVar("Fn", bound=Callable[..., Any])


def _jit(fn: Fn) -> Fn:
    return cast(Fn, numba.njit(cache=True, nogil=True)(fn))


# Indices into the params vector given to step().
PARAMS = (
    "track_thresh",
    "match_thresh",
    "low_thresh",
    "det_thresh",
    "second_match_thresh",
    "unconfirmed_match_thresh",
    "duplicate_iou_distance",
    "fuse_score",
    "max_time_lost",
)
(
    P_TRACK,
    P_MATCH,
    P_LOW,
    P_DET,
    P_SECOND,
    P_UNCONF,
    P_DUP,
    P_FUSE,
    P_MAXLOST,
) = range(len(PARAMS))

# Float columns: pos 0:4 (cx, cy, a, h), vel 4:8, p00 8:12, p01 12:16, p11 16:20, score 20.
C_VEL, C_P00, C_P01, C_P11, C_SCORE = 4, 8, 12, 16, 20
# Integer columns.
TID, STATE, LIST, ACTIVE, LAST, START, TLEN, REMOVED_AT, DET = range(9)
TRACKED, LOST, REMOVED = 1, 2, 3
IN_TRACKED, IN_LOST = 0, 1

_WP, _WV = STD_POSITION, STD_VELOCITY


@_jit
def linear_assignment(cost: F64) -> tuple[I64, I64]:
    """Minimum-cost full matching of the smaller side (shortest augmenting paths).

    The algorithm of ``scipy.optimize.linear_sum_assignment`` (Crouse, 2016), in the same
    order, so ties resolve the same way. Costs must be finite.
    """
    nr, nc = cost.shape
    transpose = nr > nc
    c = cost.T.copy() if transpose else cost
    n, m = c.shape
    u = np.zeros(n)
    v = np.zeros(m)
    shortest = np.empty(m)
    path = np.full(m, -1, np.int64)
    col4row = np.full(n, -1, np.int64)
    row4col = np.full(m, -1, np.int64)
    sr = np.zeros(n, np.bool_)
    sc = np.zeros(m, np.bool_)
    remaining = np.empty(m, np.int64)
    for cur in range(n):
        min_val = 0.0
        i = cur
        num_remaining = m
        for it in range(m):
            remaining[it] = m - it - 1
        sr[:] = False
        sc[:] = False
        shortest[:] = np.inf
        sink = -1
        while sink == -1:
            index = -1
            lowest = np.inf
            sr[i] = True
            for it in range(num_remaining):
                j = remaining[it]
                r = min_val + c[i, j] - u[i] - v[j]
                if r < shortest[j]:
                    path[j] = i
                    shortest[j] = r
                if shortest[j] < lowest or (shortest[j] == lowest and row4col[j] == -1):
                    lowest = shortest[j]
                    index = it
            min_val = lowest
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            sc[j] = True
            num_remaining -= 1
            remaining[index] = remaining[num_remaining]
        u[cur] += min_val
        for i in range(n):
            if sr[i] and i != cur:
                u[i] += min_val - shortest[col4row[i]]
        for j in range(m):
            if sc[j]:
                v[j] -= min_val - shortest[j]
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            j, col4row[i] = col4row[i], j
            if i == cur:
                break
    rows = np.arange(n)
    if transpose:
        # col4row maps each (original) column to its row; report in row order.
        order = np.argsort(col4row)
        return col4row[order], rows[order]
    return rows, col4row


@_jit
def _box(F: F64, r: int, out: F64) -> None:
    h = F[r, 3]
    w = F[r, 2] * h
    out[0] = F[r, 0] - w / 2
    out[1] = F[r, 1] - h / 2
    out[2] = out[0] + w
    out[3] = out[1] + h


@_jit
def _iou_cost(a: F64, b: F64) -> float:
    """1 - IoU with the reference's +1 pixel convention."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    if iw <= 0:
        return 1.0
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ih <= 0:
        return 1.0
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return float(1.0 - inter / (area_a + area_b - inter))


@_jit
def _associate(
    tb: F64,
    tracks: I64,
    nt: int,
    boxes: F64,
    scores: F64,
    dets: I64,
    nd: int,
    thresh: float,
    fuse: bool,
    match_t: I64,
    match_d: I64,
) -> int:
    """Match ``tracks[:nt]`` (boxes ``tb``) to ``dets[:nd]``; fills positions, returns count.

    Equivalent to ``lap.lapjv(cost, extend_cost=True, cost_limit=thresh)``: minimise the sum of
    ``cost - thresh`` over matched pairs, never matching a pair costing ``thresh`` or more.
    """
    if nt == 0 or nd == 0:
        return 0
    gain = np.empty((nt, nd))
    for i in range(nt):
        for k in range(nd):
            d = dets[k]
            cost = _iou_cost(tb[i], boxes[d])
            if fuse:
                cost = 1.0 - (1.0 - cost) * scores[d]
            g = cost - thresh
            gain[i, k] = g if g < 0.0 else 0.0
    rows, cols = linear_assignment(gain)
    count = 0
    for x in range(rows.shape[0]):
        if gain[rows[x], cols[x]] < 0.0:
            match_t[count] = rows[x]
            match_d[count] = cols[x]
            count += 1
    return count


@_jit
def _correct(F: F64, I: I64, r: int, box: F64, score: float, det: int, fid: int) -> None:
    """Kalman update of track ``r`` with a detection (xyxy); it becomes tracked and active."""
    w = box[2] - box[0]
    h = box[3] - box[1]
    z0 = box[0] + w / 2
    z1 = box[1] + h / 2
    z2 = w / h
    z3 = h
    hp = F[r, 3]
    for c in range(4):
        z = z0 if c == 0 else (z1 if c == 1 else (z2 if c == 2 else z3))
        std = 1e-1 if c == 2 else _WP * hp
        p00 = F[r, C_P00 + c]
        p01 = F[r, C_P01 + c]
        s = p00 + std * std
        k0 = p00 / s
        k1 = p01 / s
        innov = z - F[r, c]
        F[r, c] += k0 * innov
        F[r, C_VEL + c] += k1 * innov
        F[r, C_P00 + c] = p00 - k0 * p00
        F[r, C_P01 + c] = p01 - k0 * p01
        F[r, C_P11 + c] = F[r, C_P11 + c] - k1 * p01
    F[r, C_SCORE] = score
    I[r, TLEN] = I[r, TLEN] + 1 if I[r, STATE] == TRACKED else 0
    I[r, STATE] = TRACKED
    I[r, LIST] = IN_TRACKED
    I[r, ACTIVE] = 1
    I[r, LAST] = fid
    I[r, DET] = det


@_jit
def _predict(F: F64, r: int) -> None:
    h = F[r, 3]
    for c in range(4):
        qp = 1e-2 if c == 2 else _WP * h
        qv = 1e-5 if c == 2 else _WV * h
        p01 = F[r, C_P01 + c]
        p11 = F[r, C_P11 + c]
        F[r, c] += F[r, C_VEL + c]
        F[r, C_P00 + c] += 2 * p01 + p11 + qp * qp
        F[r, C_P01 + c] = p01 + p11
        F[r, C_P11 + c] = p11 + qv * qv


@_jit
def _start(F: F64, I: I64, r: int, box: F64, score: float, det: int, fid: int, tid: int) -> None:
    w = box[2] - box[0]
    h = box[3] - box[1]
    F[r, 0] = box[0] + w / 2
    F[r, 1] = box[1] + h / 2
    F[r, 2] = w / h
    F[r, 3] = h
    for c in range(4):
        sp = 1e-2 if c == 2 else 2 * _WP * h
        sv = 1e-5 if c == 2 else 10 * _WV * h
        F[r, C_VEL + c] = 0.0
        F[r, C_P00 + c] = sp * sp
        F[r, C_P01 + c] = 0.0
        F[r, C_P11 + c] = sv * sv
    F[r, C_SCORE] = score
    I[r, TID] = tid
    I[r, STATE] = TRACKED
    I[r, LIST] = IN_TRACKED
    I[r, ACTIVE] = 1 if fid == 1 else 0
    I[r, LAST] = fid
    I[r, START] = fid
    I[r, TLEN] = 0
    I[r, REMOVED_AT] = 0
    I[r, DET] = det


@_jit
def step(
    F: F64, I: I64, n: int, boxes: F64, scores: F64, fid: int, next_id: int, params: F64
) -> tuple[int, int]:
    """Advance the track table one frame; returns the new row count and next id."""
    m = scores.shape[0]
    track_thresh = params[P_TRACK]
    low_thresh = params[P_LOW]
    fuse = params[P_FUSE] != 0.0
    for r in range(n):
        I[r, DET] = -1

    high = np.empty(m, np.int64)
    low = np.empty(m, np.int64)
    nh = 0
    nl = 0
    for d in range(m):
        s = scores[d]
        if s > track_thresh:
            high[nh] = d
            nh += 1
        elif s > low_thresh and s < track_thresh:
            low[nl] = d
            nl += 1

    pool = np.empty(n, np.int64)
    unconf = np.empty(n, np.int64)
    lost0 = np.empty(n, np.int64)
    npool = 0
    nu = 0
    nlost0 = 0
    for r in range(n):
        if I[r, LIST] == IN_TRACKED:
            if I[r, ACTIVE] == 1:
                pool[npool] = r
                npool += 1
            else:
                unconf[nu] = r
                nu += 1
    for r in range(n):
        if I[r, LIST] == IN_LOST:
            pool[npool] = r
            npool += 1
            lost0[nlost0] = r
            nlost0 += 1

    cap = max(n, 1)
    match_t = np.empty(cap, np.int64)
    match_d = np.empty(cap, np.int64)
    tb = np.empty((cap, 4))

    # First association: predicted confirmed + lost tracks against high boxes.
    for x in range(npool):
        r = pool[x]
        if I[r, STATE] != TRACKED:
            F[r, 7] = 0.0
        _predict(F, r)
        _box(F, r, tb[x])
    nm = _associate(
        tb, pool, npool, boxes, scores, high, nh, params[P_MATCH], fuse, match_t, match_d
    )
    pool_done = np.zeros(npool, np.bool_)
    high_done = np.zeros(max(nh, 1), np.bool_)
    for x in range(nm):
        r = pool[match_t[x]]
        d = high[match_d[x]]
        _correct(F, I, r, boxes[d], scores[d], d, fid)
        pool_done[match_t[x]] = True
        high_done[match_d[x]] = True

    # Second association: unmatched tracked tracks against low boxes.
    rt = np.empty(max(npool, 1), np.int64)
    nrt = 0
    for x in range(npool):
        r = pool[x]
        if not pool_done[x] and I[r, STATE] == TRACKED:
            rt[nrt] = r
            tb[nrt] = tb[x]
            nrt += 1
    nm = _associate(tb, rt, nrt, boxes, scores, low, nl, params[P_SECOND], False, match_t, match_d)
    rt_done = np.zeros(max(nrt, 1), np.bool_)
    for x in range(nm):
        r = rt[match_t[x]]
        d = low[match_d[x]]
        _correct(F, I, r, boxes[d], scores[d], d, fid)
        rt_done[match_t[x]] = True
    for x in range(nrt):
        if not rt_done[x]:
            I[rt[x], STATE] = LOST
            I[rt[x], LIST] = IN_LOST

    # Tracks born last frame, not predicted, against the high boxes left.
    rest = np.empty(max(nh, 1), np.int64)
    nrest = 0
    for k in range(nh):
        if not high_done[k]:
            rest[nrest] = high[k]
            nrest += 1
    for x in range(nu):
        _box(F, unconf[x], tb[x])
    nm = _associate(
        tb, unconf, nu, boxes, scores, rest, nrest, params[P_UNCONF], fuse, match_t, match_d
    )
    drop = np.zeros(n + m, np.bool_)
    unconf_done = np.zeros(max(nu, 1), np.bool_)
    rest_done = np.zeros(max(nrest, 1), np.bool_)
    for x in range(nm):
        r = unconf[match_t[x]]
        d = rest[match_d[x]]
        _correct(F, I, r, boxes[d], scores[d], d, fid)
        unconf_done[match_t[x]] = True
        rest_done[match_d[x]] = True
    for x in range(nu):
        if not unconf_done[x]:
            drop[unconf[x]] = True

    # Lost tracks past the buffer are removed, but linger in the lost list for this frame;
    # ids removed in an earlier frame leave the lost list now (the reference's quirk).
    max_lost = params[P_MAXLOST]
    for x in range(nlost0):
        r = lost0[x]
        if fid - I[r, LAST] > max_lost:
            I[r, STATE] = REMOVED
    for r in range(n):
        if I[r, LIST] == IN_LOST and I[r, REMOVED_AT] > 0 and I[r, REMOVED_AT] < fid:
            drop[r] = True
        if I[r, STATE] == REMOVED and I[r, REMOVED_AT] == 0:
            I[r, REMOVED_AT] = fid

    # New tracks from the high boxes nobody took.
    total = n
    for x in range(nrest):
        if not rest_done[x]:
            d = rest[x]
            if scores[d] >= params[P_DET]:
                _start(F, I, total, boxes[d], scores[d], d, fid, next_id)
                next_id += 1
                total += 1

    # Tracked/lost duplicates: the longer-lived survives; a tie goes to the lost one. Every
    # pair is judged, as in the reference, before any of them is dropped.
    eligible = ~drop
    a = np.empty(4)
    b = np.empty(4)
    dup = params[P_DUP]
    for p in range(total):
        if not eligible[p] or I[p, LIST] != IN_TRACKED or I[p, STATE] != TRACKED:
            continue
        _box(F, p, a)
        for q in range(n):
            if not eligible[q] or I[q, LIST] != IN_LOST:
                continue
            _box(F, q, b)
            if _iou_cost(a, b) < dup:
                if I[p, LAST] - I[p, START] > I[q, LAST] - I[q, START]:
                    drop[q] = True
                else:
                    drop[p] = True

    kept = 0
    for r in range(total):
        if not drop[r]:
            if kept != r:
                F[kept] = F[r]
                I[kept] = I[r]
            kept += 1
    return kept, next_id
