"""Geometry every single-shot detector shares: letterboxing in, boxes back out, and NMS.

A network sees the frame scaled (aspect ratio kept) and padded to its input size; its boxes
come back in those input pixels and :class:`Letterbox` maps them to the frame's own pixels.
Non-maximum suppression is plain greedy NMS per class, in numpy: after the score threshold a
frame leaves a few hundred candidates at most, and numpy keeps it exact and dependency-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DetectorOutput",
    "Letterbox",
    "batched_nms",
    "empty_output",
    "fit_input_size",
    "letterbox",
    "select",
]

Image = NDArray[np.uint8]

MAX_CANDIDATES = 1000
"""Boxes kept, best first, before NMS: bounds its quadratic cost on a pathological frame."""


class DetectorOutput(NamedTuple):
    """Detections in image pixels: ``xyxy`` (N, 4), ``score`` (N,), ``class_id`` (N,).

    Sorted by score, best first; boxes are clipped to the image.
    """

    xyxy: NDArray[np.float64]
    score: NDArray[np.float64]
    class_id: NDArray[np.int64]


def empty_output() -> DetectorOutput:
    return DetectorOutput(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was placed into a network input: ``input = frame * scale + pad``."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    width: int
    height: int

    def to_image(self, xyxy: NDArray[np.float64]) -> NDArray[np.float64]:
        """Boxes from network-input pixels to frame pixels, clipped to the frame."""
        pad = (self.pad_x, self.pad_y, self.pad_x, self.pad_y)
        out = (xyxy - pad) / (self.scale_x, self.scale_y, self.scale_x, self.scale_y)
        np.clip(out[:, 0::2], 0.0, self.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, self.height, out=out[:, 1::2])
        return out


def fit_input_size(height: int, width: int, longest: int, multiple: int) -> tuple[int, int]:
    """The smallest input, sides multiples of ``multiple``, holding the frame scaled to fit
    ``longest`` on its longer side: (480, 640) with 416 and 32 gives (320, 416).

    A fully convolutional network can take such a size directly, so a landscape frame is not
    padded to a square: a 4:3 frame costs three quarters of a square input.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image must have a positive size, got {width}x{height}")
    scale = longest / max(height, width)
    return (
        max(multiple, math.ceil(round(height * scale) / multiple) * multiple),
        max(multiple, math.ceil(round(width * scale) / multiple) * multiple),
    )


def letterbox(
    image: Image, height: int, width: int, *, pad_value: int = 0, centre: bool = True
) -> tuple[Image, Letterbox]:
    """``image`` scaled to fit ``height`` x ``width`` with its aspect ratio kept, and padded.

    ``centre`` splits the padding between both sides (NanoDet, YOLOv8); otherwise the image
    sits in the top-left corner (YOLOX). Returns the padded image and the mapping back.
    """
    src_h, src_w = image.shape[:2]
    scale = min(height / src_h, width / src_w)
    new_w = min(width, max(1, round(src_w * scale)))
    new_h = min(height, max(1, round(src_h * scale)))
    pad_x = (width - new_w) // 2 if centre else 0
    pad_y = (height - new_h) // 2 if centre else 0
    canvas = np.full((height, width, 3), pad_value, dtype=np.uint8)
    if (new_w, new_h) == (src_w, src_h):
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = image
    else:
        # Bilinear, as the detectors' own training pipelines resize.
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = cv2.resize(
            image, (new_w, new_h), interpolation=cv2.INTER_LINEAR
        )
    return canvas, Letterbox(
        scale_x=new_w / src_w,
        scale_y=new_h / src_h,
        pad_x=pad_x,
        pad_y=pad_y,
        width=src_w,
        height=src_h,
    )


def batched_nms(
    xyxy: NDArray[np.float64],
    score: NDArray[np.float64],
    class_id: NDArray[np.int64],
    iou_threshold: float,
) -> NDArray[np.int64]:
    """Indices kept by greedy NMS run separately per class, best score first.

    Boxes of different classes never suppress each other: each class is shifted to its own
    region of the plane, far from the others, and one NMS runs over all of them.
    """
    if len(score) == 0:
        return np.zeros(0, np.int64)
    offset = (class_id.astype(np.float64) * (float(np.abs(xyxy).max()) + 1.0))[:, None]
    boxes = xyxy + offset
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    order = np.argsort(-score, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        inter = w * h
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def select(
    xyxy: NDArray[np.float64],
    score: NDArray[np.float64],
    class_id: NDArray[np.int64],
    *,
    iou_threshold: float,
    max_detections: int,
    frame: Letterbox,
) -> DetectorOutput:
    """NMS over candidates already past the score threshold, mapped to frame pixels."""
    if len(score) > MAX_CANDIDATES:
        top = np.argsort(-score, kind="stable")[:MAX_CANDIDATES]
        xyxy, score, class_id = xyxy[top], score[top], class_id[top]
    keep = batched_nms(xyxy, score, class_id, iou_threshold)[:max_detections]
    return DetectorOutput(
        frame.to_image(xyxy[keep]),
        score[keep].astype(np.float64),
        class_id[keep].astype(np.int64),
    )
