"""FaceGallery: a face per track, output when first seen and when clearly better; bounded state."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from framebroker.core import Detections, Frame, Pipeline, ProcessContext, Session
from framebroker.detectors.blazeface import BlazeFace, FaceDetections
from framebroker.processors.bytetrack.processor import ByteTrackProcessor
from framebroker.processors.face_gallery import FaceGallery, face_quality

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"

Image = NDArray[np.uint8]
H, W = 480, 640
BACKGROUND = (90, 110, 100)
PERSON, FACELESS = 7, 9


def astronaut() -> Image:
    path = MEDIA / "astronaut.png"
    if not path.is_file():
        pytest.skip(f"sample image {path} is absent (see shared/data/media/README.md)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot decode {path}"
    return np.asarray(image, dtype=np.uint8)


def scene(width: int, *, x: int = 100, y: int = 20) -> tuple[Image, list[float]]:
    """The astronaut's head and shoulders ``width`` px wide at (x, y) on a plain background,
    and a person box around it twice as tall (the body below, as a detector would give)."""
    head = astronaut()[0:240, 100:350]
    s = width / head.shape[1]
    tile = cv2.resize(head, (width, round(head.shape[0] * s)), interpolation=cv2.INTER_AREA)
    image = np.full((H, W, 3), BACKGROUND, np.uint8)
    image[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return image, [x, y, x + width, min(H - 1, y + 2 * tile.shape[0])]


def frame(width: int, *, faceless: bool = True) -> Frame:
    """A frame with the growing face owned by track 7 and, if asked, an empty box of track 9."""
    image, box = scene(width)
    boxes, ids = [box], [PERSON]
    if faceless:
        boxes.append([450, 100, 560, 400])
        ids.append(FACELESS)
    dets = Detections.from_arrays(boxes, [0.9] * len(ids), [0] * len(ids), ids)
    return Frame.from_array(image, detections=dets)


WIDTHS = list(range(40, 260, 15))


def run(gallery: FaceGallery, widths: list[int]) -> list[dict[str, Any] | None]:
    ctx = ProcessContext("s")
    gallery.setup(ctx)
    return [gallery.process(frame(w), ctx) for w in widths]


class CountingBlazeFace(BlazeFace):
    """The real detector, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def detect(self, image_bgr: Image, *, score_thresh: float | None = None) -> FaceDetections:
        self.calls += 1
        return super().detect(image_bgr, score_thresh=score_thresh)


def test_first_face_is_output_then_only_clearly_better_ones() -> None:
    outs = run(FaceGallery(every=1), WIDTHS)
    items = [item for out in outs if out is not None for item in out["faces"]]
    assert items, "no face was output"
    assert {item["track_id"] for item in items} == {PERSON}
    assert [item["update"] for item in items] == [False] + [True] * (len(items) - 1)
    assert len(items) >= 3
    assert len(items) < len(WIDTHS)  # small improvements are not handed out
    for before, after in itertools.pairwise(items):
        assert after["quality"] >= 1.25 * before["quality"]
    assert outs[0] is None  # 40 px wide: the face is under min_face_px
    for item in items:
        assert set(item) == {"track_id", "jpeg", "quality", "score", "box", "update"}
        assert isinstance(item["jpeg"], bytes)
        assert item["jpeg"].startswith(b"\xff\xd8\xff")
        assert 0.0 < item["quality"] <= 1.0
        assert 0.5 <= item["score"] <= 1.0


def test_the_box_and_crop_are_the_face_with_its_margin() -> None:
    width = 200
    out = run(FaceGallery(every=1, margin=0.25), [width])[0]
    assert out is not None
    (item,) = out["faces"]
    # Where the face lies in the pasted picture: its box in the 512 px portrait, moved.
    s = width / 250
    expected = [100 + (174 - 100) * s, 20 + 70 * s, 100 + (280 - 100) * s, 20 + 175 * s]
    np.testing.assert_allclose(item["box"], expected, atol=10)
    x1, y1, x2, y2 = item["box"]
    crop = cv2.imdecode(np.frombuffer(item["jpeg"], np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None
    assert crop.shape[1] == pytest.approx(1.5 * (x2 - x1), abs=3)
    assert crop.shape[0] == pytest.approx(1.5 * (y2 - y1), abs=3)


def test_a_box_without_a_face_gives_nothing() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    dets = Detections.from_arrays([[100, 50, 260, 450]], [0.9], [0], [FACELESS])
    gallery = FaceGallery(every=1)
    ctx = ProcessContext("s")
    assert all(
        gallery.process(Frame.from_array(image, detections=dets), ctx) is None for _ in range(5)
    )
    assert gallery.end(ctx) == {"faces": {"tracks_with_faces": 0}}


def test_untracked_boxes_and_other_classes_are_ignored() -> None:
    counting = CountingBlazeFace()
    gallery = FaceGallery(every=1, detector=counting)
    image, box = scene(200)
    ctx = ProcessContext("s")
    for dets in (
        Detections.from_arrays([box], [0.9], [0], [-1]),  # no track owns it
        Detections.from_arrays([box], [0.9], [2], [PERSON]),  # a car, say
        None,
    ):
        assert gallery.process(Frame.from_array(image, detections=dets), ctx) is None
    assert counting.calls == 0
    assert gallery.tracked == 0
    everything = FaceGallery(every=1, classes=None, detector=counting)
    dets = Detections.from_arrays([box], [0.9], [2], [PERSON])
    assert everything.process(Frame.from_array(image, detections=dets), ctx) is not None


def test_a_vanished_track_is_forgotten() -> None:
    gallery = FaceGallery(every=1, max_missing=5)
    ctx = ProcessContext("s")
    assert gallery.process(frame(200), ctx) is not None
    assert gallery.tracked == 2
    empty = Frame.from_array(scene(200)[0], detections=Detections.empty())
    for _ in range(5):
        assert gallery.process(empty, ctx) is None
    assert gallery.tracked == 2  # missing for 5 frames: still within max_missing
    gallery.process(empty, ctx)
    assert gallery.tracked == 0
    # Seen again after being forgotten, it is a new face for the runtime to save.
    out = gallery.process(frame(200), ctx)
    assert out is not None
    assert out["faces"][0]["update"] is False
    assert gallery.tracks_with_faces == 2


def test_state_is_bounded_by_max_tracks() -> None:
    gallery = FaceGallery(every=1, max_tracks=3)
    ctx = ProcessContext("s")
    image = np.full((H, W, 3), BACKGROUND, np.uint8)
    for step in range(5):
        boxes = [[10 + 100 * i, 10, 90 + 100 * i, 300] for i in range(step + 1)]
        dets = Detections.from_arrays(boxes, [0.9] * len(boxes), None, list(range(step + 1)))
        gallery.process(Frame.from_array(image, detections=dets), ctx)
        assert gallery.tracked <= 3
    assert gallery.tracked == 3


def test_each_track_is_searched_every_n_frames() -> None:
    counting = CountingBlazeFace()
    gallery = FaceGallery(every=3, backoff=1, detector=counting)
    ctx = ProcessContext("s")
    image, box = scene(200)
    dets = Detections.from_arrays([box], [0.9], [0], [PERSON])
    calls = []
    for _ in range(7):
        gallery.process(Frame.from_array(image, detections=dets), ctx)
        calls.append(counting.calls)
    assert calls == [1, 1, 1, 2, 2, 2, 3]


def test_looks_that_find_nothing_better_come_less_often_until_one_does() -> None:
    counting = CountingBlazeFace()
    gallery = FaceGallery(every=2, backoff=4, detector=counting)
    ctx = ProcessContext("s")
    still, box = scene(120)
    dets = Detections.from_arrays([box], [0.9], [0], [PERSON])
    looks: list[int] = []
    outputs: list[int] = []
    for n in range(1, 31):
        # The same picture for 22 frames, then a much bigger face: a better one to find.
        image, big_box = scene(240) if n > 22 else (still, box)
        frame_dets = Detections.from_arrays([big_box], [0.9], [0], [PERSON]) if n > 22 else dets
        before = counting.calls
        out = gallery.process(Frame.from_array(image, detections=frame_dets), ctx)
        if counting.calls > before:
            looks.append(n)
        if out is not None:
            outputs.append(n)
    # Found at 1 (next look in 2); nothing better at 3 (wait 4), 7 (wait 8), then every 8:
    # 15, 23. At 23 the bigger face is found, so the wait is 2 again: 25, then 29 (4).
    assert looks == [1, 3, 7, 15, 23, 25, 29]
    assert outputs == [1, 23]


def test_at_most_max_per_frame_searches_a_frame_most_overdue_first() -> None:
    counting = CountingBlazeFace()
    gallery = FaceGallery(every=5, max_per_frame=4, backoff=1, detector=counting)
    ctx = ProcessContext("s")
    image = np.full((H, W, 3), BACKGROUND, np.uint8)
    boxes = [[10 + 100 * i, 10, 90 + 100 * i, 300] for i in range(6)]
    dets = Detections.from_arrays(boxes, [0.9] * 6, None, list(range(6)))
    calls = []
    for _ in range(6):
        before = counting.calls
        gallery.process(Frame.from_array(image, detections=dets), ctx)
        calls.append(counting.calls - before)
    assert calls == [4, 2, 0, 0, 0, 4]


def test_a_resumed_session_hands_out_the_same_faces_as_an_uninterrupted_one() -> None:
    straight = run(FaceGallery(every=1), WIDTHS)
    first = FaceGallery(every=1)
    got = run(first, WIDTHS[:7])
    saved = json.loads(json.dumps(first.snapshot()))
    second = FaceGallery(every=1)
    second.restore(saved)
    got += run(second, WIDTHS[7:])
    assert got == straight
    assert second.end(ProcessContext("s")) == first.end(ProcessContext("s"))


def test_a_restored_gallery_does_not_output_a_face_it_already_gave() -> None:
    first = FaceGallery(every=1)
    assert run(first, [200])[0] is not None
    second = FaceGallery(every=1)
    second.restore(json.loads(json.dumps(first.snapshot())))
    assert run(second, [200, 200]) == [None, None]
    assert second.tracks_with_faces == 1


def test_a_state_written_before_looks_backed_off_still_restores() -> None:
    gallery = FaceGallery(every=3)
    gallery.restore({"version": 1, "frame": 9, "tracks_with_faces": 1, "tracks": [[7, 0.5, 8]]})
    assert gallery.tracks_with_faces == 1
    assert gallery.snapshot() == {
        "version": 1,
        "frame": 9,
        "tracks_with_faces": 1,
        "tracks": [[7, 0.5, 8, 10, 3]],  # looked at on the next frame, then every 3
    }


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 2, "frame": 0, "tracks_with_faces": 0, "tracks": []},
        {"version": 1, "frame": -1, "tracks_with_faces": 0, "tracks": []},
        {"version": 1, "frame": 3, "tracks_with_faces": 0, "tracks": [[1, 0.5]]},
        {"version": 1, "frame": 3, "tracks_with_faces": 0, "tracks": [[1, 1.5, 2]]},
        {"version": 1, "frame": 3, "tracks_with_faces": 0, "tracks": [["1", 0.5, 2]]},
        {"version": 1, "frame": 3, "tracks_with_faces": 0, "tracks": [[1, 0.5, 2, 4]]},
        {"version": 1, "frame": 3, "tracks_with_faces": 0, "tracks": [[1, 0.5, 2, 4, 0]]},
        {"version": 1, "frame": 3, "tracks_with_faces": 0, "tracks": [[1, 0.5, 2, -4, 2]]},
    ],
)
def test_restore_refuses_a_state_it_did_not_write(state: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="expected a FaceGallery snapshot"):
        FaceGallery().restore(state)


def test_a_frame_without_pixels_gives_nothing() -> None:
    dets = Detections.from_arrays([[10, 10, 200, 400]], [0.9], [0], [PERSON])
    assert FaceGallery().process(Frame(detections=dets), ProcessContext("s")) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_face_px": 0}, "min_face_px must be an integer >= 1"),
        ({"score_thresh": 1.0}, "score_thresh must be a number in"),
        ({"every": 0}, "every must be an integer >= 1"),
        ({"backoff": 0}, "backoff must be an integer >= 1"),
        ({"margin": -0.1}, "margin must be a number in"),
        ({"jpeg_quality": 101}, "jpeg_quality must be an integer in 1..100"),
        ({"jpeg_quality": 9.5}, r"jpeg_quality must be an integer in 1\.\.100, got 9\.5"),
        ({"improve_ratio": 0.9}, "improve_ratio must be a number in"),
        ({"max_missing": -1}, "max_missing must be an integer >= 0"),
        ({"classes": "0"}, "classes must be a list"),
        ({"classes": [0, -1]}, "classes must hold class numbers >= 0"),
        ({"upper": 0}, "upper must be a number in"),
        ({"max_per_frame": 0}, "max_per_frame must be an integer >= 1"),
        ({"max_tracks": 0}, "max_tracks must be an integer >= 1"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaceGallery(**kwargs)


def test_quality_prefers_bigger_sharper_more_certain_faces() -> None:
    image = astronaut()
    face = image[70:175, 174:280]
    q = face_quality(face, 0.9)
    assert 0.0 < q <= 1.0
    assert face_quality(face, 0.6) < q
    small = np.asarray(cv2.resize(face, (40, 40), interpolation=cv2.INTER_AREA), np.uint8)
    assert face_quality(small, 0.9) < q / 2
    blurred = np.asarray(cv2.GaussianBlur(face, (0, 0), 3), np.uint8)
    assert face_quality(blurred, 0.9) < q / 2
    assert face_quality(face[:0], 0.9) == 0.0


def test_in_a_session_after_the_tracker() -> None:
    session = Session("s", Pipeline([ByteTrackProcessor(), FaceGallery(every=2)]))
    items = []
    for width in range(100, 220, 4):
        image, box = scene(width)
        dets = Detections.from_arrays([box], [0.9], [0])
        result = session.process(Frame.from_array(image, detections=dets))
        assert result.errors == []
        items += result.outputs.get("faces", [])
    assert items
    assert {item["track_id"] for item in items} == {1}
    assert items[0]["update"] is False
    summary = session.end()
    assert summary.results["faces"] == {"tracks_with_faces": 1}
    json.dumps(session.snapshot())


def test_warm_up_loads_the_model() -> None:
    FaceGallery.warm_up()
