"""Draw a frame's detections and hand the picture back as a base64 JPEG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.frame import Frame
from ..core.processor import ProcessContext, Processor
from ..media.draw import draw_banner, draw_counting_lines, draw_detections
from ..media.image import encode_jpeg_base64

__all__ = ["CLASS_NAMES_META", "Annotator"]

CLASS_NAMES_META = "class_names"
"""``frame.meta`` key under which a detector names its classes (a sequence indexed by class
id); :class:`Annotator` draws those names when it was given none of its own."""


def _class_names(names: Mapping[Any, Any]) -> dict[int, str]:
    # Names may come from a JSON request, where object keys are always strings ("0").
    if not isinstance(names, Mapping):
        raise ValueError(
            f"class_names must be an object {{class number: name}}, got {type(names).__name__}"
        )
    out: dict[int, str] = {}
    for key, value in names.items():
        try:
            cls = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"class_names keys must be class numbers, got {key!r}") from None
        if isinstance(key, bool) or cls < 0:
            raise ValueError(f"class_names keys must be class numbers >= 0, got {key!r}")
        out[cls] = str(value)
    return out


class Annotator(Processor):
    """Outputs ``annotated_image``: the frame at its own size, boxes and ids drawn, base64 JPEG.

    The frame's image is never modified (later processors see the original pixels). A frame
    without detections is encoded as it is; a frame without an image produces nothing (a
    boxes-only request has nothing to draw on). Boxes are labelled with ``class_names`` (from
    the session's pipeline, say the tracking API's), else with the names the frame's
    detector gave (:data:`CLASS_NAMES_META`), else with class numbers. The constructor
    raises ``ValueError`` for a quality outside 1..100 or class names whose keys are not
    class numbers.
    """

    name = "annotate"
    needs_image = True

    def __init__(self, quality: int = 90, class_names: Mapping[int, str] | None = None) -> None:
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
        self.quality = quality
        self.class_names = _class_names(class_names) if class_names else None
        self._detector_names: tuple[Sequence[str], dict[int, str]] | None = None

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        if not frame.has_image:
            return None
        image = frame.image
        lines = frame.meta.get("counting_lines")
        counted = "count_in" in frame.results
        if frame.detections is not None and len(frame.detections) > 0:
            names = self.class_names or self._names_from(frame.meta.get(CLASS_NAMES_META))
            image = draw_detections(image, frame.detections, class_names=names)
        elif lines or counted:
            image = image.copy()
        if lines:
            draw_counting_lines(image, [(line.start, line.end) for line in lines])
        if counted:
            r = frame.results
            text = f"in {r.get('count_in', 0)}  out {r.get('count_out', 0)}"
            if r.get("event_active"):
                text += f"  EVENT +{r.get('current_event_count_in', 0)}"
            draw_banner(image, text)
        return {"annotated_image": encode_jpeg_base64(image, self.quality)}

    def _names_from(self, names: Any) -> dict[int, str] | None:
        """A detector's names as a mapping, made once per list (they come every frame)."""
        if not isinstance(names, Sequence) or isinstance(names, str):
            return None
        cached = self._detector_names
        if cached is None or cached[0] is not names:
            cached = self._detector_names = (names, dict(enumerate(map(str, names))))
        return cached[1]
