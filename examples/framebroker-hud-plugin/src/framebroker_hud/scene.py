"""Scene cuts and still screens, and switching the HUD readers off while the screen is still.

A cut (a map loads, a kill cam starts) changes the whole palette at once; a menu or a loading
screen stops moving. Both are visible on a thumbnail a few times a second, so this processor
declares a low rate and lets the frame clock decide when it runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from framebroker.core import Frame, ProcessContext, Processor, Rate
from numpy.typing import NDArray

__all__ = ["SceneChange"]

_THUMB = (64, 36)  # 16:9, enough for a palette and for motion of anything HUD-sized
_HIST_BINS = [18, 8]  # hue x saturation
_HIST_RANGES = [0, 180, 0, 256]


@dataclass(slots=True)
class _Look:
    """What a frame looked like: a grey thumbnail and a hue/saturation histogram."""

    grey: NDArray[np.float32]
    hist: NDArray[np.float32]

    @classmethod
    def of(cls, image: NDArray[np.uint8]) -> _Look:
        thumb = cv2.resize(image, _THUMB, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
        hsv = cv2.cvtColor(thumb, cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, _HIST_BINS, _HIST_RANGES)
        cv2.normalize(hist, hist, alpha=1.0, norm_type=cv2.NORM_L1)
        return cls(grey, hist.astype(np.float32))

    def distance(self, other: _Look) -> float:
        """Bhattacharyya distance of the palettes: 0 the same, 1 nothing in common."""
        return float(cv2.compareHist(self.hist, other.hist, cv2.HISTCMP_BHATTACHARYYA))

    def motion(self, other: _Look) -> float:
        """Mean absolute difference of the thumbnails, 0..1."""
        return float(np.mean(np.abs(self.grey - other.grey)))


def _number(name: str, value: object, low: float, high: float, *, low_open: bool) -> float:
    """``value`` as a float in ``(low, high]`` (``[low, high]`` unless ``low_open``)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        number = float(value)
        if (low < number if low_open else low <= number) and number <= high:
            return number
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")


class SceneChange(Processor):
    """Reports scene cuts and still screens; switches ``pause`` off while the screen is still.

    Runs at ``rate`` (twice a second of frame time by default; a config may change it) on a
    64x36 thumbnail. A *cut* is a hue/saturation histogram distance of at least
    ``cut_threshold`` from the previous run. The screen is *still* once the thumbnail has
    moved less than ``still_threshold`` (mean absolute difference, 0..1) between runs for
    ``still_after`` seconds of frame time: a menu, a pause or loading screen. While still, every
    processor named in ``pause`` is switched off, and switched on again at the first run that
    sees motion or a cut, so the HUD readers skip the frames that have no HUD. Place this
    processor before those it pauses, so the switch applies on the frame that shows it.

    Output, under the processor's name::

        {"scene": 3, "cut": false, "distance": 0.04, "motion": 0.0012, "still": true,
         "scene_start": 1556855551.2}

    ``end`` reports ``{"scene_change": {"scenes": n, "still_s": seconds spent still}}``. The
    constructor raises ``ValueError`` naming a bad parameter; a ``pause`` name that is not in
    the pipeline is a ``ValueError`` on the first frame, reported like any processor error.
    """

    name = "scene_change"
    needs_image = True
    rate = Rate(interval=0.5)

    def __init__(
        self,
        *,
        pause: Sequence[str] = (),
        cut_threshold: float = 0.5,
        still_threshold: float = 0.01,
        still_after: float = 1.0,
    ) -> None:
        if isinstance(pause, str) or not all(isinstance(n, str) for n in pause):
            raise ValueError(f"pause must be a list of processor names, got {pause!r}")
        self.pause = tuple(pause)
        self.cut_threshold = _number("cut_threshold", cut_threshold, 0.0, 1.0, low_open=True)
        self.still_threshold = _number("still_threshold", still_threshold, 0.0, 1.0, low_open=False)
        self.still_after = _number("still_after", still_after, 0.0, 3600.0, low_open=False)
        self._last: _Look | None = None
        self._last_time = 0.0
        self._scene = 0
        self._scene_start = 0.0
        self._moved_at = 0.0
        self._still = False
        self._still_s = 0.0

    def setup(self, ctx: ProcessContext) -> None:
        for name in self.pause:  # a typo fails on the first frame, not when a menu shows
            ctx.is_enabled(name)

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        look, ts = _Look.of(frame.image), frame.timestamp
        last, self._last = self._last, look
        distance = motion = 0.0
        cut = False
        if last is None:
            # The first frame opens scene 1 (it is no cut: nothing came before). The first
            # after a restore is only a reference: a screen that was still stays still until
            # it is seen to move.
            moved = self._scene == 0
            if moved:
                self._scene, self._scene_start = 1, ts
            self._moved_at = ts - self.still_after if self._still else ts
        else:
            distance, motion = look.distance(last), look.motion(last)
            cut = distance >= self.cut_threshold
            moved = cut or motion >= self.still_threshold
            if self._still:
                self._still_s += max(ts - self._last_time, 0.0)
            if cut:
                self._scene += 1
                self._scene_start = ts
        if moved or ts < self._moved_at:  # a clock that went back restarts the wait too
            self._moved_at = ts
        self._last_time = ts
        still = (
            self._still if last is None else not moved and ts - self._moved_at >= self.still_after
        )
        if still != self._still:
            self._still = still
            switch = ctx.disable if still else ctx.enable
            for name in self.pause:
                switch(name)
        return {
            self.name: {
                "scene": self._scene,
                "cut": cut,
                "distance": round(distance, 4),
                "motion": round(motion, 5),
                "still": still,
                "scene_start": self._scene_start,
            }
        }

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {self.name: {"scenes": self._scene, "still_s": round(self._still_s, 3)}}

    def snapshot(self) -> dict[str, Any] | None:
        """Counters and the still flag; the thumbnail is not kept, so the first frame after a
        restore is a new reference rather than a cut."""
        return {
            "scene": self._scene,
            "scene_start": self._scene_start,
            "still": self._still,
            "still_s": self._still_s,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot`; raises ``ValueError`` for a state it did not write."""
        scene, start = state.get("scene"), state.get("scene_start")
        still, still_s = state.get("still"), state.get("still_s")
        if (
            not isinstance(scene, int)
            or isinstance(scene, bool)
            or scene < 0
            or not isinstance(start, int | float)
            or not isinstance(still, bool)
            or not isinstance(still_s, int | float)
        ):
            raise ValueError(
                "expected a scene_change snapshot {scene, scene_start, still, still_s}, "
                f"got {state!r}"
            )
        self._scene, self._scene_start = scene, float(start)
        self._still, self._still_s = still, float(still_s)
        self._last = None
