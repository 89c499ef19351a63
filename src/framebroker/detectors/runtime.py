"""One onnxruntime session per model file per process, sized for a small machine.

Every pipeline that detects shares its model's session: loading NanoDet takes tens of
milliseconds and a few tens of megabytes, and a session per video stream would multiply both.
onnxruntime allows concurrent ``run`` calls on one session; :class:`SharedModel` lets as many
runs in at once as there are cores for them (cores // threads per run) and the others wait
their turn instead of thrashing the same cores.

Threads per run are one by default (:meth:`InferenceRuntime.configure` sets another number),
without spinning. On two cores, two single-threaded NanoDet runs side by side handle about 40% more
frames per second than one run on two threads (48 against 34, ``benchmarks/bench_people.py``
prints both): each operator of a small network is too short for two threads to share well,
and a two-thread run stalls whenever the other work of the server takes one of its cores. A
single frame waits longer that way (about 40 ms against 29), which is the price of
throughput; a server answering one request at a time can set two threads instead. Pipelines
fill the slots with frames of one stream through a parallel stage (see
:meth:`~framebroker.core.Pipeline.parallel`), or with several streams. Sessions are cached by
model and bounded; a session evicted from the cache lives on in the processors that still
hold it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

__all__ = [
    "MAX_CACHED_MODELS",
    "RUN_TIMEOUT_S",
    "InferenceRuntime",
    "SharedModel",
    "clear_cache",
    "concurrent_runs",
    "configure",
    "default_runtime",
    "intra_op_threads",
    "load_model",
    "session_options",
]

MAX_CACHED_MODELS = 8
"""Distinct model files kept loaded at once; the least recently used one is dropped first."""

RUN_TIMEOUT_S = 60.0
"""How long a run waits for its turn before raising ``TimeoutError``."""


def session_options(threads: int) -> ort.SessionOptions:
    """Options for every detector session: few threads, no spinning, sequential execution."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    return options


class SharedModel:
    """An onnxruntime session plus a bound on how many runs may use it at once.

    Safe to call from any thread. ``name`` is what error messages call the model (a path or
    the bundled model's name).
    """

    def __init__(self, name: str, session: ort.InferenceSession, max_concurrent: int) -> None:
        self.name = name
        self.session = session
        self._slots = threading.BoundedSemaphore(max(1, max_concurrent))
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ValueError(f"{name}: expected a model with one input, it has {names}")
        self.input_name: str = inputs[0].name
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.input_type: str = inputs[0].type
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        self.output_shapes: list[list[int | str | None]] = [
            list(o.shape) for o in session.get_outputs()
        ]

    def run(self, feed: NDArray[Any], timeout: float = RUN_TIMEOUT_S) -> list[NDArray[Any]]:
        """All outputs for one input array; raises ``TimeoutError`` if no slot frees in time."""
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"{self.name}: no free inference slot within {timeout:.0f} s")
        try:
            outputs = self.session.run(self.output_names, {self.input_name: feed})
        finally:
            self._slots.release()
        return [np.asarray(o) for o in outputs]

    def __repr__(self) -> str:
        return f"SharedModel({self.name!r})"


class InferenceRuntime:
    """The models one process has loaded, and how many threads each run of them gets.

    The server makes one per process (:class:`~framebroker.server.Services`) and hands it to
    its detectors; code that makes a detector without one (a notebook, a script) shares
    :func:`default_runtime`. Safe to use from any thread. Raises ``ValueError`` for
    ``threads_per_run`` below 1.
    """

    def __init__(self, threads_per_run: int = 1) -> None:
        self._threads_per_run = 1
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, SharedModel] = OrderedDict()
        self.configure(threads_per_run)

    def configure(self, threads_per_run: int) -> None:
        """Threads each inference run uses from now on (sessions loaded before are dropped
        from the cache). Raises ``ValueError`` below 1."""
        ok = isinstance(threads_per_run, int) and not isinstance(threads_per_run, bool)
        if not ok or threads_per_run < 1:
            raise ValueError(f"threads_per_run must be an integer >= 1, got {threads_per_run!r}")
        with self._lock:
            self._threads_per_run = threads_per_run
            self._cache.clear()

    def intra_op_threads(self, cpu_count: int | None = None) -> int:
        """Threads for one run: as configured (one by default), never more than the cores."""
        cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        return max(1, min(self._threads_per_run, cpus))

    def concurrent_runs(self, cpu_count: int | None = None) -> int:
        """How many runs of one model may go at once: a core for each of their threads."""
        cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        return max(1, cpus // self.intra_op_threads(cpus))

    def load_model(self, key: str, source: Path | bytes, *, name: str | None = None) -> SharedModel:
        """The session for ``key``, created from ``source`` (a path or model bytes).

        Raises ``ValueError`` naming the model when onnxruntime cannot load it. Loading
        happens under a lock, so two sessions starting together load a model once.
        """
        with self._lock:
            model = self._cache.get(key)
            if model is not None:
                self._cache.move_to_end(key)
                return model
            label = name or key
            try:
                session = ort.InferenceSession(
                    str(source) if isinstance(source, Path) else source,
                    sess_options=session_options(self.intra_op_threads()),
                    providers=["CPUExecutionProvider"],
                )
            except Exception as exc:  # onnxruntime raises its own, undocumented exceptions
                raise ValueError(f"{label}: onnxruntime cannot load this model: {exc}") from exc
            model = SharedModel(label, session, self.concurrent_runs())
            self._cache[key] = model
            while len(self._cache) > MAX_CACHED_MODELS:
                self._cache.popitem(last=False)
            return model

    def clear(self) -> None:
        """Forget every cached session (tests; a server reloading models)."""
        with self._lock:
            self._cache.clear()


_default: list[InferenceRuntime] = []
_default_lock = threading.Lock()


def default_runtime() -> InferenceRuntime:
    """The runtime of detectors made without one (library use; the server makes its own)."""
    with _default_lock:
        if not _default:
            _default.append(InferenceRuntime())
        return _default[0]


def configure(threads_per_run: int) -> None:
    """:meth:`InferenceRuntime.configure` of :func:`default_runtime`."""
    default_runtime().configure(threads_per_run)


def intra_op_threads(cpu_count: int | None = None) -> int:
    return default_runtime().intra_op_threads(cpu_count)


def concurrent_runs(cpu_count: int | None = None) -> int:
    return default_runtime().concurrent_runs(cpu_count)


def load_model(key: str, source: Path | bytes, *, name: str | None = None) -> SharedModel:
    """:meth:`InferenceRuntime.load_model` of :func:`default_runtime`."""
    return default_runtime().load_model(key, source, name=name)


def clear_cache() -> None:
    default_runtime().clear()
