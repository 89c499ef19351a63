"""The bundled NanoDet-g: its provenance, its decoding, and people found on real video."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from framebroker.detectors import nanodet
from framebroker.detectors.nanodet import (
    COCO_CLASSES,
    NanoDet,
    anchor_grid,
    bundled_manifest,
    decode,
    load_bundled,
)

from .vtest_people import HIDDEN, PEOPLE, VTEST, VTEST_640, match, read_frames

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "convert_nanodet.py"
WEIGHTS = REPO / "src" / "framebroker" / "detectors" / "weights"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_nanodet", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return bundled_manifest()


@pytest.fixture(scope="module")
def frames() -> dict[int, np.ndarray]:
    return read_frames(VTEST, set(PEOPLE))


# --- provenance -----------------------------------------------------------------------------


def test_the_committed_model_is_the_one_the_manifest_describes(manifest: dict[str, Any]) -> None:
    data = (WEIGHTS / manifest["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    assert len(data) == manifest["size_bytes"]
    assert len(data) < 8 * 2**20  # float16 storage keeps it small


def test_the_manifest_records_what_the_script_uses(manifest: dict[str, Any]) -> None:
    script = load_script()
    source = manifest["source"]
    assert (source["package"], source["version"]) == (script.NPM_PACKAGE, script.NPM_VERSION)
    assert source["tarball"] == script.TARBALL_NAME
    assert source["tarball_sha256"] == script.TARBALL_SHA256
    assert source["npm_integrity"] == script.NPM_INTEGRITY
    assert source["files"] == script.INPUT_FILES
    pinned = dict(req.split("==") for req in script.CONVERT_REQUIREMENTS)
    assert {k: v for k, v in manifest["tools"].items() if k in pinned} == pinned
    assert manifest["tools"]["opset"] == script.OPSET
    assert manifest["model"] == script.MODEL_NAME == nanodet.BUNDLED_MODEL
    assert manifest["classes"] == list(script.COCO_CLASSES) == list(COCO_CLASSES)
    assert manifest["reg_max"] == script.REG_MAX == nanodet.REG_MAX
    assert manifest["outputs"]["anchors"]["strides"] == list(nanodet.STRIDES)
    # Everything else is what the script writes for these bytes (the input files' sums,
    # checked above, need the npm tarball, which is not here).
    rewritten = script.manifest_for(
        (WEIGHTS / manifest["file"]).read_bytes(),
        script.TARBALL_SHA256,
        dict.fromkeys(script.INPUT_FILES, b""),
    )
    assert manifest == rewritten | {"source": manifest["source"]}


def test_the_notice_names_both_licences() -> None:
    notice = (WEIGHTS / "NOTICE").read_text(encoding="utf-8")
    assert "Apache License" in notice
    assert "Version 2.0, January 2004" in notice
    assert "MIT License" in notice
    assert "Copyright (c) 2021 Vladimir Mandic" in notice
    assert "RangiLyu" in notice


def test_the_conversion_script_runs_without_tensorflow() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--check" in done.stdout


def test_the_model_takes_any_multiple_of_32() -> None:
    model = load_bundled()
    assert model.input_name == "image"
    assert model.input_type == "tensor(uint8)"
    assert model.output_names == ["scores", "distribution"]
    for height, width in ((320, 416), (416, 416), (256, 416), (416, 320)):
        scores, distribution = model.run(np.zeros((1, height, width, 3), np.uint8))
        anchors = len(anchor_grid(height, width)[0])
        assert scores.shape == (1, anchors, 80)
        assert distribution.shape == (1, anchors, 44)
        assert 0.0 <= scores.min() <= scores.max() <= 1.0


# --- decoding -------------------------------------------------------------------------------


def test_anchor_grid_order() -> None:
    centres, strides = anchor_grid(320, 416)
    assert len(centres) == 40 * 52 + 20 * 26 + 10 * 13
    np.testing.assert_array_equal(centres[:2], [[4, 4], [12, 4]])  # row-major, x first
    np.testing.assert_array_equal(centres[52], [4, 12])
    assert strides[0] == 8
    assert strides[-1] == 32
    np.testing.assert_array_equal(centres[-1], [400, 304])  # (12.5, 9.5) strides of 32


def test_decode_takes_the_expected_distance_per_side() -> None:
    logits = np.full((2, 4, 11), -50.0, np.float32)
    for side, bin_ in enumerate((2, 3, 4, 5)):
        logits[0, side, bin_] = 50.0  # certain: exactly that many strides
    logits[1, :, 1:3] = 0.0  # half on 1, half on 2: 1.5 strides each side
    boxes = decode(
        logits.reshape(2, 44),
        np.array([[100.0, 200.0], [50.0, 50.0]], np.float32),
        np.array([8.0, 16.0], np.float32),
    )
    np.testing.assert_allclose(boxes[0], [100 - 16, 200 - 24, 100 + 32, 200 + 40], atol=1e-3)
    np.testing.assert_allclose(boxes[1], [26, 26, 74, 74], atol=1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"score_thresh": 0.0},
        {"score_thresh": 1.5},
        {"nms_iou": 0.0},
        {"classes": ()},
        {"classes": (80,)},
        {"max_detections": 0},
        {"input_size": 400},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        NanoDet(**kwargs)


def test_a_blank_frame_has_no_people() -> None:
    out = NanoDet().detect(np.full((480, 640, 3), 128, np.uint8))
    assert len(out.score) == 0
    assert out.xyxy.shape == (0, 4)


# --- real video -----------------------------------------------------------------------------


@pytest.mark.parametrize("index", sorted(PEOPLE))
def test_people_in_vtest(frames: dict[int, np.ndarray], index: int) -> None:
    image = frames[index]
    out = NanoDet(score_thresh=0.5).detect(image)
    height, width = image.shape[:2]
    assert (out.xyxy[:, 0] >= 0).all()
    assert (out.xyxy[:, 1] >= 0).all()
    assert (out.xyxy[:, 2] <= width).all()
    assert (out.xyxy[:, 3] <= height).all()
    assert (out.xyxy[:, 2:] > out.xyxy[:, :2]).all()
    assert (out.class_id == 0).all()
    assert (np.diff(out.score) <= 0).all()
    found, stray = match(out.xyxy, PEOPLE[index])
    people = len(PEOPLE[index])
    assert found >= people - HIDDEN.get(index, 0), f"frame {index}: {found} of {people} people"
    assert stray == [], f"frame {index}: boxes near no person: {out.xyxy[stray].tolist()}"


def test_people_in_the_640x480_h264_copy() -> None:
    # The same footage scaled to 640x480 and re-encoded: the size the server sees most.
    frames = read_frames(VTEST_640, {200, 600})
    detector = NanoDet(score_thresh=0.5)
    for index, image in frames.items():
        assert image.shape == (480, 640, 3)
        out = detector.detect(image)
        scaled = [tuple(round(v * 640 / 768) for v in box) for box in PEOPLE[index]]
        found, stray = match(out.xyxy, scaled)  # type: ignore[arg-type]
        assert found >= len(scaled) - 1, f"frame {index}: {found} of {len(scaled)} people"
        assert stray == [], f"frame {index}: boxes near no person: {out.xyxy[stray].tolist()}"


def test_a_lower_threshold_finds_a_half_hidden_person(frames: dict[int, np.ndarray]) -> None:
    # Frame 700's man behind the sign scores below the default threshold but above 0.4.
    out = NanoDet(score_thresh=0.4).detect(frames[700])
    found, stray = match(out.xyxy, PEOPLE[700])
    assert found == len(PEOPLE[700])
    assert stray == []


def test_other_coco_classes_can_be_asked_for(frames: dict[int, np.ndarray]) -> None:
    # The van and the cars parked along the building at the back of the courtyard.
    out = NanoDet(score_thresh=0.3, classes=(2, 7)).detect(frames[200])
    assert len(out.score) >= 1
    assert set(out.class_id.tolist()) <= {2, 7}
    assert (out.xyxy[:, 3] < 120).all()
