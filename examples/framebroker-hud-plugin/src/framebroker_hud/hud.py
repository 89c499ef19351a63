"""The dominant colour of a rectangle of the HUD: a team colour, a health bar, a status light.

Games signal state with flat, saturated colours in fixed places, so a histogram over named
hue ranges answers "what colour is the bar" in well under a millisecond, where k-means would
cost more and answer with a colour that has no name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from framebroker.core import Frame, ProcessContext, Processor
from numpy.typing import NDArray

__all__ = ["COLOUR_NAMES", "HudColour", "Region"]

# OpenCV hue runs 0..179 (degrees / 2). Upper bounds, exclusive; red wraps around 0.
_HUES: tuple[tuple[int, str], ...] = (
    (8, "red"),
    (20, "orange"),
    (33, "yellow"),
    (78, "green"),
    (98, "cyan"),
    (130, "blue"),
    (150, "purple"),
    (170, "magenta"),
    (180, "red"),
)
_ACHROMATIC = ("black", "grey", "white")
COLOUR_NAMES: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "magenta",
    *_ACHROMATIC,
)
"""Every name :class:`HudColour` may answer with."""


def _hue_classes() -> NDArray[np.uint8]:
    lut = np.empty(180, np.uint8)
    lo = 0
    for hi, name in _HUES:
        lut[lo:hi] = COLOUR_NAMES.index(name)
        lo = hi
    return lut


_HUE_CLASS = _hue_classes()
_BLACK, _GREY, _WHITE = (COLOUR_NAMES.index(n) for n in _ACHROMATIC)

Region = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` as fractions of the frame's width and height."""


def _region(value: Sequence[float]) -> Region:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 4
    if ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        x0, y0, x1, y1 = (float(v) for v in value)
        if 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0:
            return (x0, y0, x1, y1)
    raise ValueError(
        "region must be [x0, y0, x1, y1] fractions of the frame with 0 <= x0 < x1 <= 1 and "
        f"0 <= y0 < y1 <= 1, got {value!r}"
    )


def _level(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise ValueError(f"{name} must be an integer in 0..255, got {value!r}")
    return value


class HudColour(Processor):
    """Reads the dominant colour of ``region`` on every frame it is due.

    Each pixel of the region is classed by its HSV value: a pixel with saturation of at least
    ``min_saturation`` and value of at least ``min_value`` by its hue (red, orange, ... as in
    :data:`COLOUR_NAMES`), any other as black, grey or white by its value. The most common
    class wins. Output, under the processor's name::

        {"colour": "blue", "bgr": [b, g, r], "coverage": 0.93, "since": 1556855549.37}

    ``bgr`` is the mean of the winning pixels, ``coverage`` their share of the region and
    ``since`` the frame timestamp at which this colour was first read without a change in
    between (the state this processor keeps). The region is given in fractions so one config
    serves every capture size. The constructor raises ``ValueError`` naming a bad parameter.
    """

    name = "hud_colour"
    needs_image = True

    def __init__(
        self,
        region: Sequence[float] = (0.02, 0.9, 0.3, 0.95),
        *,
        min_saturation: int = 80,
        min_value: int = 60,
    ) -> None:
        self.region = _region(region)
        self.min_saturation = _level("min_saturation", min_saturation)
        self.min_value = _level("min_value", min_value)
        self._colour: str | None = None
        self._since = 0.0

    def crop(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """The region's pixels; at least one pixel on each side, however small the frame."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = self.region
        left, top = min(int(x0 * w), w - 1), min(int(y0 * h), h - 1)
        right, bottom = max(int(np.ceil(x1 * w)), left + 1), max(int(np.ceil(y1 * h)), top + 1)
        return image[top:bottom, left:right]

    def read(self, image: NDArray[np.uint8]) -> dict[str, Any]:
        """The colour reading of one BGR image, without touching this processor's state."""
        roi = np.ascontiguousarray(self.crop(image))
        hsv = cv2.cvtColor(roi, cv2.COLOR_BGR2HSV).reshape(-1, 3)
        h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
        classes = np.where(v < self.min_value, _BLACK, np.where(v > 200, _WHITE, _GREY))
        chroma = (s >= self.min_saturation) & (v >= self.min_value)
        classes = np.where(chroma, _HUE_CLASS[h], classes)
        counts = np.bincount(classes, minlength=len(COLOUR_NAMES))
        best = int(np.argmax(counts))
        bgr = roi.reshape(-1, 3)[classes == best].mean(axis=0)
        return {
            "colour": COLOUR_NAMES[best],
            "bgr": [round(float(c)) for c in bgr],
            "coverage": round(float(counts[best]) / len(classes), 4),
        }

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        reading = self.read(frame.image)
        if reading["colour"] != self._colour:
            self._colour = reading["colour"]
            self._since = frame.timestamp
        reading["since"] = self._since
        return {self.name: reading}

    def snapshot(self) -> dict[str, Any] | None:
        return {"colour": self._colour, "since": self._since}

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot`; raises ``ValueError`` for a state it did not write."""
        colour, since = state.get("colour"), state.get("since")
        if (colour is not None and colour not in COLOUR_NAMES) or not isinstance(
            since, int | float
        ):
            raise ValueError(f"expected a hud_colour snapshot {{colour, since}}, got {state!r}")
        self._colour, self._since = colour, float(since)
