"""SavedModel export with TensorFlow Serving signatures, and the model server's directory layout.

Signatures (see `SIGNATURES`):

- `serving_default`: `images` uint8 `[B, H, W, C]` of any size -> `class_map` int32
  `[B, H, W]` and `probabilities` float32 `[B, H, W, num_classes]`.
- `serving_bytes`: `image_bytes` string `[B]` (encoded JPEG/PNG; TF Serving's REST API
  base64-decodes `{"b64": ...}` values for inputs whose name ends in `_bytes`) -> the same,
  plus `height`/`width` int32 `[B]`. Each image runs alone at its own size, so its result
  equals a one-image call; the batch is then padded to its largest height and width, with
  `class_map == -1` and zero probabilities outside each image (crop with height/width).
- `serving_bytes_class_map`: as `serving_bytes` without `probabilities`, for small REST
  responses (REST has no output filter; gRPC clients can use `output_filter`).
- `metadata`: no inputs -> `class_names` string `[C]` and `palette` uint8 `[C, 3]`.

Class names and palette also travel as files in `assets.extra/` (`labels.txt`,
`keras_seg.json`), the SavedModel folder for files that belong with a model but that the
graph does not read.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_seg.export import graph
from keras_seg.export.metadata import EXTRA_DIR
from keras_seg.export.metadata import ExportMetadata
from keras_seg.export.verify import default_check_images
from keras_seg.export.verify import publish_checked

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
SERVING_BYTES_CLASS_MAP = "serving_bytes_class_map"
METADATA = "metadata"
#: signature name -> (input name, output names)
SIGNATURES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    SERVING_DEFAULT: ("images", ("class_map", "probabilities")),
    SERVING_BYTES: ("image_bytes", ("class_map", "probabilities", "height", "width")),
    SERVING_BYTES_CLASS_MAP: ("image_bytes", ("class_map", "height", "width")),
    METADATA: (None, ("class_names", "palette")),
}


def _images_fn(model: keras.Model) -> tf.types.experimental.GenericFunction:
    run = graph.logits_fn(model)
    spec = tf.TensorSpec([None, None, None, graph.channels_of(model)], tf.uint8, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        return graph.outputs(run(tf.cast(images, tf.float32)))

    return serve


def _bytes_fn(model: keras.Model, with_probabilities: bool):
    run = graph.logits_fn(model)
    channels = graph.channels_of(model)
    num_classes = graph.num_classes_of(model)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        n = tf.shape(image_bytes)[0]
        tf.debugging.assert_positive(n, message="image_bytes is empty: send at least one image")
        # Images of different sizes cannot share one forward pass without changing each
        # other's borders, so each runs alone; TensorArrays collect the ragged results.
        maps = tf.TensorArray(tf.int32, n, infer_shape=False, element_shape=[None, None])
        probs = tf.TensorArray(
            tf.float32, n, infer_shape=False, element_shape=[None, None, num_classes]
        )
        heights = tf.TensorArray(tf.int32, n)
        widths = tf.TensorArray(tf.int32, n)
        for i in tf.range(n):
            image = graph.decode_image(image_bytes[i], channels, i)
            out = graph.outputs(run(tf.cast(image, tf.float32)[None]))
            maps = maps.write(i, out["class_map"][0])
            probs = probs.write(i, out["probabilities"][0])
            heights = heights.write(i, tf.shape(image)[0])
            widths = widths.write(i, tf.shape(image)[1])
        height, width = heights.stack(), widths.stack()
        max_h, max_w = tf.reduce_max(height), tf.reduce_max(width)
        padded_maps = tf.TensorArray(tf.int32, n, element_shape=[None, None])
        padded_probs = tf.TensorArray(tf.float32, n, element_shape=[None, None, num_classes])
        for i in tf.range(n):
            pad = [[0, max_h - height[i]], [0, max_w - width[i]]]
            padded_maps = padded_maps.write(
                i, tf.pad(maps.read(i), pad, constant_values=graph.PAD_CLASS)
            )
            if with_probabilities:
                padded_probs = padded_probs.write(i, tf.pad(probs.read(i), pad + [[0, 0]]))
        result = {"class_map": padded_maps.stack(), "height": height, "width": width}
        if with_probabilities:
            result["probabilities"] = padded_probs.stack()
        return result

    return serve


def _metadata_fn(meta: ExportMetadata):
    @tf.function(input_signature=[])
    def serve():
        return {
            "class_names": tf.constant(meta.class_names, tf.string),
            "palette": tf.constant(np.asarray(meta.palette, np.uint8)),
        }

    return serve


def _prepare_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not (path / "saved_model.pb").exists():
            raise FileExistsError(f"{path} exists and is not a SavedModel; refusing to write there")
        if not overwrite:
            raise FileExistsError(f"SavedModel {path} exists; pass overwrite=True to replace it")
        shutil.rmtree(path)


def saved_model(
    model: keras.Model,
    path: str | Path,
    class_names: list[str] | tuple[str, ...] | None = None,
    palette: Any = None,
    *,
    metadata: ExportMetadata | None = None,
    overwrite: bool = True,
    check_images: Any = None,
    check_labels: Any = None,
    allow_mismatch: bool = False,
) -> Path:
    """Export `model` as a SavedModel with the signatures described in this module, checked.

    The SavedModel is published at `path` only when its `serving_default` class maps agree
    with the Keras model's on at least `THRESHOLDS["saved_model"]` of the pixels of
    `check_images` (default: generated shapes).

    Args:
        model: a keras_seg model (float pixels 0..255 in, logits out).
        path: output directory; an existing SavedModel there is replaced when `overwrite`.
        class_names: one name per class; `class_0`, ... when omitted.
        palette: `[num_classes, 3]` RGB colours; the VOC colour map when omitted.
        metadata: full metadata instead of `class_names`/`palette`.
        overwrite: replace an existing SavedModel at `path`.
        check_images, check_labels, allow_mismatch: as for `keras_seg.export.tflite`.

    Returns:
        The SavedModel directory.

    Raises:
        ExportMismatch: the export disagrees with the model; nothing is written.

    Example:
        >>> keras_seg.export.saved_model(model, "export/unet", class_names=["bg", "cell"])
    """
    path = Path(path)
    meta = metadata or ExportMetadata.create(
        graph.num_classes_of(model), class_names, palette, model_name=model.name
    )
    if meta.num_classes != graph.num_classes_of(model):
        raise ValueError(
            f"metadata has {meta.num_classes} classes, model {model.name!r} has "
            f"{graph.num_classes_of(model)}"
        )
    _prepare_dir(path, overwrite)
    # No archive.track(model): add_endpoint tracks the variables the endpoints use, and
    # tracking the model would walk (and trace) every layer, several seconds per export.
    archive = keras.export.ExportArchive()
    endpoints = {
        SERVING_DEFAULT: _images_fn(model),
        SERVING_BYTES: _bytes_fn(model, with_probabilities=True),
        SERVING_BYTES_CLASS_MAP: _bytes_fn(model, with_probabilities=False),
        METADATA: _metadata_fn(meta),
    }
    for name, fn in endpoints.items():
        fn.get_concrete_function()  # trace once so ExportArchive keeps this exact signature
        archive.add_endpoint(name, fn)
    meta.extra = {
        **meta.extra,
        "format": "saved_model",
        "signatures": {k: {"input": i, "outputs": list(o)} for k, (i, o) in SIGNATURES.items()},
        "pad_class": graph.PAD_CLASS,
    }

    def write(target: Path) -> Path:
        archive.write_out(str(target), verbose=False)
        meta.write(target / EXTRA_DIR)
        return target

    if check_images is None:
        check_images = default_check_images(channels=graph.channels_of(model))
    path, _ = publish_checked(
        model, path, write, "saved_model", check_images, check_labels, allow_mismatch
    )
    return path


def tfserving(
    model: keras.Model,
    base_dir: str | Path,
    name: str | None = None,
    version: int = 1,
    class_names: list[str] | tuple[str, ...] | None = None,
    palette: Any = None,
    *,
    metadata: ExportMetadata | None = None,
    overwrite: bool = False,
    **check: Any,
) -> Path:
    """Write the SavedModel into `base_dir/name/version/`, the layout TF Serving scans.

    Start the server with `--model_base_path=<abs base_dir>/<name> --model_name=<name>`;
    it serves the highest version number it finds.

    `check` takes `check_images`, `check_labels` and `allow_mismatch` (see `saved_model`).

    Returns:
        The version directory.
    """
    name = name or model.name
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"model name must be a plain directory name, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    target = Path(base_dir) / name / str(version)
    return saved_model(
        model, target, class_names, palette, metadata=metadata, overwrite=overwrite, **check
    )
