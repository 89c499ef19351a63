"""Models the e2e WebRTC server loads by ``module:attr``, as a user's models would be."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from framebroker.core import Frame, ProcessContext, Processor

from ..tools.clips import index_of


class FrameNumber(Processor):
    """Reads the frame number the test camera drew into each picture."""

    name: ClassVar[str] = "frame_number"
    needs_image = True

    def __init__(self) -> None:
        self.seen: list[int] = []

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.seen.append(index_of(frame.image))
        return {"drawn_index": self.seen[-1], "model": "frame_number"}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"frames_seen": len(self.seen), "last_drawn": self.seen[-1] if self.seen else None}


class Slow(Processor):
    """A third of a second per frame, as the seed's mock models are deliberately slow."""

    name: ClassVar[str] = "slow"

    def __init__(self) -> None:
        self.runs = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        time.sleep(0.3)
        self.runs += 1
        return {"slow_runs": self.runs, "model": "slow"}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"slow_total": self.runs}
