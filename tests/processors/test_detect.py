"""The ``detect`` processor: bundled NanoDet-g or a user's ONNX file, inside a pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framebroker.core import Frame, Pipeline
from framebroker.core.processor import ProcessContext
from framebroker.detectors.nanodet import NanoDet
from framebroker.errors import ProcessorLoadError
from framebroker.plugins import ProcessorRegistry
from framebroker.processors.annotate import CLASS_NAMES_META
from framebroker.processors.bytetrack.processor import ByteTrackProcessor
from framebroker.processors.detect import DEFAULT_SCORE_THRESH, PersonDetector

from ..detectors.synthetic import fixed_output_model, yolov8_output
from ..detectors.vtest_people import PEOPLE, VTEST, match, read_frames

CTX = ProcessContext("s")


def test_finds_the_people_in_a_vtest_frame() -> None:
    image = read_frames(VTEST, {300})[300]
    frame = Frame.from_array(image, index=300)
    out = PersonDetector().process(frame, CTX)
    assert out == {"detections": len(PEOPLE[300])}
    dets = frame.detections
    assert dets is not None
    assert (dets.class_id == 0).all()
    assert (dets.score >= DEFAULT_SCORE_THRESH).all()
    assert (dets.track_id == -1).all()
    found, stray = match(dets.xyxy, PEOPLE[300])
    assert (found, stray) == (len(PEOPLE[300]), [])


def test_tracks_people_across_frames_with_bytetrack() -> None:
    images = read_frames(VTEST, set(range(300, 320)))
    pipeline = Pipeline([PersonDetector(), ByteTrackProcessor()])
    last = None
    for index in sorted(images):
        result = pipeline.run(Frame.from_array(images[index], index=index), CTX)
        assert result.errors == []
        assert result.ran == ["detect", "bytetrack"]
        last = result.frame.detections
    assert last is not None
    assert len(last) >= 5  # six people walk through these two seconds
    assert (last.track_id >= 1).all()


def test_an_empty_frame_gives_empty_detections() -> None:
    frame = Frame.from_array(np.zeros((480, 640, 3), np.uint8))
    assert PersonDetector().process(frame, CTX) == {"detections": 0}
    assert frame.detections is not None
    assert len(frame.detections) == 0
    assert frame.meta[CLASS_NAMES_META][0] == "person"  # annotate draws names, not numbers


def test_a_user_onnx_file(tmp_path: Path) -> None:
    output = yolov8_output([(320, 320, 100, 200), (100, 100, 20, 20)], [[0.9, 0.0], [0.0, 0.8]])
    path = fixed_output_model(tmp_path / "mine.onnx", output)
    detector = PersonDetector(model=str(path), classes=[0, 1], score_thresh=0.35)
    frame = Frame.from_array(np.zeros((480, 640, 3), np.uint8))
    assert detector.process(frame, CTX) == {"detections": 2}
    assert frame.detections is not None
    assert frame.detections.class_id.tolist() == [0, 1]
    assert CLASS_NAMES_META not in frame.meta  # a file's classes have no names we know
    np.testing.assert_allclose(frame.detections.xyxy[0], [270, 140, 370, 340], atol=1e-4)


def test_a_single_class_id_and_a_smaller_input_are_accepted() -> None:
    detector = PersonDetector(classes=0, input_size=352)
    assert isinstance(detector.detector, NanoDet)
    assert detector.detector.classes.tolist() == [0]
    assert detector.detector.input_size == 352


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "/no/such/model.onnx"}, r"'/no/such/model\.onnx' is neither the bundled"),
        ({"model": "nanodet-m"}, r"'nanodet-m' is neither the bundled 'nanodet-g' nor an exis"),
        ({"model": ""}, "model must be 'nanodet-g' or an ONNX file path"),
        ({"format": "yolov5"}, "format must be one of auto, yolov8, yolox"),
        ({"format": "yolox"}, "format='yolox' applies to ONNX files"),
        ({"score_thresh": 0}, "score_thresh must be in"),
        ({"nms_iou": 1.5}, "nms_iou must be in"),
        ({"classes": []}, "classes must be a non-empty list"),
        ({"classes": ["person"]}, "classes must be a non-empty list of integer class ids"),
        ({"classes": [True]}, "integer class ids"),
        ({"classes": [80]}, r"COCO class ids in 0\.\.79"),
        ({"input_size": 400}, "input_size must be a multiple of 32, got 400"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PersonDetector(**kwargs)


def test_a_broken_model_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match=r"broken\.onnx"):
        PersonDetector(model=str(path))


def test_the_registry_reports_a_bad_path_as_a_load_error() -> None:
    registry = ProcessorRegistry()
    registry.register("detect", PersonDetector)
    with pytest.raises(ProcessorLoadError, match=r"cannot build processor 'detect'.*nope\.onnx"):
        registry.build({"name": "detect", "model": "nope.onnx"})


def test_warm_up_loads_and_runs_the_bundled_model() -> None:
    PersonDetector.warm_up()
    assert PersonDetector.needs_image
    assert PersonDetector.name == "detect"
