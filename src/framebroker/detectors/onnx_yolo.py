"""A user's own ONNX detector, with YOLOv8-style or YOLOX outputs, run with onnxruntime.

The two layouts are told apart by the shape of the first output, learnt from one dry run on
a grey image when the detector is built (so a model that cannot run fails at once, naming
its file):

- **YOLOv8** (ultralytics export, also YOLOv9/v11): ``1 x (4 + C) x N``, more anchors than
  channels. Rows are centre x, centre y, width, height in input pixels, then C class
  probabilities. Input: RGB scaled to [0, 1], letterboxed to the centre, padded with 114.
- **YOLOX** (Megvii's ``export_onnx.py``): ``1 x N x (5 + C)``. Columns are the box, an
  objectness probability and C class probabilities; the score is their product. Exported
  with ``--decode_in_inference`` the box is centre/size in input pixels; by default it is the
  raw head output, decoded here on the stride 8, 16, 32 grids. Which of the two a model gives
  is read from the dry run: decoded centres reach across the image, raw offsets stay within
  a few cells. Input: BGR 0..255 unscaled, letterboxed to the top-left, padded with 114.

The input must be ``1 x 3 x H x W`` float; a dynamic H or W takes ``input_size``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .boxes import DetectorOutput, Image, empty_output, letterbox, select
from .runtime import InferenceRuntime, SharedModel, default_runtime

__all__ = ["FORMATS", "Format", "OnnxYolo", "yolox_grid"]

Format = Literal["auto", "yolov8", "yolox"]
FORMATS: tuple[Format, ...] = ("auto", "yolov8", "yolox")
YOLOX_STRIDES = (8, 16, 32)
PAD_VALUE = 114
# Raw YOLOX centres are offsets within a cell; decoded ones are pixels across the input.
# Anything past one coarsest cell is a pixel coordinate.
_DECODED_MIN_EXTENT = 32.0


@functools.lru_cache(maxsize=16)
def yolox_grid(height: int, width: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """YOLOX anchor cells (N, 2) as (x, y) grid indices and their strides (N,), head order."""
    cells = []
    strides = []
    for stride in YOLOX_STRIDES:
        rows, cols = height // stride, width // stride
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full(rows * cols, stride))
    return (
        np.concatenate(cells).astype(np.float32),
        np.concatenate(strides).astype(np.float32),
    )


def _cxcywh_to_xyxy(boxes: NDArray[np.float32]) -> NDArray[np.float64]:
    half = boxes[:, 2:4] / 2.0
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1).astype(np.float64)


class OnnxYolo:
    """Detections from a user's ONNX model file, YOLOv8-style or YOLOX.

    Raises ``ValueError`` naming ``path`` when the file is missing, cannot be loaded or run,
    or has an input or output this class does not understand, and for parameters out of
    range (``classes`` must exist in the model).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        format: Format = "auto",
        score_thresh: float = 0.35,
        nms_iou: float = 0.5,
        classes: tuple[int, ...] = (0,),
        max_detections: int = 100,
        input_size: int = 640,
        runtime: InferenceRuntime | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if not 0.0 < score_thresh <= 1.0:
            raise ValueError(f"score_thresh must be in (0, 1], got {score_thresh}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        if input_size < 32 or input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        file = Path(path).expanduser()
        if not file.is_file():
            raise ValueError(f"model file {str(path)!r} does not exist or is not a file")
        stat = file.stat()
        resolved = file.resolve()
        self.path = resolved
        # The key changes when the file is replaced, so a new model is loaded, not the old.
        key = f"file:{resolved}:{stat.st_size}:{stat.st_mtime_ns}"
        loader = runtime if runtime is not None else default_runtime()
        self.model: SharedModel = loader.load_model(key, resolved, name=str(path))
        self.height, self.width = self._input_size(input_size)

        grey = np.full((self.height, self.width, 3), PAD_VALUE, np.uint8)
        probe = self._run(grey, unit_rgb=format != "yolox")
        self.layout: Literal["yolov8", "yolox"] = self._layout(probe.shape, format)
        channels = probe.shape[1] if self.layout == "yolov8" else probe.shape[2]
        self.num_classes = channels - (4 if self.layout == "yolov8" else 5)
        self.yolox_decoded = False
        if self.layout == "yolox":
            self.yolox_decoded = float(np.abs(probe[0, :, :2]).max()) > _DECODED_MIN_EXTENT
            cells, _ = yolox_grid(self.height, self.width)
            if not self.yolox_decoded and len(cells) != probe.shape[1]:
                raise ValueError(
                    f"{path}: raw YOLOX output has {probe.shape[1]} anchors, but strides "
                    f"8, 16, 32 on a {self.width}x{self.height} input give {len(cells)}"
                )
        if not classes or any(not 0 <= c < self.num_classes for c in classes):
            raise ValueError(
                f"classes must be ids in 0..{self.num_classes - 1} for {path} "
                f"({self.num_classes} classes), got {classes}"
            )
        self.score_thresh = float(score_thresh)
        self.nms_iou = float(nms_iou)
        self.classes = np.asarray(sorted(set(classes)), dtype=np.int64)
        self.max_detections = int(max_detections)

    def _input_size(self, default: int) -> tuple[int, int]:
        shape = self.model.input_shape
        channels_ok = len(shape) == 4 and (shape[1] == 3 or not isinstance(shape[1], int))
        if not channels_ok:
            raise ValueError(f"{self.model.name}: expected an input 1x3xHxW, got {shape}")
        if self.model.input_type != "tensor(float)":
            raise ValueError(
                f"{self.model.name}: expected a float32 input, got {self.model.input_type}"
            )
        height, width = (d if isinstance(d, int) and d > 0 else default for d in shape[2:])
        return int(height), int(width)

    def _layout(self, shape: tuple[int, ...], wanted: Format) -> Literal["yolov8", "yolox"]:
        name = self.model.name
        expected = "1x(4+C)xN (YOLOv8) or 1xNx(5+C) (YOLOX)"
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"{name}: expected an output {expected}, got {list(shape)}")
        rows, cols = shape[1], shape[2]
        if wanted == "yolov8" or (wanted == "auto" and rows < cols):
            if rows < 5 or rows >= cols:
                raise ValueError(f"{name}: expected a YOLOv8 output 1x(4+C)xN, got {list(shape)}")
            return "yolov8"
        if wanted == "yolox" or (wanted == "auto" and rows > cols):
            if cols < 6 or cols >= rows:
                raise ValueError(f"{name}: expected a YOLOX output 1xNx(5+C), got {list(shape)}")
            return "yolox"
        raise ValueError(f"{name}: expected an output {expected}, got {list(shape)}")

    def _run(self, canvas: Image, *, unit_rgb: bool) -> NDArray[np.float32]:
        """The first output for a letterboxed BGR canvas, fed as YOLOv8 (``unit_rgb``: RGB
        in [0, 1]) or YOLOX (BGR 0..255) expects it."""
        if unit_rgb:
            tensor = canvas[:, :, ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
        else:
            tensor = canvas.astype(np.float32)
        feed = np.ascontiguousarray(tensor.transpose(2, 0, 1)[None])
        try:
            output = self.model.run(feed)[0]
        except TimeoutError:
            raise
        except Exception as exc:  # onnxruntime's own exception types
            raise ValueError(f"{self.model.name}: inference failed: {exc}") from exc
        return output.astype(np.float32, copy=False)

    def detect(self, image: Image) -> DetectorOutput:
        """Detections in ``image`` (BGR ``uint8``, H x W x 3), best score first."""
        centre = self.layout == "yolov8"
        canvas, placed = letterbox(
            image, self.height, self.width, pad_value=PAD_VALUE, centre=centre
        )
        output = self._run(canvas, unit_rgb=centre)[0]
        if self.layout == "yolov8":
            boxes = output[:4].T  # (N, 4) cx, cy, w, h
            class_scores = output[4:].T[:, self.classes]
        else:
            boxes = output[:, :4]
            class_scores = output[:, 5:][:, self.classes] * output[:, 4:5]
        anchor, column = np.nonzero(class_scores >= self.score_thresh)
        if anchor.size == 0:
            return empty_output()
        boxes = boxes[anchor]
        if self.layout == "yolox" and not self.yolox_decoded:
            cells, strides = yolox_grid(self.height, self.width)
            stride = strides[anchor, None]
            # Clipped so that a wild logit cannot overflow exp (warnings are errors in tests).
            size = np.exp(np.clip(boxes[:, 2:4], -20.0, 20.0)) * stride
            boxes = np.concatenate([(boxes[:, :2] + cells[anchor]) * stride, size], axis=1)
        return select(
            _cxcywh_to_xyxy(boxes),
            class_scores[anchor, column].astype(np.float64),
            self.classes[column],
            iou_threshold=self.nms_iou,
            max_detections=self.max_detections,
            frame=placed,
        )
