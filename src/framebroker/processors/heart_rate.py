"""Heart rate from a face on camera: remote photoplethysmography with the POS method.

Each heartbeat pushes blood into the skin and changes its colour by a fraction of a percent,
more in green than in red or blue. Averaged over thousands of skin pixels that change is
measurable from an ordinary camera: this processor finds the face with BlazeFace, averages
the colour of its forehead and cheeks on every frame, and reads the pulse rate from the
last ``window_s`` seconds of that colour with the maths of :mod:`.rppg`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ..core.frame import Frame
from ..core.processor import ProcessContext
from ..detectors.blazeface import BlazeFace
from .checks import integer_in, number_in
from .face_search import FaceSearchProcessor
from .rppg import estimate_pulse, resample_uniform

__all__ = ["SKIN_REGIONS", "HeartRate"]

Image = NDArray[np.uint8]
Box = NDArray[np.float64]

SKIN_REGIONS: tuple[tuple[float, float, float, float], ...] = (
    (0.32, 0.06, 0.68, 0.18),  # forehead, between the brows and the hairline
    (0.16, 0.42, 0.38, 0.60),  # the cheek on the image's left, under the eye, beside the nose
    (0.62, 0.42, 0.84, 0.60),  # the other cheek
)
"""Skin patches as (left, top, right, bottom) fractions of a BlazeFace box.

BlazeFace's box runs from about the brows to the chin; these patches leave out the eyes
(blinks), the mouth (speech, teeth) and the hair, whose colour does not pulse, and keep the
forehead and cheeks, where the pulse is strongest (Kwon et al., 2015).
"""

_SNAPSHOT_VERSION = 1
_TIME_SLACK = 1e-3  # frame timestamps may be epoch seconds, whose differences are off by ~1e-7
_JUMP = 0.08  # a colour change no pulse or lighting drift makes in one frame: the face moved
_SAME_FACE_IOU = 0.3


def _iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def skin_colour(image: Image, box: Box) -> tuple[float, float, float] | None:
    """Mean (R, G, B) over the :data:`SKIN_REGIONS` of face ``box`` in a BGR ``image``.

    Patches are clipped to the image and weighted by their pixel count; ``None`` when none of
    them is inside it (a face at the edge of the picture).
    """
    ih, iw = int(image.shape[0]), int(image.shape[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    total = np.zeros(3, np.float64)
    count = 0
    for fx1, fy1, fx2, fy2 in SKIN_REGIONS:
        rx1, rx2 = max(0, round(x1 + fx1 * w)), min(iw, round(x1 + fx2 * w))
        ry1, ry2 = max(0, round(y1 + fy1 * h)), min(ih, round(y1 + fy2 * h))
        if rx2 <= rx1 or ry2 <= ry1:
            continue
        # cv2.sumElems reads the view in place; numpy's sum would first widen a copy.
        total += np.asarray(cv2.sumElems(image[ry1:ry2, rx1:rx2])[:3], np.float64)
        count += (rx2 - rx1) * (ry2 - ry1)
    if count == 0:
        return None
    b, g, r = total / count
    return float(r), float(g), float(b)


class HeartRate(FaceSearchProcessor):
    """Outputs ``heart_rate``: the pulse rate of the face in view, about once a second.

    The face is searched with BlazeFace every ``detect_every`` frames (with a face in view or
    not, starting with the first frame), and at once when the skin colour jumps by more than
    8 % between frames (the face moved off its box); between searches the box stays where it
    was, smoothed over searches by ``box_smoothing`` (box jitter would show up as colour
    noise). With several faces, the one overlapping the current box wins, else the largest.
    A face smaller than ``min_face_px`` or scored under ``score_thresh`` does not count.
    Each frame with a face adds its mean skin colour (see :data:`SKIN_REGIONS`) at the
    frame's own ``timestamp``; frames closer than ``1 / max_fps`` to the previous sample are
    not added, which bounds the buffer (``(window_s + 2) * max_fps`` samples) whatever the
    frame rate.

    Once the samples span ``window_s`` seconds, every ``emit_interval_s`` of frame time the
    last ``window_s`` seconds are resampled to ``fs`` Hz and go through POS (temporal
    normalisation over ``pos_window_s``), a band-pass from ``min_bpm`` to ``max_bpm`` and
    the spectral peak (see :mod:`.rppg`). The output is then::

        {"heart_rate": {"face": True, "heart_rate_bpm": 72.4, "quality": 0.81, "snr_db": 6.3}}

    ``quality`` in [0, 1] is the share of the band's power at the peak and its harmonic
    (0.1 to 0.45 for noise over a 10 s window, above 0.8 for a clean pulse);
    ``heart_rate_bpm`` is ``None`` when quality is under ``min_quality``: the default, 0.5,
    asks that the pulse carry at least as much power as everything else in the band. A short
    window blurs the spectrum: a clean pulse scores about 0.6 over 5 s, 0.8 over 8 s, so
    lower ``min_quality`` along with ``window_s``.

    Until the window is full the processor returns ``None``. With no face in view it outputs
    ``{"heart_rate": {"face": False}}`` on the same once-a-second clock, so a client can ask
    the user to face the camera. A gap of more than ``max_gap_s`` without a sample (the face
    was away, the stream stalled) or a clock that goes backwards starts the window over:
    a pulse cannot be interpolated across it.

    ``end`` returns ``{"heart_rate": {"estimates", "low_quality", "mean_bpm", "min_bpm",
    "max_bpm", "mean_quality"}}`` over the estimates that passed ``min_quality`` (the bpm
    fields are ``None`` when there were none); ``low_quality`` counts the others.
    ``snapshot`` keeps these session statistics, not the samples: a resumed session waits
    ``window_s`` for its next estimate. The constructor raises ``ValueError`` naming the
    first bad parameter.
    """

    name = "heart_rate"
    needs_image = True

    def __init__(
        self,
        *,
        window_s: float = 10.0,
        emit_interval_s: float = 1.0,
        fs: float = 30.0,
        pos_window_s: float = 1.6,
        min_bpm: float = 42.0,
        max_bpm: float = 240.0,
        min_quality: float = 0.5,
        detect_every: int = 10,
        min_face_px: int = 40,
        score_thresh: float = 0.5,
        box_smoothing: float = 0.5,
        max_gap_s: float = 1.0,
        max_fps: float = 120.0,
        detector: BlazeFace | None = None,
    ) -> None:
        self.window_s = number_in("window_s", window_s, 4.0, 60.0)
        self.emit_interval_s = number_in(
            "emit_interval_s", emit_interval_s, 0.0, 60.0, lo_open=True
        )
        self.fs = number_in("fs", fs, 10.0, 240.0)
        self.pos_window_s = number_in("pos_window_s", pos_window_s, 0.5, self.window_s / 2)
        self.min_bpm = number_in("min_bpm", min_bpm, 20.0, 300.0)
        self.max_bpm = number_in("max_bpm", max_bpm, 20.0, 300.0)
        if self.max_bpm <= self.min_bpm:
            raise ValueError(f"max_bpm must be > min_bpm ({min_bpm!r}), got {max_bpm!r}")
        if self.max_bpm / 60.0 >= self.fs / 2:
            raise ValueError(
                f"fs must be more than twice max_bpm / 60 ({self.max_bpm / 30.0:g} Hz), got {fs!r}"
            )
        self.min_quality = number_in("min_quality", min_quality, 0.0, 1.0)
        self.detect_every = integer_in("detect_every", detect_every, 1, 10_000)
        self.min_face_px = integer_in("min_face_px", min_face_px, 8, 10_000)
        self.score_thresh = number_in("score_thresh", score_thresh, 0.0, 1.0, lo_open=True)
        if self.score_thresh == 1.0:  # a sigmoid score never reaches 1: nothing would count
            raise ValueError(f"score_thresh must be a number in (0, 1), got {score_thresh!r}")
        self.box_smoothing = number_in("box_smoothing", box_smoothing, 0.0, 0.95)
        self.max_gap_s = number_in("max_gap_s", max_gap_s, 0.0, self.window_s / 2, lo_open=True)
        self.max_fps = number_in("max_fps", max_fps, 10.0, 1000.0)
        if detector is not None and not isinstance(detector, BlazeFace):
            raise ValueError(f"detector must be a BlazeFace or None, got {detector!r}")
        self._detector = detector

        self._samples: deque[tuple[float, float, float, float]] = deque(
            maxlen=math.ceil((self.window_s + 2.0) * self.max_fps)
        )
        self._box: Box | None = None
        self._since_detect = self.detect_every  # search on the first frame
        self._last_ts: float | None = None
        self._last_colour: tuple[float, float, float] | None = None
        self._next_emit: float | None = None
        self._estimates = 0
        self._low_quality = 0
        self._sum_bpm = 0.0
        self._sum_quality = 0.0
        self._min_bpm = math.inf
        self._max_bpm = -math.inf

    @property
    def buffered(self) -> int:
        """How many colour samples are held now (for tests and diagnostics)."""
        return len(self._samples)

    @property
    def face_box(self) -> tuple[float, float, float, float] | None:
        """The smoothed face box in use, as (x1, y1, x2, y2) frame pixels, or ``None``."""
        if self._box is None:
            return None
        x1, y1, x2, y2 = (float(v) for v in self._box)
        return x1, y1, x2, y2

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        if not frame.has_image:
            return None
        t = frame.timestamp
        if self._last_ts is not None and t < self._last_ts:
            # A replay started over: what was buffered belongs to another time line.
            self._samples.clear()
            self._next_emit = None
        self._last_ts = t
        image = frame.image

        # Without a face the search runs at the same pace as with one: a camera pointed at an
        # empty room costs a detection every detect_every frames, not one every frame.
        self._since_detect += 1
        if self._since_detect >= self.detect_every:
            self._detect(image)
        colour = skin_colour(image, self._box) if self._box is not None else None
        if colour is not None and self._jumped(colour):
            self._detect(image)
            colour = skin_colour(image, self._box) if self._box is not None else None
        self._last_colour = colour

        if colour is None:
            return self._emit(t, {"face": False})
        self._add_sample(t, colour)
        if not self._window_full():
            return None
        if self._next_emit is not None and t < self._next_emit - _TIME_SLACK:
            return None
        return self._emit(t, self._estimate())

    def _jumped(self, colour: tuple[float, float, float]) -> bool:
        last = self._last_colour
        if last is None or self._since_detect == 0:
            return False
        return any(abs(c - p) > _JUMP * max(p, 1.0) for c, p in zip(colour, last, strict=True))

    def _detect(self, image: Image) -> None:
        self._since_detect = 0
        boxes, _, _ = self._face_detector().detect(image, score_thresh=self.score_thresh)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        boxes = boxes[sides >= self.min_face_px]
        if len(boxes) == 0:
            self._box = None
            return
        current = self._box
        if current is not None:
            overlaps = [_iou(current, b) for b in boxes]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= _SAME_FACE_IOU:
                s = self.box_smoothing
                self._box = s * current + (1.0 - s) * boxes[best]
                return
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        self._box = boxes[int(np.argmax(areas))].copy()

    def _add_sample(self, t: float, colour: tuple[float, float, float]) -> None:
        if self._samples:
            last = self._samples[-1][0]
            if t - last > self.max_gap_s:
                self._samples.clear()
            elif t - last < 0.999 / self.max_fps:  # 0.999: epoch-second differences are inexact
                return
        self._samples.append((t, *colour))
        # Keep one sample at or before the window's start, for the interpolation to begin on.
        start = t - self.window_s
        while len(self._samples) >= 2 and self._samples[1][0] <= start + _TIME_SLACK:
            self._samples.popleft()

    def _window_full(self) -> bool:
        s = self._samples
        return len(s) >= 2 and s[-1][0] - s[0][0] >= self.window_s - _TIME_SLACK

    def _emit(self, t: float, payload: dict[str, Any]) -> dict[str, Any] | None:
        """``payload`` if the once-per-interval clock is due, else ``None``.

        The due times stay on a grid (as :class:`~framebroker.core.Rate` does) so uneven
        frame times do not slow the average rate; a long pause starts a new grid.
        """
        due = self._next_emit
        if due is not None and t < due - _TIME_SLACK:
            return None
        interval = self.emit_interval_s
        on_grid = due is not None and t < due + interval
        self._next_emit = (due + interval) if (on_grid and due is not None) else t + interval
        return {"heart_rate": payload}

    def _estimate(self) -> dict[str, Any]:
        data = np.array(self._samples, dtype=np.float64)
        rgb = resample_uniform(data[:, 0], data[:, 1:], self.fs, self.window_s)
        est = estimate_pulse(
            rgb,
            self.fs,
            low_hz=self.min_bpm / 60.0,
            high_hz=self.max_bpm / 60.0,
            pos_window_s=self.pos_window_s,
        )
        if est is None:  # not a flicker of colour in the band: nothing to read
            self._low_quality += 1
            return {"face": True, "heart_rate_bpm": None, "quality": 0.0, "snr_db": None}
        bpm: float | None = est.bpm
        if est.quality < self.min_quality:
            self._low_quality += 1
            bpm = None
        else:
            self._estimates += 1
            self._sum_bpm += est.bpm
            self._sum_quality += est.quality
            self._min_bpm = min(self._min_bpm, est.bpm)
            self._max_bpm = max(self._max_bpm, est.bpm)
        return {
            "face": True,
            "heart_rate_bpm": None if bpm is None else round(bpm, 1),
            "quality": round(est.quality, 3),
            "snr_db": round(est.snr_db, 2),
        }

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        n = self._estimates
        return {
            "heart_rate": {
                "estimates": n,
                "low_quality": self._low_quality,
                "mean_bpm": round(self._sum_bpm / n, 1) if n else None,
                "min_bpm": round(self._min_bpm, 1) if n else None,
                "max_bpm": round(self._max_bpm, 1) if n else None,
                "mean_quality": round(self._sum_quality / n, 3) if n else None,
            }
        }

    def snapshot(self) -> dict[str, Any] | None:
        """The session's statistics; samples and the face box are not kept (see the class)."""
        n = self._estimates
        return {
            "version": _SNAPSHOT_VERSION,
            "estimates": n,
            "low_quality": self._low_quality,
            "sum_bpm": self._sum_bpm,
            "sum_quality": self._sum_quality,
            "min_bpm": self._min_bpm if n else None,
            "max_bpm": self._max_bpm if n else None,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot`; raises ``ValueError`` for a state it did not write."""
        try:
            if state["version"] != _SNAPSHOT_VERSION:
                raise ValueError(f"version {state['version']!r}")
            n = integer_in("estimates", state["estimates"], 0, 2**62)
            low = integer_in("low_quality", state["low_quality"], 0, 2**62)
            sum_bpm = number_in("sum_bpm", state["sum_bpm"], 0.0, math.inf)
            sum_quality = number_in("sum_quality", state["sum_quality"], 0.0, float(n))
            if n:
                lo = number_in("min_bpm", state["min_bpm"], 0.0, 1e4)
                hi = number_in("max_bpm", state["max_bpm"], lo, 1e4)
            elif state["min_bpm"] is not None or state["max_bpm"] is not None:
                raise ValueError("min_bpm and max_bpm must be null with no estimates")
            else:
                lo, hi = math.inf, -math.inf
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                "expected a HeartRate snapshot {version: 1, estimates, low_quality, sum_bpm, "
                f"sum_quality, min_bpm, max_bpm}}, got a bad one: {exc}"
            ) from None
        self._estimates, self._low_quality = n, low
        self._sum_bpm, self._sum_quality = sum_bpm, sum_quality
        self._min_bpm, self._max_bpm = lo, hi
