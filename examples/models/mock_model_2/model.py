"""The model class of the package model: motion energy between consecutive frames."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from framebroker import BaseModel, Frame, ProcessContext

from .features import motion_energy, thumbnail

__all__ = ["MockModel2"]


class MockModel2(BaseModel):
    """Outputs ``{"motion": m}``: how much the picture changed since the frame before, in [0, 1].

    Deliberately slower still than the first mock model (``delay_s`` 0.5 s a frame by
    default). The first frame only gives something to compare with, so it returns ``None``.
    :meth:`end` returns ``{"motion_max": ..., "motion_frames": n}`` (``None`` when fewer than
    two frames came). The constructor raises ``ValueError`` for a bad ``delay_s``.
    """

    name = "mock_model_2"
    needs_image = True

    def __init__(self, *, delay_s: float = 0.5) -> None:
        if isinstance(delay_s, bool) or not isinstance(delay_s, int | float):
            raise ValueError(f"delay_s must be a number of seconds >= 0, got {delay_s!r}")
        if not math.isfinite(delay_s) or delay_s < 0:
            raise ValueError(f"delay_s must be a number of seconds >= 0, got {delay_s!r}")
        self.delay_s = float(delay_s)
        # One thumbnail, not a history: all the state a session's model keeps is bounded.
        self._previous: NDArray[np.float32] | None = None
        self._max: float | None = None
        self._frames = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        time.sleep(self.delay_s)  # the "network": deliberately slow
        current = thumbnail(frame.image)
        previous, self._previous = self._previous, current
        self._frames += 1
        if previous is None:
            return None
        motion = motion_energy(previous, current)
        self._max = motion if self._max is None else max(self._max, motion)
        return {"motion": round(motion, 4)}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        peak = None if self._max is None else round(self._max, 4)
        return {"motion_max": peak, "motion_frames": self._frames}
