from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from framebroker.core import Detections, Frame, ProcessContext
from framebroker.media import RawBGRImage, open_image
from framebroker.processors.annotate import CLASS_NAMES_META, Annotator

CTX = ProcessContext(session_id="s")
ASTRONAUT = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media" / "astronaut.png"
)


def decoded(out: dict[str, object] | None) -> np.ndarray:
    assert out is not None
    text = out["annotated_image"]
    assert isinstance(text, str)
    return np.asarray(simplejpeg.decode_jpeg(base64.b64decode(text), colorspace="BGR"))


def test_returns_a_jpeg_of_the_same_size_with_the_boxes() -> None:
    img = np.full((120, 160, 3), 90, np.uint8)
    frame = Frame.from_array(img, detections=Detections.from_arrays([[10, 10, 60, 80]], [0.9]))
    annotator = Annotator(quality=80)
    assert annotator.name == "annotate"
    assert annotator.needs_image
    out = decoded(annotator.process(frame, CTX))
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - 90).max() > 50  # the box is there
    assert (frame.image == 90).all()  # later processors still see the original pixels


def test_real_photo_read_only_source() -> None:
    if not ASTRONAUT.is_file():
        pytest.skip(f"shared sample image not found at {ASTRONAUT}")
    frame = Frame(
        source=open_image(ASTRONAUT.read_bytes(), max_pixels=10**6),
        detections=Detections.from_arrays([[150, 50, 350, 300]], [0.9], [0], [3]),
    )
    annotator = Annotator(class_names={"0": "person"})  # type: ignore[dict-item]
    out = decoded(annotator.process(frame, CTX))
    assert out.shape == (512, 512, 3)


def test_raw_frame_from_bytes_is_drawn_on_a_copy() -> None:
    data = bytes(64 * 48 * 3)
    frame = Frame(
        source=RawBGRImage(data, 64, 48), detections=Detections.from_arrays([[5, 5, 40, 40]], [0.9])
    )
    out = decoded(Annotator().process(frame, CTX))
    assert out.shape == (48, 64, 3)
    assert out.any()
    assert not any(data)


def test_frame_without_detections_is_encoded_as_is() -> None:
    img = np.full((40, 50, 3), 200, np.uint8)
    out = decoded(Annotator(quality=95).process(Frame.from_array(img), CTX))
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - 200).max() <= 2


def test_nothing_to_draw_on() -> None:
    assert Annotator().process(Frame(), CTX) is None


@pytest.mark.parametrize("quality", [0, 101, 2.5, True, "90"])
def test_quality_checked(quality: object) -> None:
    with pytest.raises(ValueError, match="quality"):
        Annotator(quality=quality)  # type: ignore[arg-type]


@pytest.mark.parametrize("names", [{"person": "x"}, {-1: "x"}])
def test_class_names_checked(names: dict[object, str]) -> None:
    with pytest.raises(ValueError, match="class_names"):
        Annotator(class_names=names)  # type: ignore[arg-type]


def test_counting_lines_and_counts_are_drawn() -> None:
    from framebroker.core import Pipeline
    from framebroker.processors.line_counter import LineCounter

    img = np.full((240, 320, 3), 90, np.uint8)
    frame = Frame.from_array(img, detections=Detections.from_arrays(np.zeros((0, 4)), []))
    frame.index = 0
    result = Pipeline([LineCounter(), Annotator(quality=95)]).run(frame, CTX)
    out = simplejpeg.decode_jpeg(
        base64.b64decode(result.outputs["annotated_image"]), colorspace="BGR"
    )
    # The default line crosses the middle; the counts banner sits at the top left.
    assert np.abs(out[120, 160].astype(int) - 90).max() > 60
    assert np.abs(out[5:20, 5:60].astype(int) - 90).max() > 60
    assert np.abs(out[200, 300].astype(int) - 90).max() < 12
    assert img.min() == img.max() == 90  # the frame itself is untouched


def label_ink(out: np.ndarray) -> int:
    """Pixels of the label band above a box at (60, 60): more text, more ink."""
    return int((np.abs(out[30:60, 55:160].astype(int) - 255).sum(axis=2) > 60).sum())


def test_boxes_are_labelled_with_the_detectors_names_unless_given_names() -> None:
    img = np.full((160, 200, 3), 255, np.uint8)
    dets = Detections.from_arrays([[60, 60, 120, 140]], [0.9], [0], [7])

    def drawn(annotator: Annotator, meta: dict[str, object]) -> int:
        frame = Frame.from_array(img, detections=dets)
        frame.meta.update(meta)
        return label_ink(decoded(annotator.process(frame, CTX)))

    numbers = drawn(Annotator(), {})
    coco = ("person", "bicycle")
    named = drawn(Annotator(), {CLASS_NAMES_META: coco})
    assert named > numbers * 1.5  # "#7 person" against "#7 0"
    annotator = Annotator()
    assert drawn(annotator, {CLASS_NAMES_META: coco}) == named
    assert annotator._names_from(coco) is annotator._names_from(coco)  # made once
    own = drawn(Annotator(class_names={0: "p"}), {CLASS_NAMES_META: coco})
    assert own < named  # the pipeline's own names win
