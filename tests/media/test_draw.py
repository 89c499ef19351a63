from __future__ import annotations

import numpy as np
import pytest

from framebroker.core import Detections
from framebroker.media import color_for, draw_detections


def blank(h: int = 240, w: int = 320) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def test_draws_box_edges_and_leaves_the_rest() -> None:
    img = blank()
    dets = Detections.from_arrays([[50, 60, 150, 200]], [0.9], [0], [7])
    out = draw_detections(img, dets)
    assert out.shape == img.shape
    assert out.dtype == np.uint8
    assert not img.any()  # the input is untouched
    assert tuple(out[130, 50]) == color_for(7)  # left edge
    assert tuple(out[130, 150]) == color_for(7)  # right edge
    assert tuple(out[200, 100]) == color_for(7)  # bottom edge
    assert not out[130, 100].any()  # inside the box
    assert not out[230, 300].any()  # far away


def test_label_sits_above_the_box_in_its_colour() -> None:
    dets = Detections.from_arrays([[100, 100, 200, 200]], [0.9], [3], [12])
    out = draw_detections(blank(), dets, class_names={3: "car"})
    above = out[80:99, 100:200]
    assert (above == color_for(12)).all(axis=2).any()  # the filled label
    assert (above != color_for(12)).any(axis=2).any()  # the text on it


@pytest.mark.parametrize(
    ("box", "rows", "cols"),
    [
        ([10, 0, 100, 100], slice(0, 6), slice(10, 40)),  # at the top: label inside the box
        ([300, 50, 400, 100], slice(30, 49), slice(200, 320)),  # off the right: shifted left
    ],
)
def test_label_is_kept_inside_the_image(box: list[float], rows: slice, cols: slice) -> None:
    dets = Detections.from_arrays([box], [0.9], [0], [9])
    out = draw_detections(blank(), dets, class_names={0: "person"})
    assert (out[rows, cols] == color_for(9)).all(axis=2).any()


def test_colour_is_per_track_then_per_class() -> None:
    dets = Detections.from_arrays(
        [[20, 40, 80, 100], [120, 40, 180, 100], [220, 40, 280, 100]],
        [0.9] * 3,
        class_id=[5, 5, 5],
        track_id=[1, 2, -1],
    )
    out = draw_detections(blank(), dets)
    assert tuple(out[70, 20]) == color_for(1)
    assert tuple(out[70, 120]) == color_for(2)
    assert tuple(out[70, 220]) == color_for(5)
    assert color_for(1) != color_for(2)
    assert color_for(1_000_001) == color_for(1_000_001)


@pytest.mark.parametrize(
    "box",
    [
        [-50, -50, 20, 20],  # off the top-left corner
        [300, 200, 900, 900],  # off the bottom-right corner
        [-1e12, -1e12, 1e12, 1e12],  # around the whole image, beyond int32
        [1000, 1000, 1100, 1100],  # wholly outside
        [-100, -100, -10, -10],  # wholly outside, negative
        [100, 100, 100, 150],  # no width
        [np.nan, 0, 10, 10],  # not a number
        [0, 0, np.inf, 10],  # infinite
        [0, 230, 320, 240],  # a sliver along the bottom: the label must stay inside
    ],
)
def test_boxes_outside_the_image_do_not_crash(box: list[float]) -> None:
    dets = Detections.from_arrays([box], [0.9], [0], [4])
    out = draw_detections(blank(), dets, class_names={0: "a rather long class name"})
    assert out.shape == (240, 320, 3)


def test_visible_edges_of_a_partly_outside_box() -> None:
    out = draw_detections(blank(), Detections.from_arrays([[-50, 100, 100, 300]], [0.9]))
    assert tuple(out[150, 100]) == color_for(0)  # right edge, inside the image
    assert not out[150, 0].any()  # the left edge is off-image: nothing drawn at the border


def test_empty_detections_and_in_place() -> None:
    img = blank()
    assert not draw_detections(img, Detections.empty()).any()
    dets = Detections.from_arrays([[10, 10, 50, 50]], [0.9])
    out = draw_detections(img, dets, copy=False, class_names={0: "person"})
    assert out is img
    assert img.any()


def test_in_place_refuses_a_read_only_image() -> None:
    img = np.frombuffer(bytes(240 * 320 * 3), np.uint8).reshape(240, 320, 3)
    dets = Detections.from_arrays([[10, 10, 50, 50]], [0.9])
    with pytest.raises(ValueError, match="writable"):
        draw_detections(img, dets, copy=False)
    assert draw_detections(img, dets).any()  # a copy is fine


def test_non_contiguous_input_is_drawn_on_a_copy() -> None:
    img = np.zeros((240, 640, 3), np.uint8)[:, ::2]
    out = draw_detections(img, Detections.from_arrays([[10, 10, 50, 50]], [0.9]))
    assert out.shape == (240, 320, 3)
    assert out.any()


def test_refuses_other_arrays() -> None:
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        draw_detections(np.zeros((10, 10), np.uint8), Detections.empty())
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros((10, 10, 3), np.float32), Detections.empty())


def test_line_width_grows_with_the_image() -> None:
    def edge_width(size: int) -> int:
        dets = Detections.from_arrays([[size // 4, size // 4, size // 2, size // 2]], [0.9])
        out = draw_detections(blank(size, size), dets)
        return int(out[size * 3 // 8, : size // 3].any(axis=1).sum())

    assert edge_width(2000) > edge_width(200) >= 1


def test_many_boxes() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(-100, 1300, (500, 2))
    wh = rng.uniform(1, 300, (500, 2))
    dets = Detections.from_arrays(
        np.hstack([xy, xy + wh]), np.ones(500), rng.integers(0, 80, 500), np.arange(500)
    )
    out = draw_detections(blank(720, 1280), dets)
    assert out.shape == (720, 1280, 3)
