"""The seed's mock models in examples/models: loaded by ``module:attr``, run in a pipeline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from framebroker import BaseModel, Frame, Pipeline, ProcessContext
from framebroker.errors import ProcessorLoadError
from framebroker.plugins import ProcessorRegistry

MODELS = Path(__file__).resolve().parents[2] / "examples" / "models"
ONE_FILE = "mock_model_1:MockModel1"
PACKAGE = "mock_model_2:MockModel2"


@pytest.fixture(autouse=True)
def models_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/models on the import path, as a user's ``PYTHONPATH`` would put it."""
    monkeypatch.syspath_prepend(str(MODELS))


def scene(k: int) -> NDArray[np.uint8]:
    """Frame ``k``: a grey wall getting brighter, a white square moving right from frame 3."""
    image = np.full((120, 160, 3), 40 + 10 * k, np.uint8)
    x = 20 + 8 * max(0, k - 3)
    image[40:80, x : x + 40] = 255
    return image


def video(count: int) -> Iterator[Frame]:
    for k in range(count):
        yield Frame.from_array(scene(k), index=k, meta={"timestamp": k / 30.0})


def fast(name: str, **params: Any) -> dict[str, Any]:
    """A spec that turns the deliberate slowness off, so the tests do not wait for it."""
    return {"name": name, "delay_s": 0.0, **params}


@pytest.mark.parametrize("path", [ONE_FILE, PACKAGE])
def test_both_layouts_load_by_module_and_attribute(path: str) -> None:
    registry = ProcessorRegistry()
    cls = registry.resolve(path)
    assert isinstance(cls, type)
    assert issubclass(cls, BaseModel)
    model = registry.build(fast(path))
    assert model.needs_image
    assert model.name == path.partition(":")[0]


def test_a_pipeline_of_both_merges_their_outputs_in_order() -> None:
    pipeline = ProcessorRegistry().pipeline([fast(ONE_FILE), fast(PACKAGE)])
    assert isinstance(pipeline, Pipeline)
    assert pipeline.names == ["mock_model_1", "mock_model_2"]
    ctx = ProcessContext("s")
    results = [pipeline.run(frame, ctx) for frame in video(8)]
    assert all(r.errors == [] for r in results)
    outputs = [r.outputs for r in results]
    # Nothing on early frames: the first model waits for 5, the second for a frame before.
    assert outputs[0] == {}
    assert [set(o) for o in outputs[1:4]] == [{"motion"}] * 3
    assert [set(o) for o in outputs[4:]] == [{"brightness", "motion"}] * 4
    # Brightness follows the wall; the square does not move until frame 3.
    assert outputs[4]["brightness"] < outputs[7]["brightness"]
    assert outputs[1]["motion"] < outputs[5]["motion"]
    merged, errors = pipeline.end(ctx)
    assert errors == []
    assert merged["brightness_frames"] == merged["motion_frames"] == 8
    assert 0.0 < merged["brightness_mean"] < 1.0
    assert merged["motion_max"] == max(o["motion"] for o in outputs[1:])


def test_end_of_a_session_without_frames() -> None:
    pipeline = ProcessorRegistry().pipeline([fast(ONE_FILE), fast(PACKAGE)])
    merged, errors = pipeline.end(ProcessContext("s"))
    assert errors == []
    assert merged == {
        "brightness_mean": None,
        "brightness_frames": 0,
        "motion_max": None,
        "motion_frames": 0,
    }


def test_they_are_slow_on_purpose() -> None:
    registry = ProcessorRegistry()
    one, package = registry.build(ONE_FILE), registry.build(PACKAGE)
    frame_interval = 1 / 30
    assert getattr(one, "delay_s", 0.0) > frame_interval
    assert getattr(package, "delay_s", 0.0) > getattr(one, "delay_s", 0.0)
    slowed = registry.build({"name": PACKAGE, "delay_s": 0.05})
    start = time.perf_counter()
    slowed.process(Frame.from_array(scene(0)), ProcessContext("s"))
    assert time.perf_counter() - start >= 0.05


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": ONE_FILE, "delay_s": -1}, "delay_s must be a number of seconds >= 0"),
        ({"name": ONE_FILE, "warmup_frames": 0}, "warmup_frames must be an integer >= 1"),
        ({"name": PACKAGE, "delay_s": "slow"}, "delay_s must be a number of seconds >= 0"),
        ({"name": PACKAGE, "window": 3}, "has no option 'window'; its options: "),
        ({"name": "mock_model_3:MockModel3"}, "cannot import module 'mock_model_3'"),
        ({"name": "mock_model_2:Nope"}, "has no attribute 'Nope'"),
    ],
)
def test_bad_specs_are_load_errors(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ProcessorLoadError, match=match):
        ProcessorRegistry().build(spec)


def test_a_request_may_not_name_them_by_path() -> None:
    with pytest.raises(ProcessorLoadError, match="may name only registered processors"):
        ProcessorRegistry().check_request([ONE_FILE])
