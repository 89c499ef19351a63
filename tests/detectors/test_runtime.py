"""Shared onnxruntime sessions: options, one session per model, bounded concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from framebroker.config import load_settings
from framebroker.detectors import runtime
from framebroker.detectors.nanodet import load_bundled
from framebroker.detectors.runtime import (
    MAX_CACHED_MODELS,
    InferenceRuntime,
    concurrent_runs,
    configure,
    intra_op_threads,
    load_model,
    session_options,
)
from framebroker.processors.detect import PersonDetector
from framebroker.server.app import build_registry

from .synthetic import fixed_output_model


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    runtime.clear_cache()
    yield
    configure(1)


def test_one_thread_per_run_and_a_run_per_core_by_default() -> None:
    assert intra_op_threads(1) == 1
    assert intra_op_threads(16) == 1
    assert concurrent_runs(2) == 2
    assert concurrent_runs(1) == 1


def test_configured_threads_per_run_share_out_the_cores(tmp_path: Path) -> None:
    path = fixed_output_model(tmp_path / "m.onnx", np.ones((1, 6, 8), np.float32))
    before = load_model("k", path)
    configure(2)
    assert intra_op_threads(1) == 1  # never more threads than cores
    assert intra_op_threads(16) == 2
    assert concurrent_runs(2) == 1
    assert concurrent_runs(16) == 8
    after = load_model("k", path)
    assert after is not before  # sessions made for the old thread count are dropped
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads_per_run must be an integer >= 1"):
            configure(bad)  # type: ignore[arg-type]


def test_session_options_never_spin() -> None:
    options = session_options(2)
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_one_session_per_model_key(tmp_path: Path) -> None:
    path = fixed_output_model(tmp_path / "m.onnx", np.ones((1, 6, 8), np.float32))
    first = load_model("k", path)
    assert load_model("k", path) is first
    assert load_model("other", path) is not first
    out = first.run(np.zeros((1, 3, 640, 640), np.float32))
    np.testing.assert_array_equal(out[0], np.ones((1, 6, 8)))


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    path = fixed_output_model(tmp_path / "m.onnx", np.ones((1, 6, 8), np.float32))
    first = load_model("k0", path)
    for i in range(1, MAX_CACHED_MODELS + 1):
        load_model(f"k{i}", path)
    assert load_model("k0", path) is not first  # evicted, loaded again


def test_a_bad_model_names_itself(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"bad\.onnx: onnxruntime cannot load this model"):
        load_model("bad", bad, name=str(bad))


def test_concurrent_runs_from_many_threads(tmp_path: Path) -> None:
    path = fixed_output_model(tmp_path / "m.onnx", np.arange(48, dtype=np.float32).reshape(1, 6, 8))
    model = load_model("k", path)
    feed = np.zeros((1, 3, 640, 640), np.float32)
    results: list[float] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(float(model.run(feed)[0].sum()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == [float(sum(range(48)))] * 20


def test_a_run_that_cannot_get_a_slot_times_out(tmp_path: Path) -> None:
    path = fixed_output_model(tmp_path / "m.onnx", np.ones((1, 6, 8), np.float32))
    model = load_model("k", path)
    slots = model._slots
    held = 0
    while slots.acquire(timeout=0):  # take every slot, as long runs elsewhere would
        held += 1
    assert held >= 1
    try:
        with pytest.raises(TimeoutError, match="no free inference slot"):
            model.run(np.zeros((1, 3, 640, 640), np.float32), timeout=0.05)
    finally:
        for _ in range(held):
            slots.release()


def test_each_runtime_has_its_own_models_and_threads(tmp_path: Path) -> None:
    path = fixed_output_model(tmp_path / "m.onnx", np.ones((1, 6, 8), np.float32))
    mine, theirs = InferenceRuntime(2), InferenceRuntime()
    assert (mine.intra_op_threads(16), theirs.intra_op_threads(16)) == (2, 1)
    assert mine.load_model("k", path) is not theirs.load_model("k", path)
    assert mine.load_model("k", path) is mine.load_model("k", path)
    assert intra_op_threads(16) == 1  # the library's default runtime was never touched


def test_a_server_gives_its_detectors_a_runtime_of_its_own(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, inference_threads=2)
    registry = build_registry(settings)
    detector = registry.build("detect")
    assert isinstance(detector, PersonDetector)
    assert detector.detector.model is not load_bundled()  # not the library's session
    assert intra_op_threads(16) == 1  # building the server configured no module state
