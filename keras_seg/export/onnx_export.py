"""ONNX export through tf2onnx (optional extra: `pip install keras-seg[onnx]`).

The ONNX graph has the same contract as the SavedModel's `serving_default`: `images` uint8
`[B, H, W, C]` (any size) -> `class_map` int32 `[B, H, W]` and `probabilities` float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_seg.export import graph
from keras_seg.export.metadata import ExportMetadata
from keras_seg.export.verify import default_check_images
from keras_seg.export.verify import publish_checked
from keras_seg.layers import keras_dilated_convolution

OUTPUTS = ("class_map", "probabilities")


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs {module!r}: pip install 'keras-seg[onnx]' (tf2onnx and onnxruntime)"
        ) from e


def onnx(
    model: keras.Model,
    path: str | Path,
    *,
    opset: int | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    palette: Any = None,
    metadata: ExportMetadata | None = None,
    check_images: Any = None,
    check_labels: Any = None,
    allow_mismatch: bool = False,
) -> Path:
    """Export `model` to ONNX, checked; `labels.txt` and `<stem>.json` are written beside it.

    Args:
        model: a keras_seg model.
        path: the `.onnx` file to write.
        opset: ONNX opset; tf2onnx's default when None.
        class_names, palette, metadata: as for `saved_model`.
        check_images, check_labels, allow_mismatch: as for `keras_seg.export.tflite`.

    Returns:
        The `.onnx` path.
    """
    tf2onnx = _require("tf2onnx")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX path must end with .onnx, got {str(path)!r}")
    try:  # tf2onnx 1.17 still uses np.object etc.; Keras ships the same patch for its export.
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
    except ImportError:
        pass
    run = graph.logits_fn(model)
    spec = tf.TensorSpec([None, None, None, graph.channels_of(model)], tf.uint8, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        out = graph.outputs(run(tf.cast(images, tf.float32)))
        # Named identities give the ONNX outputs readable names.
        return [tf.identity(out[name], name=name) for name in OUTPUTS]

    meta = metadata or ExportMetadata.create(
        graph.num_classes_of(model), class_names, palette, model_name=model.name
    )
    meta.extra = {**meta.extra, "format": "onnx", "outputs": list(OUTPUTS)}

    def write(target: Path) -> Path:
        with keras_dilated_convolution():  # see keras_seg.layers.convolution
            tf2onnx.convert.from_function(
                serve, input_signature=[spec], opset=opset, output_path=str(target)
            )
        meta.write(target.parent, json_name=f"{target.stem}.json")
        return target

    if check_images is None:
        check_images = default_check_images(channels=graph.channels_of(model))
    path, _ = publish_checked(
        model, path, write, "onnx", check_images, check_labels, allow_mismatch
    )
    return path


class OnnxModel:
    """An exported `.onnx` model run by onnxruntime on the CPU."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """`class_map` and `probabilities` for uint8 `[N, H, W, C]` images."""
        values = self.session.run(None, {self.input_name: np.asarray(images, np.uint8)})
        return dict(zip(OUTPUTS, values, strict=True))
