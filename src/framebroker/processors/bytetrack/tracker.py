"""ByteTrack: multi-object tracking by associating every detection box (Zhang et al., 2022).

This follows the reference implementation (ifzhang/ByteTrack, ``byte_tracker.py``) step for
step, quirks included, so its output matches the reference row for row; it differs in how
tracks are stored and run. The reference keeps one Python object per track and a dense 8x8
Kalman filter per object; here all tracks live in one table (a float and an integer array, a
row per track) and a frame is one compiled call (:mod:`.kernel`).

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

from . import kernel
from .config import ByteTrackConfig
from .kalman import xyah_to_xyxy

__all__ = ["ByteTrack", "TrackOutput"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

# The track table: floats (Kalman state as [cx, cy, a, h], velocities, the three entries of
# each coordinate's 2x2 covariance block, last score) and integers (id, state, list, ...).
SCORE = kernel.C_SCORE
N_FLOAT = 21
TID, STATE, LIST, ACTIVE, DET = kernel.TID, kernel.STATE, kernel.LIST, kernel.ACTIVE, kernel.DET
N_INT = 9
TRACKED, IN_TRACKED = kernel.TRACKED, kernel.IN_TRACKED

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


class ByteTrack:
    """One tracker instance per video stream; not thread-safe, and not meant to be."""

    def __init__(self, config: ByteTrackConfig | None = None, **overrides: Any) -> None:
        base = config or ByteTrackConfig()
        if overrides:
            base = ByteTrackConfig(**{**base.to_dict(), **overrides})
        self._configure(base)
        self.reset()

    def _configure(self, config: ByteTrackConfig) -> None:
        self.config = config
        values = {
            **config.to_dict(),
            "det_thresh": config.det_thresh,
            "max_time_lost": config.max_time_lost,
            "fuse_score": 1.0 if config.fuse_score else 0.0,
        }
        self._params = np.array([float(values[name]) for name in kernel.PARAMS])

    def reset(self) -> None:
        """Forget every track; ids start again at 1."""
        self._f = np.zeros((64, N_FLOAT))
        self._i = np.zeros((64, N_INT), np.int64)
        self._n = 0
        self._frame_id = 0
        self._next_id = 1

    @property
    def frame_id(self) -> int:
        return self._frame_id

    @property
    def track_count(self) -> int:
        """Tracks held in memory (tracked, lost and lingering)."""
        return self._n

    def update(self, xyxy: ArrayLike, scores: ArrayLike) -> TrackOutput:
        """Advance one frame with its detections (pixels, xyxy; scores in [0, 1])."""
        boxes = np.ascontiguousarray(xyxy, dtype=np.float64).reshape(-1, 4)
        score = np.ascontiguousarray(scores, dtype=np.float64).reshape(-1)
        if score.shape[0] != boxes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {score.shape[0]} scores")
        need = self._n + score.shape[0]
        if need > self._f.shape[0]:
            self._grow(need)
        self._frame_id += 1
        self._n, self._next_id = kernel.step(
            self._f, self._i, self._n, boxes, score, self._frame_id, self._next_id, self._params
        )
        live_i = self._i[: self._n]
        out = np.flatnonzero(
            (live_i[:, LIST] == IN_TRACKED)
            & (live_i[:, STATE] == TRACKED)
            & (live_i[:, ACTIVE] == 1)
        )
        return TrackOutput(
            track_id=live_i[out, TID],
            xyxy=xyah_to_xyxy(self._f[out, 0:4]),
            score=self._f[out, SCORE],
            det_index=live_i[out, DET],
        )

    def track(self, detections: Any) -> Any:
        """Track one frame given as detections; returns the same kind, with track ids.

        Takes framebroker's :class:`~framebroker.core.Detections` or supervision's
        ``Detections`` (duck-typed, so supervision stays optional) and returns the detections
        that confirmed tracks own this frame, in track order, with ``track_id`` (framebroker)
        or ``tracker_id`` (supervision) set.
        """
        from ...core.detections import Detections

        if isinstance(detections, Detections):
            out = self.update(detections.xyxy, detections.score)
            return detections.with_tracks(out.det_index, out.track_id)
        xyxy = getattr(detections, "xyxy", None)
        if xyxy is None:
            raise TypeError(
                f"expected framebroker or supervision Detections, got {type(detections).__name__}"
            )
        conf = getattr(detections, "confidence", None)
        scores = np.ones(len(xyxy)) if conf is None else conf
        out = self.update(xyxy, scores)
        tracked = detections[out.det_index]
        tracked.tracker_id = out.track_id
        return tracked

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self._f.shape[0])
        f = np.zeros((cap, N_FLOAT))
        i = np.zeros((cap, N_INT), np.int64)
        f[: self._n] = self._f[: self._n]
        i[: self._n] = self._i[: self._n]
        self._f, self._i = f, i

    # -- persistence -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON types."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "frame_id": self._frame_id,
            "next_id": self._next_id,
            "floats": self._f[: self._n].tolist(),
            "ints": self._i[: self._n].tolist(),
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
        self._configure(config)
        self.reset()
        self._grow(f.shape[0])
        self._n = f.shape[0]
        self._f[: self._n] = f
        self._i[: self._n] = i
        self._frame_id, self._next_id = frame_id, next_id

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ByteTrack:
        tracker = cls()
        tracker.set_state(state)
        return tracker
