"""A model in one file: the brightness of the picture, slowly.

The first of the seed's two mock models. It stands in for a heavy network: each frame costs
``delay_s`` seconds (0.2 by default, slower than a 30 fps camera delivers frames), so running
it shows that the server stays live while a model lags: frames it cannot keep up with are
skipped for it alone, and other models and the camera's track go on.

It also shows the two habits the model API asks for: return nothing (``None``) while there
is not enough to say (here, the first ``warmup_frames`` frames are only cached), and return a
session summary from :meth:`end`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np

from framebroker import BaseModel, Frame, ProcessContext

__all__ = ["MockModel1"]


class MockModel1(BaseModel):
    """Outputs ``{"brightness": b}``, the mean grey level in [0, 1] of the last frames.

    ``b`` averages the last ``warmup_frames`` frames, so nothing comes out until that many
    have been seen. :meth:`end` returns ``{"brightness_mean": ..., "brightness_frames": n}``
    over the whole session (``None`` for an empty one). The constructor raises
    ``ValueError`` naming a bad parameter.
    """

    name = "mock_model_1"
    needs_image = True

    def __init__(self, *, delay_s: float = 0.2, warmup_frames: int = 5) -> None:
        if isinstance(delay_s, bool) or not isinstance(delay_s, int | float):
            raise ValueError(f"delay_s must be a number of seconds >= 0, got {delay_s!r}")
        if not math.isfinite(delay_s) or delay_s < 0:
            raise ValueError(f"delay_s must be a number of seconds >= 0, got {delay_s!r}")
        if isinstance(warmup_frames, bool) or not isinstance(warmup_frames, int):
            raise ValueError(f"warmup_frames must be an integer >= 1, got {warmup_frames!r}")
        if warmup_frames < 1:
            raise ValueError(f"warmup_frames must be an integer >= 1, got {warmup_frames!r}")
        self.delay_s = float(delay_s)
        self.warmup_frames = warmup_frames
        # Bounded: a session may last hours, the model only ever needs the last few frames.
        self._recent: deque[float] = deque(maxlen=warmup_frames)
        self._total = 0.0
        self._frames = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        time.sleep(self.delay_s)  # the "network": deliberately slow
        level = float(np.mean(frame.image)) / 255.0
        self._recent.append(level)
        self._total += level
        self._frames += 1
        if len(self._recent) < self.warmup_frames:
            return None
        return {"brightness": round(sum(self._recent) / len(self._recent), 4)}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        mean = round(self._total / self._frames, 4) if self._frames else None
        return {"brightness_mean": mean, "brightness_frames": self._frames}
