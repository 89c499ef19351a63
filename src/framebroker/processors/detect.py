"""Person detection as a pipeline stage: pixels in, ``frame.detections`` out.

By default it runs the bundled NanoDet-g (COCO) and keeps people; ``model`` may instead name
a user's ONNX file with YOLOv8-style or YOLOX outputs. The detections it leaves are what a
tracker or counter later in the pipeline works on, exactly as if a client had sent boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..core.detections import Detections
from ..core.frame import Frame, Image
from ..core.processor import ProcessContext, Processor
from ..detectors.boxes import DetectorOutput
from ..detectors.nanodet import (
    BUNDLED_MODEL,
    COCO_CLASSES,
    DEFAULT_SCORE_THRESH,
    NanoDet,
    load_bundled,
)
from ..detectors.nanodet import INPUT_SIZE as NANODET_INPUT_SIZE
from ..detectors.onnx_yolo import FORMATS, Format, OnnxYolo
from ..detectors.runtime import InferenceRuntime
from .annotate import CLASS_NAMES_META

__all__ = ["DEFAULT_SCORE_THRESH", "PersonDetector"]


class _Detector(Protocol):
    def detect(self, image: Image) -> DetectorOutput: ...


def _format(value: str) -> Format:
    for known in FORMATS:
        if value == known:
            return known
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {value!r}")


def _class_ids(classes: Sequence[int] | int) -> tuple[int, ...]:
    values = [classes] if isinstance(classes, int) else list(classes)
    if not values or any(isinstance(c, bool) or not isinstance(c, int) for c in values):
        raise ValueError(f"classes must be a non-empty list of integer class ids, got {classes!r}")
    return tuple(values)


class PersonDetector(Processor):
    """Sets ``frame.detections`` to the objects found in the frame; returns their count.
    With the bundled model it also names the COCO classes in ``frame.meta["class_names"]``,
    so that ``annotate`` labels a box ``person`` rather than ``0``.

    Keyword arguments:

    - ``model``: ``"nanodet-g"`` (bundled, COCO classes) or the path of an ONNX file;
    - ``format``: for a file, ``"auto"`` (from the output's shape), ``"yolov8"`` or
      ``"yolox"``; see :mod:`framebroker.detectors.onnx_yolo`;
    - ``score_thresh``: minimum score, in (0, 1]; the default 0.5 is tuned for the bundled
      model (see :data:`~framebroker.detectors.nanodet.DEFAULT_SCORE_THRESH`), a file's own
      scores may call for another;
    - ``classes``: class ids kept, COCO order for the bundled model (0 is person);
    - ``nms_iou``: overlap above which the weaker of two boxes of one class is dropped;
    - ``max_detections``: at most this many boxes a frame, best first;
    - ``runtime``: the :class:`~framebroker.detectors.runtime.InferenceRuntime` that loads
      and runs the model (the server's, per process; default: the library's);
    - ``input_size``: a multiple of 32. For the bundled model the longer side of the network
      input (default 416, its training size; 352 is about a quarter faster and misses more
      small or half-hidden people); for a file with a dynamic input its square size (default
      640). A file with a fixed input size always gets that size.

    Raises ``ValueError`` at construction for a model that is neither the bundled name nor a
    loadable ONNX file (naming it), or for a parameter out of range.
    """

    name = "detect"
    reentrant = True  # the model session is shared and thread-safe; nothing is kept per frame
    config_only = frozenset({"model", "format", "runtime"})  # a request must not open files
    needs_image = True

    def __init__(
        self,
        model: str = BUNDLED_MODEL,
        format: str = "auto",
        score_thresh: float = DEFAULT_SCORE_THRESH,
        classes: Sequence[int] | int = (0,),
        nms_iou: float = 0.5,
        max_detections: int = 100,
        input_size: int | None = None,
        runtime: InferenceRuntime | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be {BUNDLED_MODEL!r} or an ONNX file path, got {model!r}")
        fmt = _format(format)
        ids = _class_ids(classes)
        self.model = model
        self.detector: _Detector
        if model == BUNDLED_MODEL:
            if fmt != "auto":
                raise ValueError(
                    f"format={fmt!r} applies to ONNX files; {BUNDLED_MODEL} has its own"
                )
            self.detector = NanoDet(
                load_bundled(runtime),
                score_thresh=score_thresh,
                nms_iou=nms_iou,
                classes=ids,
                max_detections=max_detections,
                input_size=NANODET_INPUT_SIZE if input_size is None else input_size,
            )
        else:
            if not Path(model).expanduser().is_file():
                raise ValueError(
                    f"model {model!r} is neither the bundled {BUNDLED_MODEL!r} "
                    "nor an existing ONNX file"
                )
            self.detector = OnnxYolo(
                model,
                format=fmt,
                score_thresh=score_thresh,
                nms_iou=nms_iou,
                classes=ids,
                max_detections=max_detections,
                input_size=640 if input_size is None else input_size,
                runtime=runtime,
            )

    @classmethod
    def warm_up(cls, runtime: InferenceRuntime | None = None) -> None:
        # Loads the bundled model and runs it once at the most common input size, so the first
        # session pays neither the load nor onnxruntime's first-run allocations.
        NanoDet(load_bundled(runtime)).detect(np.zeros((480, 640, 3), np.uint8))

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        found = self.detector.detect(frame.image)
        frame.detections = Detections.from_arrays(found.xyxy, found.score, found.class_id)
        if self.model == BUNDLED_MODEL:
            # Later steps (annotate) label boxes "person", not "0"; an ONNX file's classes
            # have no names we know.
            frame.meta[CLASS_NAMES_META] = COCO_CLASSES
        return {"detections": len(found.score)}
