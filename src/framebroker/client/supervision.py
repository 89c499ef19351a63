"""supervision ``Detections`` to and from the tracking API's rows (supervision optional).

supervision keeps boxes as ``xyxy`` with ``confidence``, ``class_id`` and ``tracker_id``
arrays; the tracking API takes rows ``[x1, y1, x2, y2, score, class]`` and answers tracked
boxes. supervision is imported only here, and only when a conversion asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import supervision as sv

    from .tracking import TrackedBox

__all__ = ["detections_to_rows", "tracked_to_detections"]


def detections_to_rows(detections: Any) -> list[list[float]]:
    """supervision ``Detections`` as ``xyxy`` rows; a missing ``confidence`` counts as 1 and
    a missing ``class_id`` as 0. Raises ``ValueError`` for an ``xyxy`` of the wrong shape."""
    xyxy = np.asarray(detections.xyxy, dtype=float).reshape(-1, 4) if len(detections) else None
    if xyxy is None:
        return []
    n = len(xyxy)
    confidence = (
        np.ones(n) if detections.confidence is None else np.asarray(detections.confidence, float)
    )
    class_id = (
        np.zeros(n, int) if detections.class_id is None else np.asarray(detections.class_id, int)
    )
    if confidence.shape != (n,) or class_id.shape != (n,):
        raise ValueError(
            f"Detections of {n} boxes need {n} confidences and class ids, got "
            f"{confidence.shape} and {class_id.shape}"
        )
    return [
        [*box, score, cls]
        for box, score, cls in zip(
            xyxy.tolist(), confidence.tolist(), class_id.tolist(), strict=True
        )
    ]


def tracked_to_detections(tracks: Sequence[TrackedBox]) -> sv.Detections:
    """Tracked boxes as supervision ``Detections`` with ``tracker_id`` set."""
    try:
        import supervision as sv
    except ImportError:
        raise ImportError("to_supervision() needs supervision: pip install supervision") from None
    if not tracks:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([t.xyxy for t in tracks], dtype=np.float32),
        confidence=np.array([t.score for t in tracks], dtype=np.float32),
        class_id=np.array([t.class_id for t in tracks], dtype=int),
        tracker_id=np.array([t.track_id for t in tracks], dtype=int),
    )
