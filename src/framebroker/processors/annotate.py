"""Draw a frame's detections and hand the picture back as a base64 JPEG."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.frame import Frame
from ..core.processor import ProcessContext, Processor
from ..media.draw import draw_detections
from ..media.image import encode_jpeg_base64

__all__ = ["Annotator"]


class Annotator(Processor):
    """Outputs ``annotated_image``: the frame, same size, boxes and ids drawn, JPEG base64.

    Frames without an image produce nothing (a boxes-only request has nothing to draw on).
    """

    name = "annotate"
    needs_image = True

    def __init__(self, quality: int = 90, class_names: Mapping[int, str] | None = None) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality}")
        self.quality = quality
        self.class_names = dict(class_names) if class_names else None

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        if not frame.has_image:
            return None
        image = frame.image
        if frame.detections is not None:
            image = draw_detections(image, frame.detections, class_names=self.class_names)
        return {"annotated_image": encode_jpeg_base64(image, self.quality)}
