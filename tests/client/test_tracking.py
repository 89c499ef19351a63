"""The tracking API's requests and answers, built and read without a server."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from framebroker.client.errors import ProtocolError
from framebroker.client.tracking import (
    TrackedBox,
    box_rows,
    frame_body,
    parse_frame,
    session_body,
)


def test_class_names_go_to_the_annotate_step() -> None:
    assert session_body(None, None) == {}
    assert session_body(None, ["person", "bicycle"]) == {
        "pipeline": [
            "bytetrack",
            {"name": "annotate", "class_names": {"0": "person", "1": "bicycle"}},
        ]
    }
    custom = session_body([{"name": "bytetrack", "frame_rate": 25}, "annotate"], {2: "car"})
    assert custom["pipeline"][1] == {"name": "annotate", "class_names": {"2": "car"}}
    with pytest.raises(ValueError, match="needs an 'annotate' step"):
        session_body(["bytetrack"], {0: "person"})


def test_boxes_as_rows_arrays_or_supervision() -> None:
    assert box_rows([[1, 2, 3, 4, 0.5, 0]], None) == ([[1, 2, 3, 4, 0.5, 0]], "xywh")
    rows, fmt = box_rows(np.array([[1, 2, 3, 4, 0.5, 7]]), "xyxy")
    assert (rows, fmt) == ([[1.0, 2.0, 3.0, 4.0, 0.5, 7]], "xyxy")
    assert isinstance(rows[0][5], int)
    detections = sv.Detections(
        xyxy=np.array([[10.0, 20, 30, 40]]), confidence=np.array([0.7]), class_id=np.array([3])
    )
    assert box_rows(detections, "xywh") == ([[10.0, 20.0, 30.0, 40.0, 0.7, 3]], "xyxy")
    bare = sv.Detections(xyxy=np.array([[1.0, 2, 3, 4]]))
    assert box_rows(bare, None)[0] == [[1.0, 2.0, 3.0, 4.0, 1.0, 0]]
    assert box_rows(sv.Detections.empty(), None) == ([], "xyxy")
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        box_rows(np.zeros((2, 4)), None)
    with pytest.raises(ValueError, match="box_format"):
        box_rows([], "yolo")  # type: ignore[arg-type]


def test_an_image_is_sent_as_base64_jpeg() -> None:
    body, fmt = frame_body([], np.zeros((8, 8, 3), np.uint8), "cxcywh")
    assert fmt == "cxcywh"
    assert body["image"].startswith("/9j/")  # base64 of a JPEG's first bytes
    with pytest.raises(ValueError, match="JPEG or a PNG"):
        frame_body([], b"GIF89a", None)


def test_a_frame_answer_becomes_typed_boxes() -> None:
    result = parse_frame(
        {
            "session_id": "s",
            "frame_index": 3,
            "tracks": [
                {"track_id": 5, "row_index": 0, "box": [10, 20, 4, 6], "score": 0.9, "class_id": 1}
            ],
            "tracked_boxes": [[10, 20, 4, 6, 0.9, 1, 5]],
            "timings": {"bytetrack": 0.001},
        },
        "cxcywh",
    )
    (box,) = result.tracks
    assert box == TrackedBox(5, 0, (10.0, 20.0, 4.0, 6.0), 0.9, 1, "cxcywh")
    assert box.xyxy == (8.0, 17.0, 12.0, 23.0)
    assert result.annotated_image() is None
    detections = result.to_supervision()
    assert detections.xyxy.tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert detections.tracker_id.tolist() == [5]
    assert len(parse_frame({"tracks": []}, "xywh").to_supervision()) == 0
    with pytest.raises(ProtocolError):
        parse_frame({"tracked_boxes": []}, "xywh")
