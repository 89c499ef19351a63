"""The least a seed-003 plugin does: look at the image, report its shape."""

from __future__ import annotations

from typing import Any

from framebroker.core import Frame, ProcessContext, Processor


class ShapeOnly(Processor):
    name = "shape_only"
    needs_image = True

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"seen": {"shape": list(frame.image.shape)}}
