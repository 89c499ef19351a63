"""The best face of each tracked person, as a JPEG crop when it first shows or gets better.

This stage only chooses: it finds a face inside each tracked person's box (BlazeFace on the
upper part of the box), scores how good a picture of the person it is, and outputs a crop
when a track gets its first usable face or a clearly better one. Naming files, writing them
and indexing them is the runtime's job, from these outputs; nothing here touches a disk.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ..core.frame import Frame
from ..core.processor import ProcessContext
from ..detectors.blazeface import BlazeFace
from ..media.image import encode_jpeg
from .checks import integer_in, number_in
from .face_search import FaceSearchProcessor

__all__ = ["FULL_SIZE_PX", "SHARPNESS_HALF", "FaceGallery", "face_quality"]

Image = NDArray[np.uint8]

FULL_SIZE_PX = 112.0
"""Face size (square root of the box area, frame pixels) past which a bigger face is no better.

About what face recognisers take as input; beyond it, size only adds bytes.
"""

SHARPNESS_HALF = 100.0
"""Variance of the Laplacian (face as 64x64 grey) that counts as half sharp.

A sharp face measures 300 to 1000 at that size, a face blurred by a 2-pixel Gaussian or
upscaled from 16 pixels about 10 to 30.
"""

_SHARPNESS_SIDE = 64
_SNAPSHOT_VERSION = 1


def _sharpness(face: Image) -> float:
    # Measured at one fixed size so that faces of different sizes compare; a small face
    # stretched to 64 pixels is blurry and scores low, which is the right answer.
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    shrink = grey.shape[0] > _SHARPNESS_SIDE or grey.shape[1] > _SHARPNESS_SIDE
    grey = cv2.resize(
        grey,
        (_SHARPNESS_SIDE, _SHARPNESS_SIDE),
        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
    )
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_quality(face: Image, score: float) -> float:
    """How good a picture of a face ``face`` (the BGR pixels of its box) is, in [0, 1].

    ``quality = score * size * sharp``, each factor in [0, 1]:

    - ``score``: the detector's confidence, so a half-turned or occluded face loses;
    - ``size = min(1, sqrt(w * h) / FULL_SIZE_PX)``: more pixels are better, up to a point;
    - ``sharp = L / (L + SHARPNESS_HALF)``, ``L`` the variance of the Laplacian of the face
      as 64x64 grey: motion blur and defocus lose.

    A product rather than a sum: a face must be good on every count, and a ratio of two
    qualities (what ``improve_ratio`` compares) then reads as "this much better overall".
    """
    h, w = int(face.shape[0]), int(face.shape[1])
    if h == 0 or w == 0:
        return 0.0
    size = min(1.0, math.sqrt(w * h) / FULL_SIZE_PX)
    lap = _sharpness(face)
    sharp = lap / (lap + SHARPNESS_HALF)
    return float(score) * size * sharp


@dataclass(slots=True)
class _Track:
    last_seen: int
    next_check: int
    interval: int  # frames until the next look, from `every` up to `every * backoff`
    best: float = 0.0  # 0: no face output for this track yet


@dataclass(frozen=True, slots=True)
class _Face:
    box: tuple[float, float, float, float]
    score: float
    quality: float


def _classes(value: Any) -> frozenset[int] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"classes must be a list of class numbers or null, got {value!r}")
    out: set[int] = set()
    for c in value:
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"classes must hold class numbers >= 0, got {c!r} in {value!r}")
        out.add(c)
    return frozenset(out)


class FaceGallery(FaceSearchProcessor):
    """Outputs ``faces``: for each tracked person, a JPEG of its best face so far, when it changes.

    Reads ``frame.detections`` after a tracker: detections with ``track_id >= 0`` of the
    ``classes`` (person, 0, by default). A track is looked at when first seen and then every
    ``every`` frames, at most ``max_per_frame`` tracks a frame (the most overdue first), since
    a face search costs about 4 ms (BlazeFace full-range on 2 cores): every 10 frames is
    three looks a second at 30 fps, and halved the people counter's face time against 5. A
    look that gives no face, or none better than the track's, doubles the wait before the
    next, up to ``backoff`` times ``every``; one that gives a face brings it back to ``every``.
    Most people in a scene stay in view for many seconds, and their face seldom gets better
    from one look to the next: over the 795 frames of ``vtest``, whose faces are all too
    small to keep, the people counter searches 103 times instead of 327. The
    search runs on the top ``upper`` part of the box. A face counts when its box is at least
    ``min_face_px`` on each side and the detector scores it at least ``score_thresh``; its
    quality is :func:`face_quality`. The first face of
    a track is output, and after that only a face whose quality is ``improve_ratio`` times the
    best so far (``update`` is then true: it replaces the earlier crop).

    Each output item is ``{"track_id", "jpeg" (bytes: the face box grown by ``margin`` of its
    size on each side, clipped to the frame, at ``jpeg_quality``), "quality", "score", "box"
    (the face, ``[x1, y1, x2, y2]`` frame pixels), "update"}``. A track unseen for more than
    ``max_missing`` frames is forgotten, and no more than ``max_tracks`` are kept (the longest
    unseen go first). ``snapshot`` keeps the best quality of each track, so a resumed session
    does not hand out a face it already gave. The constructor raises ``ValueError`` naming
    the first bad parameter.
    """

    name = "faces"
    needs_image = True

    def __init__(
        self,
        *,
        min_face_px: int = 24,
        score_thresh: float = 0.5,
        every: int = 10,
        margin: float = 0.25,
        jpeg_quality: int = 90,
        improve_ratio: float = 1.25,
        max_missing: int = 60,
        classes: Iterable[int] | None = (0,),
        upper: float = 0.5,
        max_per_frame: int = 4,
        max_tracks: int = 1024,
        backoff: int = 4,
        detector: BlazeFace | None = None,
    ) -> None:
        self.min_face_px = integer_in("min_face_px", min_face_px)
        self.score_thresh = number_in("score_thresh", score_thresh, 0.0, 1.0, lo_open=True)
        if self.score_thresh == 1.0:  # a sigmoid score never reaches 1: nothing would count
            raise ValueError(f"score_thresh must be a number in (0, 1), got {score_thresh!r}")
        self.every = integer_in("every", every)
        self.margin = number_in("margin", margin, 0.0, 2.0)
        ok_quality = isinstance(jpeg_quality, int) and not isinstance(jpeg_quality, bool)
        if not ok_quality or not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be an integer in 1..100, got {jpeg_quality!r}")
        self.jpeg_quality = jpeg_quality
        self.improve_ratio = number_in("improve_ratio", improve_ratio, 1.0, 1e6)
        self.max_missing = integer_in("max_missing", max_missing, 0)
        self.classes = _classes(classes)
        self.upper = number_in("upper", upper, 0.0, 1.0, lo_open=True)
        self.max_per_frame = integer_in("max_per_frame", max_per_frame)
        self.max_tracks = integer_in("max_tracks", max_tracks)
        self.backoff = integer_in("backoff", backoff)
        self._detector = detector
        self._frame = 0
        self._tracks: dict[int, _Track] = {}
        self._tracks_with_faces = 0

    @property
    def tracks_with_faces(self) -> int:
        """How many tracks have had a face output, over the whole session."""
        return self._tracks_with_faces

    @property
    def tracked(self) -> int:
        """How many tracks are being followed now (for tests and diagnostics)."""
        return len(self._tracks)

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self._frame += 1
        now = self._frame
        due: list[tuple[int, NDArray[np.float64]]] = []
        dets = frame.detections
        if dets is not None and len(dets):
            mask = dets.track_id >= 0
            if self.classes is not None:
                mask &= np.isin(dets.class_id, list(self.classes))
            for tid_raw, box in zip(dets.track_id[mask], dets.xyxy[mask], strict=True):
                tid = int(tid_raw)
                track = self._tracks.get(tid)
                if track is None:
                    track = self._tracks[tid] = _Track(now, now, self.every)
                track.last_seen = now
                if track.next_check <= now:
                    due.append((tid, box))
        out: list[dict[str, Any]] = []
        if due and frame.has_image:
            due.sort(key=lambda item: (self._tracks[item[0]].next_check, item[0]))
            image = frame.image
            for tid, box in due[: self.max_per_frame]:
                track = self._tracks[tid]
                item = self._consider(image, tid, track, box)
                if item is not None:
                    out.append(item)
                    track.interval = self.every
                else:
                    track.interval = min(2 * track.interval, self.backoff * self.every)
                track.next_check = now + track.interval
        self._prune(now)
        if not out:
            return None
        out.sort(key=lambda item: int(item["track_id"]))
        return {"faces": out}

    def _consider(
        self, image: Image, tid: int, track: _Track, box: NDArray[np.float64]
    ) -> dict[str, Any] | None:
        face = self._best_face(image, box)
        if face is None:
            return None
        update = track.best > 0.0
        if update and face.quality < track.best * self.improve_ratio:
            return None
        if not update:
            self._tracks_with_faces += 1
        track.best = face.quality
        return {
            "track_id": tid,
            "jpeg": encode_jpeg(self._crop(image, face.box), self.jpeg_quality, "444"),
            "quality": round(face.quality, 6),
            "score": round(face.score, 6),
            "box": [round(v, 2) for v in face.box],
            "update": update,
        }

    def _best_face(self, image: Image, box: NDArray[np.float64]) -> _Face | None:
        """The best qualifying face in the upper part of a person's box, in frame pixels."""
        ih, iw = int(image.shape[0]), int(image.shape[1])
        x1, y1, x2, y2 = (float(v) for v in box)
        rx1, ry1 = max(0, math.floor(x1)), max(0, math.floor(y1))
        rx2 = min(iw, math.ceil(x2))
        ry2 = min(ih, math.ceil(y1 + self.upper * (y2 - y1)))
        if rx2 - rx1 < self.min_face_px or ry2 - ry1 < self.min_face_px:
            return None  # too small to hold a face that would count
        boxes, scores, _ = self._face_detector().detect(
            image[ry1:ry2, rx1:rx2], score_thresh=self.score_thresh
        )
        best: _Face | None = None
        for (fx1, fy1, fx2, fy2), score in zip(boxes.tolist(), scores.tolist(), strict=True):
            # Into frame pixels, clipped: a face cut by the frame edge is judged on what shows.
            fb = (
                max(0.0, fx1 + rx1),
                max(0.0, fy1 + ry1),
                min(float(iw), fx2 + rx1),
                min(float(ih), fy2 + ry1),
            )
            if fb[2] - fb[0] < self.min_face_px or fb[3] - fb[1] < self.min_face_px:
                continue
            pixels = image[int(fb[1]) : math.ceil(fb[3]), int(fb[0]) : math.ceil(fb[2])]
            quality = face_quality(pixels, score)
            if best is None or quality > best.quality:
                best = _Face(box=fb, score=float(score), quality=quality)
        return best

    def _crop(self, image: Image, face: tuple[float, float, float, float]) -> Image:
        ih, iw = int(image.shape[0]), int(image.shape[1])
        x1, y1, x2, y2 = face
        mx, my = self.margin * (x2 - x1), self.margin * (y2 - y1)
        cx1, cy1 = max(0, math.floor(x1 - mx)), max(0, math.floor(y1 - my))
        cx2, cy2 = min(iw, math.ceil(x2 + mx)), min(ih, math.ceil(y2 + my))
        return image[cy1:cy2, cx1:cx2]

    def _prune(self, now: int) -> None:
        stale = [t for t, s in self._tracks.items() if now - s.last_seen > self.max_missing]
        for tid in stale:
            del self._tracks[tid]
        excess = len(self._tracks) - self.max_tracks
        if excess > 0:
            oldest = sorted(self._tracks, key=lambda t: (self._tracks[t].last_seen, t))
            for tid in oldest[:excess]:
                del self._tracks[tid]

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"faces": {"tracks_with_faces": self._tracks_with_faces}}

    def snapshot(self) -> dict[str, Any] | None:
        """The frame count, the session's face count and, per track with a face, its best
        and when it is looked at next.

        Tracks still waiting for a face are left out: after a resume they are looked at
        again at once, which costs a search, never a duplicate face.
        """
        return {
            "version": _SNAPSHOT_VERSION,
            "frame": self._frame,
            "tracks_with_faces": self._tracks_with_faces,
            "tracks": [
                [tid, t.best, t.last_seen, t.next_check, t.interval]
                for tid, t in sorted(self._tracks.items())
                if t.best > 0
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot`; raises ``ValueError`` for a state it did not write."""
        try:
            if state["version"] != _SNAPSHOT_VERSION:
                raise ValueError(f"version {state['version']!r}")
            frame = integer_in("frame", state["frame"], 0)
            count = integer_in("tracks_with_faces", state["tracks_with_faces"], 0)
            tracks: dict[int, _Track] = {}
            for row in state["tracks"]:
                # Rows written before looks backed off have no next look: look at once.
                tid_raw, best_raw, seen_raw, *when = row
                tid = integer_in("track id", tid_raw, 0)
                best = number_in("best quality", best_raw, 0.0, 1.0, lo_open=True)
                seen = integer_in("last_seen", seen_raw, 0)
                if not when:
                    tracks[tid] = _Track(seen, frame + 1, self.every, best=best)
                    continue
                next_raw, interval_raw = when
                next_check = integer_in("next_check", next_raw, 0)
                interval = integer_in("interval", interval_raw)
                tracks[tid] = _Track(seen, next_check, interval, best=best)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                "expected a FaceGallery snapshot {version: 1, frame, tracks_with_faces, "
                "tracks: [[track_id, quality, last_seen, next_check, interval], ...]}, "
                f"got a bad one: {exc}"
            ) from None
        self._frame = frame
        self._tracks_with_faces = count
        self._tracks = tracks
        self._prune(frame)
