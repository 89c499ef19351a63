"""Processors for seed-002 tests, importable by dotted path (``tests.runtime.processors:...``)
from a pipeline in the server's configuration."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from framebroker.core import Frame, ProcessContext, Processor


class FrameSize(Processor):
    """Answers each frame's size and counts frames; a stand-in for a model."""

    name: ClassVar[str] = "frame_size"
    needs_image: ClassVar[bool] = True

    def __init__(self) -> None:
        self.seen = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.seen += 1
        h, w = frame.image.shape[:2]
        return {"size": [w, h], "seen": self.seen, "mean": np.float32(frame.image.mean())}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"total": self.seen}


class Broken(Processor):
    name: ClassVar[str] = "broken"

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        raise RuntimeError("model crashed")
