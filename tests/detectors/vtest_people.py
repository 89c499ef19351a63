"""Frames of OpenCV's ``vtest.avi`` with every visible person boxed by hand.

The boxes were drawn on the frames and checked by eye (xyxy, in the 768x576 frame's
pixels). People half hidden behind the sign in the middle of the courtyard are listed, and
a detector is allowed to miss them; traffic cones, the sign and the tripod are not people.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"
VTEST = MEDIA / "vtest.avi"
VTEST_640 = MEDIA / "vtest_640x480_h264.mp4"

Boxes = list[tuple[int, int, int, int]]

PEOPLE: dict[int, Boxes] = {
    100: [
        (346, 199, 380, 275), (375, 179, 411, 257), (493, 149, 517, 220), (518, 151, 540, 220),
        (589, 153, 620, 236), (222, 62, 237, 97),
        (422, 179, 450, 257),  # behind the sign
    ],
    200: [
        (616, 264, 651, 369), (219, 190, 251, 266), (703, 253, 744, 354), (676, 96, 699, 155),
        (489, 144, 518, 222), (82, 154, 109, 217), (703, 106, 721, 153),
    ],
    300: [
        (583, 160, 612, 236), (185, 160, 220, 236), (312, 212, 346, 294), (618, 166, 644, 234),
        (296, 158, 325, 232), (242, 160, 264, 222),
    ],
    600: [
        (452, 302, 506, 421), (567, 200, 597, 287), (641, 304, 672, 411), (280, 429, 346, 576),
        (187, 145, 208, 212), (672, 208, 704, 296),
    ],
    700: [
        (185, 167, 212, 238), (103, 284, 143, 396), (279, 210, 310, 296), (519, 167, 546, 235),
        (364, 174, 396, 257), (683, 220, 734, 308), (476, 137, 497, 201),
        (404, 152, 427, 240),  # behind the sign
    ],
}  # fmt: skip
HIDDEN = {100: 1, 700: 1}
"""How many of a frame's people are mostly hidden (by the sign) and may be missed."""


def read_frames(path: Path, indices: set[int]) -> dict[int, NDArray[np.uint8]]:
    """The frames at ``indices`` of a video, decoded in order (AVI seeking is not exact)."""
    if not path.exists():
        pytest.skip(f"shared sample video not found at {path}")
    capture = cv2.VideoCapture(str(path))
    frames: dict[int, NDArray[np.uint8]] = {}
    index = 0
    try:
        while len(frames) < len(indices):
            ok, image = capture.read()
            if not ok:
                break
            if index in indices:
                frames[index] = np.asarray(image, dtype=np.uint8)
            index += 1
    finally:
        capture.release()
    missing = indices - set(frames)
    assert not missing, f"{path} ended before frames {sorted(missing)}"
    return frames


def iou(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4), xyxy."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    out: NDArray[np.float64] = inter / (area_a[:, None] + area_b[None, :] - inter)
    return out


def match(found: NDArray[np.float64], people: Boxes) -> tuple[int, list[int]]:
    """How many people a detection covers (IoU >= 0.5, one each), and the detections that
    are near no person (IoU < 0.3 with all of them): false positives."""
    truth = np.asarray(people, dtype=np.float64)
    if len(found) == 0:
        return 0, []
    overlap = iou(found, truth)
    stray = [i for i in range(len(found)) if overlap[i].max() < 0.3]
    pairs = sorted(
        ((float(overlap[i, j]), i, j) for i, j in zip(*np.nonzero(overlap >= 0.5), strict=True)),
        reverse=True,
    )
    used_found: set[int] = set()
    used_people: set[int] = set()
    for _, i, j in pairs:
        if i not in used_found and j not in used_people:
            used_found.add(i)
            used_people.add(j)
    return len(used_people), stray
