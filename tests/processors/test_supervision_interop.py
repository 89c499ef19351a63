"""supervision both ways: its Detections through ByteTrack and LineCounter, and the tracking
client's answers as supervision Detections, counted the same."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from framebroker import ByteTrack, Detections, LineCounter
from framebroker.client.tracking import parse_frame

LINE = [{"name": "door", "start": [0, 100], "end": [400, 100], "in": "right"}]


def walker(step: int) -> sv.Detections:
    """Two people: one walking down across y=100, one standing still above it."""
    return sv.Detections(
        xyxy=np.array([[50, 20 + 15 * step, 90, 80 + 15 * step], [200, 10, 240, 60]], float),
        confidence=np.array([0.9, 0.8]),
        class_id=np.array([0, 0]),
    )


def test_supervision_detections_through_bytetrack_and_the_line_counter() -> None:
    tracker = ByteTrack()
    counter = LineCounter(lines=LINE, min_frames=2)
    crossings = []
    for step in range(8):
        tracked = tracker.track(walker(step))
        assert isinstance(tracked, sv.Detections)
        out = counter.count(tracked, timestamp=1_700_000_000 + step / 10)
        crossings += out["crossings"]
    assert out["lines"]["door"]["in"] + out["lines"]["door"]["out"] == 1
    (crossing,) = crossings
    assert crossing["line"] == "door"
    assert crossing["track_id"] in tracked.tracker_id.tolist()


def test_the_clients_tracked_boxes_count_as_supervision_detections() -> None:
    counter = LineCounter(lines=LINE, min_frames=1)
    for step in range(6):
        answer = {
            "tracks": [
                {
                    "track_id": 7,
                    "row_index": 0,
                    "box": [50, 20 + 15 * step, 40, 60],
                    "score": 0.9,
                    "class_id": 0,
                }
            ]
        }
        out = counter.count(parse_frame(answer, "xywh").to_supervision(), timestamp=1e9 + step)
    assert out["count_in"] + out["count_out"] == 1


def test_framebroker_detections_and_the_default_line() -> None:
    counter = LineCounter(min_frames=1)
    for step in range(6):
        dets = Detections.from_arrays([[50, 20 + 15 * step, 90, 80 + 15 * step]], [0.9], [0], [3])
        out = counter.count(dets, frame_size=(400, 200))
    assert counter.lines[0].name == "middle"
    assert out["count_in"] == 1


def test_untracked_or_foreign_detections_are_refused() -> None:
    counter = LineCounter(lines=LINE)
    with pytest.raises(ValueError, match="tracker_id"):
        counter.count(walker(0))
    with pytest.raises(TypeError, match="supervision Detections"):
        counter.count([[1, 2, 3, 4]])
    assert counter.count(sv.Detections.empty())["count_in"] == 0
