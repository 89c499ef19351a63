"""Drawing detections on frames: boxes, track ids and classes, in colours stable per track."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
from numpy.typing import NDArray

from ..core.detections import Detections

__all__ = ["color_for", "draw_detections"]

Image = NDArray[np.uint8]

# A fixed, well-separated palette (BGR); a track keeps its colour for its whole life.
_PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
    (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
    (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
    (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
]  # fmt: skip


def color_for(key: int) -> tuple[int, int, int]:
    return _PALETTE[key % len(_PALETTE)]


def draw_detections(
    image: Image,
    detections: Detections,
    *,
    class_names: Mapping[int, str] | None = None,
    copy: bool = True,
) -> Image:
    """Boxes labelled ``#<track id> <class>`` (class alone when untracked).

    Boxes partly or wholly outside the image are clipped, never an error. Line width and text
    size follow the image size so labels stay legible from 320 px to 4K.
    """
    out = image.copy() if copy else image
    if len(detections) == 0:
        return out
    h, w = out.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    scale = max(0.35, min(h, w) / 900)
    boxes = np.rint(detections.xyxy).astype(np.int64)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
    for (x1, y1, x2, y2), tid, cls in zip(
        boxes.tolist(), detections.track_id.tolist(), detections.class_id.tolist(), strict=True
    ):
        if x2 <= x1 or y2 <= y1:
            continue
        color = color_for(tid if tid >= 0 else cls)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        name = class_names.get(cls, str(cls)) if class_names else str(cls)
        label = f"#{tid} {name}" if tid >= 0 else name
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        tx = min(x1, max(0, w - tw - 2))
        cv2.rectangle(out, (tx, ty), (tx + tw + 2, ty + th + base + 2), color, cv2.FILLED)
        cv2.putText(
            out, label, (tx + 1, ty + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
            (255, 255, 255), thickness, cv2.LINE_AA,
        )  # fmt: skip
    return out
