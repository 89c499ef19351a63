"""Drawing detections on frames: boxes, track ids and classes, in colours stable per track."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from ..core.detections import Detections

__all__ = ["color_for", "draw_banner", "draw_counting_lines", "draw_detections"]

Image = NDArray[np.uint8]
Color = tuple[int, int, int]

# A fixed, well-separated palette (BGR): neighbouring ids get clearly different colours.
_PALETTE: tuple[Color, ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
    (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
    (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
    (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
)  # fmt: skip
_BLACK: Color = (0, 0, 0)
_WHITE: Color = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(key: int) -> Color:
    """The BGR colour of a track id (or of a class, for untracked boxes).

    The same key always gets the same colour, in every session and process, so a track keeps
    its colour for its whole life.
    """
    return _PALETTE[key % len(_PALETTE)]


def _text_color(background: Color) -> Color:
    b, g, r = background
    return _BLACK if 0.114 * b + 0.587 * g + 0.299 * r > 150 else _WHITE


def draw_detections(
    image: Image,
    detections: Detections,
    *,
    class_names: Mapping[int, str] | None = None,
    copy: bool = True,
) -> Image:
    """``image`` with each detection's box and a filled label ``#<track id> <class>``.

    The class is shown by name when ``class_names`` has it, else by number; untracked boxes
    (track id -1) are labelled with the class alone and coloured per class. Labels sit above
    their box, or inside it at the top edge of the image, and are kept inside the image.
    Boxes partly outside the image show their visible edges; boxes wholly outside, empty or
    with non-finite coordinates are skipped, never an error. Line width and text size follow
    the image size.

    With ``copy=True`` (the default) the input is left untouched; with ``copy=False`` it is
    drawn on and returned. Raises ``ValueError`` for an array that is not ``uint8`` (H, W, 3),
    or, with ``copy=False``, one that is read-only or not C-contiguous.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 array of shape (H, W, 3), got {image.dtype} {image.shape}"
        )
    if copy:
        out = image.copy()
    elif not (image.flags.writeable and image.flags.c_contiguous):
        raise ValueError("copy=False needs a writable, C-contiguous image to draw on")
    else:
        out = image
    h, w = out.shape[:2]
    if len(detections) == 0 or h == 0 or w == 0:
        return out

    line = max(1, round((h + w) / 2 * 0.003))
    scale = max(0.4, line / 3)
    text_thickness = max(1, line - 1)
    pad = max(1, line)

    xyxy = detections.xyxy
    keep = np.isfinite(xyxy).all(axis=1)
    keep &= (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    keep &= (xyxy[:, 2] >= 0) & (xyxy[:, 3] >= 0) & (xyxy[:, 0] < w) & (xyxy[:, 1] < h)
    if not keep.any():
        return out
    # Clip just past the border, not onto it: an edge outside the image stays undrawn, and
    # coordinates stay within the int32 range OpenCV takes.
    boxes = np.rint(xyxy[keep]).astype(np.int64)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(-line - 1, w + line)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(-line - 1, h + line)
    track_ids = detections.track_id[keep].tolist()
    class_ids = detections.class_id[keep].tolist()
    colors = [
        color_for(tid if tid >= 0 else cls) for tid, cls in zip(track_ids, class_ids, strict=True)
    ]

    rects = boxes.tolist()
    for (x1, y1, x2, y2), color in zip(rects, colors, strict=True):
        cv2.rectangle(out, (x1, y1), (x2, y2), color, line)

    # Labels after all boxes, so no box is drawn over another box's label.
    for (x1, y1, _, _), tid, cls, color in zip(rects, track_ids, class_ids, colors, strict=True):
        name = class_names.get(cls, str(cls)) if class_names is not None else str(cls)
        label = f"#{tid} {name}" if tid >= 0 else name
        (tw, th), base = cv2.getTextSize(label, _FONT, scale, text_thickness)
        lw, lh = tw + 2 * pad, th + base + 2 * pad
        ax, ay = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
        ty = ay - lh if ay - lh >= 0 else ay
        ty = max(0, min(ty, h - lh))
        tx = max(0, min(ax, w - lw))
        cv2.rectangle(out, (tx, ty), (tx + lw - 1, ty + lh - 1), color, cv2.FILLED)
        cv2.putText(
            out,
            label,
            (tx + pad, ty + pad + th),
            _FONT,
            scale,
            _text_color(color),
            text_thickness,
            cv2.LINE_AA,
        )
    return out


def draw_counting_lines(
    image: Image, lines: Sequence[tuple[tuple[float, float], tuple[float, float]]]
) -> Image:
    """Counting lines, in place, as thick two-tone strokes visible on any background."""
    h, w = image.shape[:2]
    thickness = max(2, round(min(h, w) / 200))
    for (x1, y1), (x2, y2) in lines:
        a = (round(x1), round(y1))
        b = (round(x2), round(y2))
        cv2.line(image, a, b, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.line(image, a, b, (0, 255, 255), thickness, cv2.LINE_AA)
    return image


def draw_banner(image: Image, text: str) -> Image:
    """A line of text on a dark strip at the top left, in place (counts, event state)."""
    h, w = image.shape[:2]
    scale = max(0.45, min(h, w) / 700)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(4, th // 3)
    cv2.rectangle(image, (0, 0), (min(w - 1, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(
        image, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
        thickness, cv2.LINE_AA,
    )  # fmt: skip
    return image
