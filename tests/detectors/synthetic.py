"""Tiny ONNX models that emit a fixed detector output, built with the ``onnx`` helper API.

The output does not depend on the pixels (it is ``constant + 0 * sum(input)``, so that the
input is still read), which lets a test say exactly which boxes the decoder must produce.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper


def fixed_output_model(
    path: Path,
    output: NDArray[np.float32],
    *,
    input_shape: tuple[int | str, ...] = (1, 3, 640, 640),
    output_name: str = "output0",
) -> Path:
    """Write a model whose one input is ``input_shape`` float and whose output is ``output``."""
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))
    result = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(output.shape))
    nodes = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["fixed", "nothing"], [output_name]),
    ]
    initializers = [
        numpy_helper.from_array(output.astype(np.float32), "fixed"),
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
    ]
    graph = helper.make_graph(nodes, "fixed", [image], [result], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def yolov8_output(
    boxes: list[tuple[float, float, float, float]],
    scores: list[list[float]],
    anchors: int = 64,
) -> NDArray[np.float32]:
    """``1 x (4 + C) x anchors``: the given cx, cy, w, h and class scores first, zeros after."""
    classes = len(scores[0])
    out = np.zeros((1, 4 + classes, anchors), np.float32)
    for k, (box, score) in enumerate(zip(boxes, scores, strict=True)):
        out[0, :4, k] = box
        out[0, 4:, k] = score
    return out


def yolox_output(
    rows: dict[int, tuple[float, ...]], anchors: int, classes: int
) -> NDArray[np.float32]:
    """``1 x anchors x (5 + C)``: the given rows at their anchor index, zeros elsewhere."""
    out = np.zeros((1, anchors, 5 + classes), np.float32)
    for index, row in rows.items():
        out[0, index] = row
    return out
