"""Letterboxing into a network input and back, and per-class NMS."""

from __future__ import annotations

import numpy as np
import pytest

from framebroker.detectors.boxes import (
    MAX_CANDIDATES,
    Letterbox,
    batched_nms,
    fit_input_size,
    letterbox,
    select,
)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (480, 640, (320, 416)),  # 4:3: 416x312, rounded up to a multiple of 32
        (576, 768, (320, 416)),
        (720, 1280, (256, 416)),
        (640, 480, (416, 320)),  # portrait
        (100, 100, (416, 416)),  # small frames are scaled up
        (10, 4000, (32, 416)),  # never below one stride
    ],
)
def test_fit_input_size(height: int, width: int, expected: tuple[int, int]) -> None:
    assert fit_input_size(height, width, 416, 32) == expected


def test_fit_input_size_rejects_an_empty_image() -> None:
    with pytest.raises(ValueError, match="positive size, got 0x480"):
        fit_input_size(480, 0, 416, 32)


def test_letterbox_centres_and_maps_boxes_back() -> None:
    image = np.full((480, 640, 3), 200, np.uint8)
    canvas, placed = letterbox(image, 320, 416, pad_value=0)
    assert canvas.shape == (320, 416, 3)
    assert placed.scale_x == pytest.approx(416 / 640)
    assert placed.scale_y == pytest.approx(312 / 480)
    assert (placed.pad_x, placed.pad_y) == (0, 4)
    assert (canvas[:4] == 0).all()
    assert (canvas[-4:] == 0).all()
    assert (canvas[4:-4] == 200).all()
    # A box drawn in input pixels lands where the same content is in the frame.
    frame_box = np.array([[64.0, 96.0, 320.0, 400.0]])
    scale = np.array([placed.scale_x, placed.scale_y] * 2)
    input_box = frame_box * scale + [0, 4, 0, 4]
    np.testing.assert_allclose(placed.to_image(input_box), frame_box, atol=1e-9)


def test_letterbox_top_left_for_yolox_style() -> None:
    image = np.full((480, 640, 3), 7, np.uint8)
    canvas, placed = letterbox(image, 640, 640, pad_value=114, centre=False)
    assert (placed.pad_x, placed.pad_y, placed.scale_x) == (0, 0, 1.0)
    assert (canvas[:480] == 7).all()
    assert (canvas[480:] == 114).all()


def test_boxes_are_clipped_to_the_frame() -> None:
    placed = Letterbox(scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=10, width=100, height=80)
    out = placed.to_image(np.array([[-10.0, 0.0, 70.0, 60.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.0, 100.0, 80.0]])


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    xyxy = np.array(
        [
            [0, 0, 10, 10],
            [1, 1, 11, 11],  # overlaps the first (IoU 0.68), weaker: dropped
            [1, 1, 11, 11],  # same place, other class: kept
            [20, 20, 30, 30],  # elsewhere: kept
        ],
        dtype=np.float64,
    )
    score = np.array([0.9, 0.8, 0.7, 0.6])
    class_id = np.array([0, 0, 1, 0])
    assert batched_nms(xyxy, score, class_id, 0.5).tolist() == [0, 2, 3]
    assert batched_nms(xyxy, score, class_id, 0.7).tolist() == [0, 1, 2, 3]
    assert batched_nms(xyxy[:0], score[:0], class_id[:0], 0.5).tolist() == []


def test_select_bounds_candidates_and_detections() -> None:
    rng = np.random.default_rng(1)
    n = MAX_CANDIDATES + 500
    corner = rng.uniform(0, 1000, (n, 2))
    xyxy = np.concatenate([corner, corner + 5.0], axis=1)
    score = rng.uniform(0.5, 1.0, n)
    placed = Letterbox(1.0, 1.0, 0, 0, 2000, 2000)
    out = select(
        xyxy, score, np.zeros(n, np.int64), iou_threshold=0.5, max_detections=7, frame=placed
    )
    assert len(out.score) == 7
    assert (np.diff(out.score) <= 0).all()
    assert out.score[0] == score.max()
