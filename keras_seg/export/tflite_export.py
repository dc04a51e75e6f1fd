"""TFLite (LiteRT) export: fp32, fp16, dynamic-range and full-integer int8, builtin ops only.

The `.tflite` file has one signature, `serving_default`: `images` `[1, H, W, C]` raw pixels
(uint8 by default; float32 0..255 or int8 = pixel - 128 on request) -> `class_map` int32
`[1, H, W]` and `probabilities` float32 `[1, H, W, num_classes]`. Normalisation is inside,
so an app passes the camera's RGB bytes as they are. TFLite needs a fixed input size.

Conversion follows the path Keras itself uses for Keras 3 models (`ExportArchive` ->
SavedModel -> `TFLiteConverter.from_saved_model`); `from_concrete_functions` leaves Keras 3
variables unfrozen (VAR_HANDLE ops and garbage outputs in TF 2.21).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_seg.config import QUANTIZATIONS as _NAMED
from keras_seg.console import native_stderr_captured
from keras_seg.export import graph
from keras_seg.export.metadata import ExportMetadata
from keras_seg.export.verify import default_check_images
from keras_seg.export.verify import publish_checked
from keras_seg.layers import depthwise_space_to_batch

#: None is float32; the others are `keras_seg.config.QUANTIZATIONS`.
QUANTIZATIONS = (None, *_NAMED)
INPUT_DTYPES = ("uint8", "float32", "int8")
DEFAULT_INPUT_SIZE = (512, 512)
MAX_CALIBRATION_SAMPLES = 200


def _check_options(quantize: str | None, input_dtype: str, representative_data: Any) -> None:
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}")
    if input_dtype == "int8" and quantize != "int8":
        raise ValueError(f"input_dtype='int8' needs quantize='int8', got quantize={quantize!r}")
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs representative_data: a few dozen typical images "
            "(array [N, H, W, C], list of arrays, or iterable/tf.data of images)"
        )


def resolve_input_size(model: keras.Model, input_size: Any = None) -> tuple[int, int]:
    """`input_size` as `(H, W)`, else the model's fixed size, else `DEFAULT_INPUT_SIZE`."""
    if input_size is None:
        fixed = model.input_shape[1:3]
        input_size = fixed if None not in fixed else DEFAULT_INPUT_SIZE
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be (height, width) > 0, got {input_size!r}")
    return size


def calibration_samples(
    data: Any, size: tuple[int, int], channels: int, limit: int = MAX_CALIBRATION_SAMPLES
) -> list[np.ndarray]:
    """Float32 `[1, H, W, C]` samples (pixels 0..255) resized to `size`, at most `limit`."""
    if callable(data):
        data = data()
    if isinstance(data, np.ndarray) and data.ndim == 3:
        data = data[None]
    samples: list[np.ndarray] = []
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            item = item[0]  # (images, labels) pairs from a tf.data pipeline
        batch = np.asarray(item, np.float32)
        batch = batch[None] if batch.ndim == 3 else batch
        if batch.ndim != 4 or batch.shape[-1] != channels:
            raise ValueError(
                f"representative images must be [H, W, {channels}] or [N, H, W, {channels}], "
                f"got shape {batch.shape}"
            )
        if batch.shape[1:3] != size:
            batch = tf.image.resize(batch, size, "bilinear").numpy()
        samples.extend(np.clip(b, 0, 255)[None] for b in batch)
        if len(samples) >= limit:
            break
    if not samples:
        raise ValueError("representative_data gave no images")
    return samples[:limit]


def _converter(saved_dir: str, quantize: str | None, samples, input_dtype: str):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        # Make the calibrated input range exactly 0..255, so a uint8 input has scale 1 and
        # zero point 0 (int8: zero point -128): the app feeds raw pixels.
        first = samples[0].copy()
        first[0, 0, 0], first[0, 0, -1] = 0.0, 255.0
        calibration = [first, *samples[1:]]
        converter.representative_dataset = lambda: ({"images": s} for s in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if input_dtype != "float32":
            converter.inference_input_type = tf.as_dtype(input_dtype)
    return converter


def convert(
    model: keras.Model,
    quantize: str | None = None,
    representative_data: Any = None,
    input_size: Any = None,
    input_dtype: str = "uint8",
) -> bytes:
    """Convert to a TFLite flatbuffer (see `tflite` for the arguments); returns its bytes."""
    _check_options(quantize, input_dtype, representative_data)
    height, width = resolve_input_size(model, input_size)
    channels = graph.channels_of(model)
    samples = None
    if quantize == "int8":
        samples = calibration_samples(representative_data, (height, width), channels)
    # int8 conversion quantises a float input itself; the others cast a uint8 input inside.
    graph_dtype = tf.float32 if input_dtype == "float32" or quantize == "int8" else tf.uint8
    run = graph.logits_fn(model)
    spec = tf.TensorSpec([1, height, width, channels], graph_dtype, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        return graph.outputs(run(tf.cast(images, tf.float32)))

    with depthwise_space_to_batch():  # see keras_seg.layers.convolution
        serve.get_concrete_function()
    with tempfile.TemporaryDirectory() as saved_dir:
        # No archive.track(model): add_endpoint tracks the variables the endpoint uses, and
        # tracking the model would walk (and trace) every layer, seconds per export.
        archive = keras.export.ExportArchive()
        archive.add_endpoint("serving_default", serve)
        archive.write_out(saved_dir, verbose=False)
        with native_stderr_captured():  # the converter logs its settings to descriptor 2
            content = _converter(saved_dir, quantize, samples, input_dtype).convert()
    non_builtin = non_builtin_ops(content)
    if non_builtin:
        raise RuntimeError(f"{model.name}: TFLite model needs non-builtin ops {non_builtin}")
    if quantize == "int8" and input_dtype != "float32":
        scale, zero = TFLiteModel(content).input["quantization"]
        expected = 0 if input_dtype == "uint8" else -128
        if abs(scale - 1.0) > 1e-6 or zero != expected:
            raise RuntimeError(
                f"int8 input quantization is scale={scale} zero_point={zero}, expected 1 and "
                f"{expected}: raw pixels would need rescaling in the app"
            )
    return content


def tflite(
    model: keras.Model,
    path: str | Path,
    quantize: str | None = None,
    representative_data: Any = None,
    *,
    input_size: Any = None,
    input_dtype: str = "uint8",
    class_names: list[str] | tuple[str, ...] | None = None,
    palette: Any = None,
    metadata: ExportMetadata | None = None,
    check_images: Any = None,
    check_labels: Any = None,
    allow_mismatch: bool = False,
) -> Path:
    """Export `model` to a `.tflite` file that uses builtin operators only, checked.

    The file is written only when its class maps agree with the Keras model's on at least
    `keras_seg.export.verify.THRESHOLDS[quantize or "fp32"]` of the pixels of
    `check_images` (default: the int8 calibration images, else generated shapes).

    Args:
        model: a keras_seg model.
        path: the `.tflite` file to write; `labels.txt` and `<stem>.json` go beside it.
        quantize: None (float32), "fp16" (float16 weights), "dynamic" (int8 weights,
            float activations) or "int8" (full integer, needs `representative_data`).
        representative_data: typical images for int8 calibration (pixels 0..255): an array
            `[N, H, W, C]`, a list of arrays, an iterable or `tf.data.Dataset` of images or
            `(images, labels)`, or a callable returning one; resized to `input_size`.
        input_size: fixed `(H, W)` (or an int); default the model's own fixed size, else
            512x512. The batch size is 1.
        input_dtype: "uint8" (raw pixels; default), "float32" (pixels 0..255) or, with
            int8, "int8" (pixel - 128).
        class_names, palette, metadata: written to `labels.txt` and `<stem>.json`.
        check_images: `[N, H, W, C]` pixels 0..255 to compare export and Keras model on.
        check_labels: `[N, H, W]` class ids of `check_images`, for the mIoU of both.
        allow_mismatch: keep an export below its threshold (with a warning).

    Returns:
        The `.tflite` path (its parity report is in `<stem>.json` under `extra.parity`).

    Raises:
        ExportMismatch: the export disagrees with the model; nothing is written.

    Example:
        >>> keras_seg.export.tflite(model, "unet_int8.tflite", "int8", x_val[:64])
    """
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"TFLite path must end with .tflite, got {str(path)!r}")
    content = convert(model, quantize, representative_data, input_size, input_dtype)
    meta = metadata or ExportMetadata.create(
        graph.num_classes_of(model), class_names, palette, model_name=model.name
    )
    runner = TFLiteModel(content)
    meta.extra = {
        **meta.extra,
        "format": "tflite",
        "quantize": quantize,
        "inputs": runner.input_details_text(),
        "outputs": runner.output_details_text(),
        "operators": op_names(content),
    }

    def write(target: Path) -> Path:
        target.write_bytes(content)
        meta.write(target.parent, json_name=f"{target.stem}.json")
        return target

    if check_images is None:
        if quantize == "int8":
            check_images = np.concatenate(
                calibration_samples(
                    representative_data, runner.input_size, graph.channels_of(model)
                )
            )
        else:
            check_images = default_check_images(runner.input_size, graph.channels_of(model))
    path, _ = publish_checked(
        model, path, write, quantize or "fp32", check_images, check_labels, allow_mismatch
    )
    return path


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # older ai-edge-litert wheels
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _op_code_names(root, schema) -> list[str]:
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        # The op code is the larger of the two fields (schema v3a kept the int8 one).
        value = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if value == schema.BuiltinOperator.CUSTOM:
            out.append(f"CUSTOM:{(code.CustomCode() or b'').decode()}")
        else:
            out.append(names.get(value, f"BUILTIN_{value}"))
    return out


def _root(model: bytes | str | Path, schema):
    content = model if isinstance(model, bytes) else Path(model).read_bytes()
    return schema.Model.GetRootAs(content, 0)


def op_names(model: bytes | str | Path) -> list[str]:
    """Sorted operator names in a TFLite file's op-code table, read from the flatbuffer
    (e.g. CONV_2D).

    Needs no interpreter, so it also reads files whose custom ops this runtime lacks, and
    names what the file holds, not what an interpreter's delegate (XNNPACK) made of it (its
    op list reads DELEGATE for the nodes it took). A custom operator (Flex ops included)
    reads `CUSTOM:<its code>`, e.g. `CUSTOM:FlexConv2D`.
    """
    schema = _schema()
    return sorted(set(_op_code_names(_root(model, schema), schema)))


def operators(model: bytes | str | Path) -> list[tuple[str, str]]:
    """`(operator name, type of its first input)` for each operator of the main subgraph.

    The input type tells where a quantized file computes in float: e.g. `("ADD", "FLOAT32")`
    between a DEQUANTIZE and a QUANTIZE.
    """
    schema = _schema()
    root = _root(model, schema)
    names = _op_code_names(root, schema)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = root.Subgraphs(0)
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        first = op.Inputs(0) if op.InputsLength() else -1
        kind = types.get(graph.Tensors(first).Type(), "?") if first >= 0 else "-"
        out.append((names[op.OpcodeIndex()], kind))
    return out


def non_builtin_ops(model: bytes | str | Path) -> list[str]:
    """The custom operators (Flex included) a TFLite file needs; empty for builtin ops only."""
    return [op for op in op_names(model) if op.startswith("CUSTOM")]


def _interpreter(model: bytes | str | Path, num_threads: int | None = None):
    """A LiteRT interpreter with its default delegate (XNNPACK), or, where XNNPACK fails to
    prepare the model, without it (`.xnnpack_error` then says why; None otherwise).

    XNNPACK's kernels differ per CPU: on an AVX2-only EPYC it refused to prepare a briefly
    trained int8 SegNet ("failed to create XNNPACK runtime") that it prepares on AVX-512;
    LiteRT's builtin kernels run the same model, as they would on a phone without it.
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" to descriptor 2.
    with native_stderr_captured():
        interpreter = Interpreter(**source, num_threads=num_threads)
        try:
            interpreter.allocate_tensors()  # applies the delegate (and prints) now
            interpreter.xnnpack_error = None
            return interpreter
        except RuntimeError as error:
            if "XNNPACK" not in str(error):
                raise
            plain = Interpreter(
                **source,
                num_threads=num_threads,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
            plain.allocate_tensors()
            plain.xnnpack_error = str(error).strip()
            return plain


class TFLiteModel:
    """A `.tflite` segmentation model run by the LiteRT interpreter.

    Example:
        >>> out = TFLiteModel("unet.tflite", num_threads=2).predict(images_uint8)
        >>> out["class_map"].shape
    """

    def __init__(self, model: bytes | str | Path, num_threads: int | None = None):
        self.interpreter = _interpreter(model, num_threads)
        with native_stderr_captured():
            self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input = self.runner.get_input_details()["images"]
        self.input_size = tuple(int(d) for d in self.input["shape"][1:3])

    def _quantize(self, image: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        scale, zero = self.input["quantization"]
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            q = np.round(image.astype(np.float32) / scale) + zero
            return np.clip(q, info.min, info.max).astype(dtype)
        return image.astype(dtype)

    def predict(self, images: np.ndarray, outputs: Iterable[str] | None = None):
        """Run `images` (`[N, H, W, C]` pixels 0..255 at `input_size`) one at a time.

        Returns:
            dict of stacked outputs: `class_map` `[N, H, W]`, `probabilities` `[N, H, W, C]`.
        """
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:3]) != self.input_size:
            raise ValueError(
                f"images must be [N, {self.input_size[0]}, {self.input_size[1]}, C] "
                f"(the model's fixed input size), got {images.shape}"
            )
        results: dict[str, list[np.ndarray]] = {}
        for image in images:
            out = self.runner(images=self._quantize(image[None]))
            for name, value in out.items():
                if outputs is None or name in outputs:
                    results.setdefault(name, []).append(value[0])
        return {name: np.stack(values) for name, values in results.items()}

    def _details(self, details: dict[str, dict]) -> list[str]:
        lines = []
        for name, d in details.items():
            shape = "x".join(str(int(s)) for s in d["shape"])
            scale, zero = d["quantization"]
            quant = f" scale={scale:g} zero_point={zero}" if scale else ""
            lines.append(f"{name}: {np.dtype(d['dtype']).name} [{shape}]{quant}")
        return lines

    def input_details_text(self) -> list[str]:
        """One line per input: `name: dtype [shape] (quantization)`."""
        return self._details(self.runner.get_input_details())

    def output_details_text(self) -> list[str]:
        """One line per output: `name: dtype [shape] (quantization)`."""
        return self._details(self.runner.get_output_details())
