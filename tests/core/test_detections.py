from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from framebroker.core.detections import BoxFormat, Detections, rows_of
from framebroker.errors import InvalidBoxes, PayloadTooLarge

SEED_ROWS = [[20, 23, 12, 24, 89, 0], [12, 34, 45, 56, 78, 1]]


def test_seed_rows_read_as_xywh_with_percent_scores() -> None:
    d = Detections.from_rows(SEED_ROWS, BoxFormat.XYWH)
    np.testing.assert_allclose(d.xyxy, [[20, 23, 32, 47], [12, 34, 57, 90]])
    np.testing.assert_allclose(d.score, [0.89, 0.78])
    assert d.class_id.tolist() == [0, 1]
    assert d.track_id.tolist() == [-1, -1]
    assert d.index.tolist() == [0, 1]


@pytest.mark.parametrize("fmt", list(BoxFormat))
def test_each_format_round_trips(fmt: BoxFormat) -> None:
    rows = [[10.5, 20.0, 30.0, 40.0, 0.9, 2], [100, 120, 5, 6, 0.3, 0]]
    if fmt is BoxFormat.XYXY:
        rows[1] = [100, 120, 105, 126, 0.3, 0]
    d = Detections.from_rows(rows, fmt)
    np.testing.assert_allclose(d.boxes(fmt), np.array(rows)[:, :4])
    assert (d.xyxy[:, 2:] > d.xyxy[:, :2]).all()


def test_formats_describe_the_same_box() -> None:
    a = Detections.from_rows([[10, 20, 30, 60, 0.5, 0]], BoxFormat.XYXY)
    b = Detections.from_rows([[10, 20, 20, 40, 0.5, 0]], BoxFormat.XYWH)
    c = Detections.from_rows([[20, 40, 20, 40, 0.5, 0]], BoxFormat.CXCYWH)
    np.testing.assert_allclose(a.xyxy, b.xyxy)
    np.testing.assert_allclose(a.xyxy, c.xyxy)


def test_rows_of_returns_client_rows_unchanged_with_ids() -> None:
    d = Detections.from_rows(SEED_ROWS)
    tracked = d.with_tracks(np.array([1]), np.array([7]))
    assert rows_of(SEED_ROWS, tracked) == [[12, 34, 45, 56, 78, 1, 7]]
    assert isinstance(rows_of(SEED_ROWS, tracked)[0][0], int)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ({"a": 1}, "expected a list of rows"),
        ([[1, 2, 3, 4, 0.5]], "expected 6 numbers"),
        ([[1, 2, 3, 4, 0.5, 0, 9]], "got 7"),
        ([5], "expected a list of 6 numbers, got int"),
        ([[1, 2, "3", 4, 0.5, 0]], "boxes[0][2]: expected a number, got str"),
        ([[1, 2, True, 4, 0.5, 0]], "got bool"),
        ([[1, 2, None, 4, 0.5, 0]], "got NoneType"),
        ([[1, 2, math.nan, 4, 0.5, 0]], "finite"),
        ([[1, 2, math.inf, 4, 0.5, 0]], "finite"),
        ([[1, 2, 0, 4, 0.5, 0]], "width > 0 and height > 0"),
        ([[1, 2, 3, -4, 0.5, 0]], "width > 0 and height > 0"),
        ([[1, 2, 3, 4, 101, 0]], "score must be"),
        ([[1, 2, 3, 4, -0.1, 0]], "score must be"),
        ([[1, 2, 3, 4, 0.5, -1]], "class must be a non-negative integer"),
        ([[1, 2, 3, 4, 0.5, 1.5]], "class must be a non-negative integer"),
    ],
)
def test_bad_rows_are_refused_with_the_place_named(rows: object, fragment: str) -> None:
    with pytest.raises(InvalidBoxes) as err:
        Detections.from_rows(rows)
    assert fragment in err.value.message
    assert err.value.field is not None
    assert err.value.field.startswith("boxes")


def test_xyxy_needs_ordered_corners() -> None:
    with pytest.raises(InvalidBoxes, match="right > left"):
        Detections.from_rows([[10, 10, 5, 20, 0.5, 0]], BoxFormat.XYXY)


def test_second_bad_row_is_named() -> None:
    with pytest.raises(InvalidBoxes) as err:
        Detections.from_rows([[1, 2, 3, 4, 0.5, 0], [1, 2, 3]])
    assert err.value.field == "boxes[1]"


def test_too_many_rows() -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 3"):
        Detections.from_rows([[1, 2, 3, 4, 0.5, 0]] * 4, max_rows=3)


def test_unknown_box_format_lists_the_known_ones() -> None:
    with pytest.raises(InvalidBoxes, match="xyxy, xywh, cxcywh"):
        BoxFormat.parse("ltrb")
    assert BoxFormat.parse(" XYXY ") is BoxFormat.XYXY


def test_empty() -> None:
    d = Detections.from_rows([])
    assert len(d) == 0
    assert d.xyxy.shape == (0, 4)


def test_construction_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\)"):
        Detections(
            np.zeros((2, 3)),
            np.zeros(2),
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
        )
    with pytest.raises(ValueError, match=r"score must have shape \(2,\)"):
        Detections(
            np.zeros((2, 4)),
            np.zeros(3),
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
        )


def test_take_keeps_origin_rows() -> None:
    d = Detections.from_rows([[1, 1, 2, 2, 0.5, 0], [5, 5, 2, 2, 0.6, 1], [9, 9, 2, 2, 0.7, 2]])
    sub = d.take(np.array([2, 0]))
    assert sub.index.tolist() == [2, 0]
    assert sub.class_id.tolist() == [2, 0]


def test_from_supervision_duck_type() -> None:
    sv = SimpleNamespace(
        xyxy=np.array([[0.0, 0, 10, 10]]),
        confidence=np.array([0.8]),
        class_id=np.array([3]),
        tracker_id=None,
    )
    d = Detections.from_supervision(sv)
    assert d.class_id.tolist() == [3]
    assert d.score.tolist() == [0.8]
    assert d.track_id.tolist() == [-1]


def test_rows_output_for_json() -> None:
    d = Detections.from_rows([[1, 2, 3, 4, 0.5, 2]]).with_tracks(np.array([0]), np.array([9]))
    assert d.rows(BoxFormat.XYWH) == [[1.0, 2.0, 3.0, 4.0, 0.5, 2, 9]]
