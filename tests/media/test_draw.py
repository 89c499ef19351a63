from __future__ import annotations

import numpy as np

from framebroker.core import Detections
from framebroker.media import color_for, draw_detections


def blank(h: int = 240, w: int = 320) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def test_draws_box_edges_and_leaves_the_rest() -> None:
    img = blank()
    dets = Detections.from_arrays([[50, 60, 150, 200]], [0.9], [0], [7])
    out = draw_detections(img, dets)
    assert out.shape == img.shape
    assert img.sum() == 0  # the input is untouched
    assert out[130, 50].any()  # left edge
    assert not out[130, 100].any()  # inside the box
    assert not out[230, 300].any()  # far away
    assert tuple(out[130, 50]) == color_for(7)


def test_boxes_outside_the_image_do_not_crash() -> None:
    dets = Detections.from_arrays(
        [[-50, -50, 20, 20], [300, 200, 900, 900], [1000, 1000, 1100, 1100]], [0.9] * 3
    )
    out = draw_detections(blank(), dets)
    assert out.shape == (240, 320, 3)
    assert out.any()


def test_empty_and_in_place() -> None:
    img = blank()
    assert draw_detections(img, Detections.empty()).sum() == 0
    dets = Detections.from_arrays([[10, 10, 50, 50]], [0.9])
    out = draw_detections(img, dets, copy=False, class_names={0: "person"})
    assert out is img and img.any()
