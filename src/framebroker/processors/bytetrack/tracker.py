"""ByteTrack: multi-object tracking by associating every detection box (Zhang et al., 2022).

This follows the reference implementation (ifzhang/ByteTrack, ``byte_tracker.py``) step for
step, quirks included, so its output matches the reference row for row; it differs in how
tracks are stored. The reference keeps one Python object per track and runs a dense 8x8 Kalman
filter per object; here all tracks live in two arrays (floats and integers, one row per track)
and every step is a vectorised operation over the rows involved.

Per frame (reference step names):

1. split detections into high (``> track_thresh``) and low (``low_thresh < s < track_thresh``);
2. first association: confirmed tracks plus lost tracks, Kalman-predicted, against high boxes
   on IoU fused with the score;
3. second association: still-unmatched tracked tracks against low boxes on IoU; the rest of
   them are marked lost;
4. tracks born last frame (unconfirmed, not predicted) against the remaining high boxes;
   unmatched ones are removed;
5. remaining high boxes scoring ``>= new_track_thresh`` start tracks;
6. lost tracks older than the buffer are removed; tracked/lost duplicates are resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import kalman
from .config import ByteTrackConfig
from .matching import assign, fuse_score, iou_distance

__all__ = ["ByteTrack", "TrackOutput"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

# Float columns: Kalman state and the last detection score.
POS, VEL, P00, P01, P11 = (slice(4 * i, 4 * i + 4) for i in range(5))
SCORE = 20
N_FLOAT = 21
# Integer columns.
TID, STATE, LIST, ACTIVE, LAST, START, TLEN, REMOVED_AT, DET = range(9)
N_INT = 9

TRACKED, LOST, REMOVED = 1, 2, 3  # track state
IN_TRACKED, IN_LOST = 0, 1  # which of the reference's two lists holds the track

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class TrackOutput:
    """Tracks that are confirmed and were matched (or started) this frame.

    ``xyxy`` is the Kalman-filtered box (what the reference reports); ``det_index`` points at
    the detection each track took, in the arrays given to :meth:`ByteTrack.update`.
    """

    track_id: I64
    xyxy: F64
    score: F64
    det_index: I64

    def __len__(self) -> int:
        return int(self.track_id.shape[0])


def _gather(rows: I64, matched: I64) -> I64:
    return rows[matched] if matched.size else matched


class ByteTrack:
    """One tracker instance per video stream; not thread-safe, and not meant to be."""

    def __init__(self, config: ByteTrackConfig | None = None, **overrides: Any) -> None:
        base = config or ByteTrackConfig()
        if overrides:
            base = ByteTrackConfig(**{**base.to_dict(), **overrides})
        self.config = base
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again at 1."""
        self._f = np.zeros((0, N_FLOAT))
        self._i = np.zeros((0, N_INT), np.int64)
        self._frame_id = 0
        self._next_id = 1

    @property
    def frame_id(self) -> int:
        return self._frame_id

    @property
    def track_count(self) -> int:
        """Tracks held in memory (tracked, lost and lingering)."""
        return int(self._i.shape[0])

    # -- the algorithm -------------------------------------------------------------------

    def update(self, xyxy: ArrayLike, scores: ArrayLike) -> TrackOutput:
        """Advance one frame with its detections (pixels, xyxy; scores in [0, 1])."""
        cfg = self.config
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        score = np.asarray(scores, dtype=np.float64).reshape(-1)
        if score.shape[0] != boxes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {score.shape[0]} scores")
        self._frame_id += 1
        fid = self._frame_id
        F, I = self._f, self._i  # noqa: E741
        I[:, DET] = -1

        high = np.flatnonzero(score > cfg.track_thresh)
        low = np.flatnonzero((score > cfg.low_thresh) & (score < cfg.track_thresh))
        in_tracked = I[:, LIST] == IN_TRACKED
        active = I[:, ACTIVE] == 1
        confirmed = np.flatnonzero(in_tracked & active)
        unconfirmed = np.flatnonzero(in_tracked & ~active)
        lost_at_start = np.flatnonzero(~in_tracked)
        pool = np.concatenate([confirmed, lost_at_start])
        unmatched_pool = pool

        # Step 2: first association (high boxes, predicted tracks, score-fused IoU).
        if pool.size:
            sub = F[pool]
            stale = I[pool, STATE] != TRACKED
            if stale.any():
                sub[stale, 7] = 0.0  # the reference zeroes a non-tracked track's dh/dt
            kalman.predict(sub[:, POS], sub[:, VEL], sub[:, P00], sub[:, P01], sub[:, P11])
            F[pool] = sub
        hi_boxes = boxes[high]
        hi_scores = score[high]
        unmatched_high = high
        if pool.size and high.size:
            cost = iou_distance(self._boxes(pool), hi_boxes)
            if cfg.fuse_score:
                cost = fuse_score(cost, hi_scores)
            mt, md = assign(cost, cfg.match_thresh)
            if mt.size:
                rows = pool[mt]
                self._correct(rows, high[md], boxes, score, fid)
                keep = np.ones(pool.size, bool)
                keep[mt] = False
                unmatched_pool = pool[keep]
                keep = np.ones(high.size, bool)
                keep[md] = False
                unmatched_high = high[keep]

        # Step 3: second association (low boxes, tracks still unmatched and tracked).
        r_tracked = unmatched_pool[I[unmatched_pool, STATE] == TRACKED]
        if r_tracked.size:
            unmatched_r = r_tracked
            if low.size:
                cost = iou_distance(self._boxes(r_tracked), boxes[low])
                mt, md = assign(cost, cfg.second_match_thresh)
                if mt.size:
                    self._correct(r_tracked[mt], low[md], boxes, score, fid)
                    keep = np.ones(r_tracked.size, bool)
                    keep[mt] = False
                    unmatched_r = r_tracked[keep]
            I[unmatched_r, STATE] = LOST
            I[unmatched_r, LIST] = IN_LOST

        # Step 4: tracks born last frame get one chance, without prediction.
        drop = np.zeros(I.shape[0], bool)
        if unconfirmed.size:
            unmatched_u = unconfirmed
            if unmatched_high.size:
                cost = iou_distance(self._boxes(unconfirmed), boxes[unmatched_high])
                if cfg.fuse_score:
                    cost = fuse_score(cost, score[unmatched_high])
                mt, md = assign(cost, cfg.unconfirmed_match_thresh)
                if mt.size:
                    self._correct(unconfirmed[mt], unmatched_high[md], boxes, score, fid)
                    keep = np.ones(unconfirmed.size, bool)
                    keep[mt] = False
                    unmatched_u = unconfirmed[keep]
                    keep = np.ones(unmatched_high.size, bool)
                    keep[md] = False
                    unmatched_high = unmatched_high[keep]
            drop[unmatched_u] = True

        # Step 5 (bookkeeping first, so new rows need no masks): lost tracks past the buffer
        # are marked removed, but stay in the lost list for this frame, as in the reference.
        if lost_at_start.size:
            old = lost_at_start[fid - I[lost_at_start, LAST] > cfg.max_time_lost]
            I[old, STATE] = REMOVED
        # A lost-list track whose id entered the reference's removed list in an earlier frame
        # leaves now; this frame's removals get their marker for the next frame.
        drop |= (I[:, LIST] == IN_LOST) & (I[:, REMOVED_AT] > 0) & (I[:, REMOVED_AT] < fid)
        newly_removed = (I[:, STATE] == REMOVED) & (I[:, REMOVED_AT] == 0)
        I[newly_removed, REMOVED_AT] = fid

        # Step 4 (continued): new tracks from the high boxes nobody took.
        new = unmatched_high[score[unmatched_high] >= cfg.det_thresh]
        if new.size:
            self._start(new, boxes, score, fid)
            F, I = self._f, self._i  # noqa: E741
            drop = np.concatenate([drop, np.zeros(new.size, bool)])

        # Duplicates between the tracked and lost lists (new tracks included): the one tracked
        # for longer survives, and a tie goes to the lost one.
        tracked_rows = np.flatnonzero(
            (I[:, LIST] == IN_TRACKED) & (I[:, STATE] == TRACKED) & ~drop
        )
        lost_rows = np.flatnonzero((I[:, LIST] == IN_LOST) & ~drop)
        if tracked_rows.size and lost_rows.size:
            dist = iou_distance(self._boxes(tracked_rows), self._boxes(lost_rows))
            pairs_p, pairs_q = np.nonzero(dist < cfg.duplicate_iou_distance)
            if pairs_p.size:
                age = I[:, LAST] - I[:, START]
                for p, q in zip(
                    tracked_rows[pairs_p].tolist(), lost_rows[pairs_q].tolist(), strict=True
                ):
                    drop[q if age[p] > age[q] else p] = True

        if drop.any():
            F = self._f = F[~drop]
            I = self._i = I[~drop]  # noqa: E741

        out = np.flatnonzero(
            (I[:, LIST] == IN_TRACKED) & (I[:, STATE] == TRACKED) & (I[:, ACTIVE] == 1)
        )
        return TrackOutput(
            track_id=I[out, TID].copy(),
            xyxy=self._boxes(out),
            score=F[out, SCORE].copy(),
            det_index=I[out, DET].copy(),
        )

    def _boxes(self, rows: I64) -> F64:
        return kalman.xyah_to_xyxy(self._f[rows, 0:4])

    def _correct(self, rows: I64, dets: I64, boxes: F64, score: F64, fid: int) -> None:
        """Kalman update of ``rows`` with detections ``dets``; they become tracked and active.

        Covers the reference's ``update`` (tracklet_len + 1) and ``re_activate`` (reset to 0).
        """
        F, I = self._f, self._i  # noqa: E741
        sub = F[rows]
        z = kalman.xyxy_to_xyah(boxes[dets])
        pos, vel, p00, p01, p11 = kalman.update(
            sub[:, POS], sub[:, VEL], sub[:, P00], sub[:, P01], sub[:, P11], z
        )
        sub[:, POS], sub[:, VEL], sub[:, P00], sub[:, P01], sub[:, P11] = pos, vel, p00, p01, p11
        sub[:, SCORE] = score[dets]
        F[rows] = sub
        was_tracked = I[rows, STATE] == TRACKED
        I[rows, TLEN] = np.where(was_tracked, I[rows, TLEN] + 1, 0)
        I[rows, STATE] = TRACKED
        I[rows, LIST] = IN_TRACKED
        I[rows, ACTIVE] = 1
        I[rows, LAST] = fid
        I[rows, DET] = dets

    def _start(self, dets: I64, boxes: F64, score: F64, fid: int) -> None:
        k = dets.size
        f = np.empty((k, N_FLOAT))
        pos, vel, p00, p01, p11 = kalman.initiate(kalman.xyxy_to_xyah(boxes[dets]))
        f[:, POS], f[:, VEL], f[:, P00], f[:, P01], f[:, P11] = pos, vel, p00, p01, p11
        f[:, SCORE] = score[dets]
        i = np.zeros((k, N_INT), np.int64)
        i[:, TID] = np.arange(self._next_id, self._next_id + k)
        self._next_id += k
        i[:, STATE] = TRACKED
        i[:, LIST] = IN_TRACKED
        i[:, ACTIVE] = 1 if fid == 1 else 0
        i[:, LAST] = fid
        i[:, START] = fid
        i[:, DET] = dets
        self._f = np.concatenate([self._f, f])
        self._i = np.concatenate([self._i, i])

    # -- persistence -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON types."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "frame_id": self._frame_id,
            "next_id": self._next_id,
            "floats": self._f.tolist(),
            "ints": self._i.tolist(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`get_state`; raises ``ValueError`` for a state it cannot use."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"expected a ByteTrack state of version {STATE_VERSION}")
        try:
            config = ByteTrackConfig(**state["config"])
            f = np.asarray(state["floats"], dtype=np.float64).reshape(-1, N_FLOAT)
            i = np.asarray(state["ints"], dtype=np.int64).reshape(-1, N_INT)
            frame_id, next_id = int(state["frame_id"]), int(state["next_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed ByteTrack state: {exc}") from exc
        if f.shape[0] != i.shape[0] or frame_id < 0 or next_id < 1:
            raise ValueError("malformed ByteTrack state: inconsistent sizes or counters")
        self.config = config
        self._f, self._i = f, i
        self._frame_id, self._next_id = frame_id, next_id

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ByteTrack:
        tracker = cls()
        tracker.set_state(state)
        return tracker
