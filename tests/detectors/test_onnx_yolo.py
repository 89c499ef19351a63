"""User ONNX detectors: YOLOv8-style and YOLOX outputs, decoded from tiny synthetic models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from framebroker.detectors.onnx_yolo import OnnxYolo, yolox_grid

from .synthetic import fixed_output_model, yolov8_output, yolox_output

FRAME = np.zeros((480, 640, 3), np.uint8)  # letterboxed into 640x640: scale 1


def yolov8_model(tmp_path: Path, **kwargs: object) -> Path:
    output = yolov8_output(
        boxes=[
            (320, 320, 100, 200),  # person, 0.9
            (325, 320, 100, 200),  # the same person again, weaker: NMS drops it
            (100, 400, 50, 50),  # class 1 (bicycle), 0.95
            (500, 300, 40, 80),  # person below the threshold
        ],
        scores=[[0.9, 0.1, 0.0], [0.8, 0.0, 0.0], [0.0, 0.95, 0.0], [0.2, 0.0, 0.0]],
    )
    return fixed_output_model(tmp_path / "v8.onnx", output, **kwargs)  # type: ignore[arg-type]


def test_yolov8_boxes_in_frame_pixels(tmp_path: Path) -> None:
    detector = OnnxYolo(yolov8_model(tmp_path), score_thresh=0.35)
    assert detector.layout == "yolov8"
    assert detector.num_classes == 3
    out = detector.detect(FRAME)
    # Centred letterbox: 80 rows of padding above the frame.
    np.testing.assert_allclose(out.xyxy, [[270, 140, 370, 340]], atol=1e-4)
    np.testing.assert_allclose(out.score, [0.9], rtol=1e-6)
    assert out.class_id.tolist() == [0]


def test_yolov8_classes_and_threshold(tmp_path: Path) -> None:
    detector = OnnxYolo(yolov8_model(tmp_path), score_thresh=0.15, classes=(0, 1))
    out = detector.detect(FRAME)
    assert out.class_id.tolist() == [1, 0, 0]
    np.testing.assert_allclose(out.score, [0.95, 0.9, 0.2], rtol=1e-6)
    np.testing.assert_allclose(out.xyxy[0], [75, 295, 125, 345], atol=1e-4)


def test_yolov8_scales_boxes_for_a_larger_frame(tmp_path: Path) -> None:
    out = OnnxYolo(yolov8_model(tmp_path)).detect(np.zeros((960, 1280, 3), np.uint8))
    np.testing.assert_allclose(out.xyxy, [[540, 280, 740, 680]], atol=1e-3)


def test_a_dynamic_input_takes_input_size(tmp_path: Path) -> None:
    path = yolov8_model(tmp_path, input_shape=(1, 3, "height", "width"))
    detector = OnnxYolo(path, input_size=640)
    assert (detector.height, detector.width) == (640, 640)
    np.testing.assert_allclose(detector.detect(FRAME).xyxy, [[270, 140, 370, 340]], atol=1e-4)


def test_yolox_decoded_output(tmp_path: Path) -> None:
    # cx, cy, w, h in input pixels, objectness, 2 classes; score = objectness * class.
    output = yolox_output(
        {0: (320, 200, 64, 128, 0.9, 0.8, 0.1), 3: (100, 100, 20, 20, 0.5, 0.5, 0.0)},
        anchors=30,
        classes=2,
    )
    detector = OnnxYolo(fixed_output_model(tmp_path / "yolox.onnx", output))
    assert detector.layout == "yolox"
    assert detector.yolox_decoded
    out = detector.detect(FRAME)
    # Top-left letterbox: no padding before the frame.
    np.testing.assert_allclose(out.xyxy, [[288, 136, 352, 264]], atol=1e-4)
    np.testing.assert_allclose(out.score, [0.72], rtol=1e-6)


def test_yolox_raw_output_is_decoded_on_the_grids(tmp_path: Path) -> None:
    cells, strides = yolox_grid(640, 640)
    assert len(cells) == 8400
    index = 6400 + 1600 + 5 * 20 + 10  # stride 32, column 10, row 5
    assert tuple(cells[index]) == (10, 5)
    assert strides[index] == 32
    output = yolox_output(
        {index: (0.5, 0.25, math.log(2), math.log(4), 0.9, 0.8, 0.0)}, anchors=8400, classes=2
    )
    detector = OnnxYolo(fixed_output_model(tmp_path / "raw.onnx", output), format="yolox")
    assert not detector.yolox_decoded
    out = detector.detect(FRAME)
    # centre ((10 + 0.5) * 32, (5 + 0.25) * 32) = (336, 168), size (2 * 32, 4 * 32)
    np.testing.assert_allclose(out.xyxy, [[304, 104, 368, 232]], atol=1e-3)
    np.testing.assert_allclose(out.score, [0.72], rtol=1e-6)


def test_raw_yolox_with_the_wrong_anchor_count_is_refused(tmp_path: Path) -> None:
    path = fixed_output_model(tmp_path / "odd.onnx", yolox_output({}, anchors=100, classes=2))
    with pytest.raises(ValueError, match="raw YOLOX output has 100 anchors"):
        OnnxYolo(path)


@pytest.mark.parametrize(
    ("shape", "fmt", "message"),
    [
        ((1, 6, 6), "auto", r"expected an output 1x\(4\+C\)xN \(YOLOv8\) or 1xNx\(5\+C\)"),
        ((1, 84), "auto", "expected an output"),
        ((2, 84, 100), "auto", "expected an output"),
        ((1, 84, 100), "yolox", r"expected a YOLOX output 1xNx\(5\+C\), got \[1, 84, 100\]"),
        ((1, 100, 85), "yolov8", r"expected a YOLOv8 output 1x\(4\+C\)xN, got \[1, 100, 85\]"),
        ((1, 4, 100), "auto", "expected a YOLOv8 output"),
    ],
)
def test_outputs_of_another_shape_are_refused(
    tmp_path: Path, shape: tuple[int, ...], fmt: str, message: str
) -> None:
    path = fixed_output_model(tmp_path / "other.onnx", np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=message) as info:
        OnnxYolo(path, format=fmt)  # type: ignore[arg-type]
    assert "other.onnx" in str(info.value)


def test_an_input_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    path = fixed_output_model(
        tmp_path / "grey.onnx", np.zeros((1, 84, 100), np.float32), input_shape=(1, 1, 64, 64)
    )
    with pytest.raises(ValueError, match=r"grey\.onnx: expected an input 1x3xHxW"):
        OnnxYolo(path)


def test_missing_and_broken_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.onnx"
    with pytest.raises(ValueError, match=r"nowhere\.onnx.*does not exist"):
        OnnxYolo(missing)
    with pytest.raises(ValueError, match="does not exist or is not a file"):
        OnnxYolo(tmp_path)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ValueError, match=r"broken\.onnx: onnxruntime cannot load this model"):
        OnnxYolo(broken)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": (3,)}, r"classes must be ids in 0\.\.2 .*\(3 classes\)"),
        ({"classes": ()}, "classes must be ids"),
        ({"format": "ssd"}, "format must be one of auto, yolov8, yolox"),
        ({"score_thresh": 0.0}, "score_thresh"),
        ({"nms_iou": 2.0}, "nms_iou"),
        ({"max_detections": 0}, "max_detections"),
        ({"input_size": 100}, "input_size"),
    ],
)
def test_bad_parameters_are_refused(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        OnnxYolo(yolov8_model(tmp_path), **kwargs)  # type: ignore[arg-type]


def test_a_replaced_file_is_loaded_again(tmp_path: Path) -> None:
    path = yolov8_model(tmp_path)
    first = OnnxYolo(path)
    fixed_output_model(path, yolov8_output([(320, 320, 10, 10)], [[0.99, 0.0]]))
    second = OnnxYolo(path)
    assert second.model is not first.model
    assert second.num_classes == 2
    assert OnnxYolo(path).model is second.model
