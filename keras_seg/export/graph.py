"""Graph pieces shared by the exports: pixels in, class map and probabilities out.

Everything here runs inside the exported graph, so a client sends raw RGB pixels (or
encoded images) and needs no preprocessing code: the model normalises and pads to its
stride itself; a model built for one fixed size gets its input resized here.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from keras_seg.fold import inference_model

#: Class id of pixels outside an image in a batch padded to its largest image.
PAD_CLASS = -1
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def num_classes_of(model: keras.Model) -> int:
    return int(model.output_shape[-1])


def channels_of(model: keras.Model) -> int:
    channels = model.input_shape[-1]
    if channels is None:
        raise ValueError(f"model {model.name!r} has an unknown channel count: {model.input_shape}")
    return int(channels)


def logits_fn(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """`float32 [B, h, w, C] pixels 0..255 -> float32 logits [B, h, w, num_classes]`.

    A model with a fixed input size sees its input bilinearly resized to that size and its
    logits resized back, so every export takes any image size. The graph runs
    `keras_seg.fold.inference_model(model, dtype="float32")`: BatchNorm folded into the
    convolutions, as the TFLite converter does by itself, so a SavedModel served on CPU skips
    the BatchNorm passes too; and every layer computing in float32, so a model trained in
    mixed precision (`precision: auto` is mixed_bfloat16 on CPUs with native bfloat16)
    exports with its float32 weights as they are: TFLite has no bfloat16 kernels, and a
    float32 SavedModel serves on any machine. The exports' agreement checks run this same
    function for the Keras side, so they compare float32 with float32.
    """
    fixed_h, fixed_w = model.input_shape[1:3]
    model = inference_model(model, dtype="float32")

    def run(images: tf.Tensor) -> tf.Tensor:
        if fixed_h is None and fixed_w is None:
            return tf.cast(model(images, training=False), tf.float32)
        size = tf.shape(images)[1:3]
        target = tf.stack([fixed_h or size[0], fixed_w or size[1]])
        logits = model(tf.image.resize(images, target, "bilinear"), training=False)
        return tf.image.resize(tf.cast(logits, tf.float32), size, "bilinear")

    return run


def outputs(logits: tf.Tensor) -> dict[str, tf.Tensor]:
    """`class_map` int32 `[..., h, w]` and `probabilities` float32 `[..., h, w, C]`."""
    return {
        "class_map": tf.argmax(logits, axis=-1, output_type=tf.int32),
        "probabilities": tf.nn.softmax(logits, axis=-1),
    }


def decode_image(data: tf.Tensor, channels: int, index: tf.Tensor) -> tf.Tensor:
    """Decode one JPEG or PNG string to uint8 `[h, w, channels]`.

    Anything else fails with an InvalidArgumentError that names the batch index, instead of
    `decode_image`'s bare "Unknown image file format" (or a GIF's 4-D surprise).
    """
    is_jpeg = tf.strings.substr(data, 0, len(_JPEG_MAGIC)) == _JPEG_MAGIC
    is_png = tf.strings.substr(data, 0, len(_PNG_MAGIC)) == _PNG_MAGIC
    message = tf.strings.format(
        "image_bytes[{}] is not a JPEG or PNG image ({} bytes; a JPEG starts with FF D8 FF, "
        "a PNG with 89 50 4E 47)",
        (index, tf.strings.length(data)),
    )
    check = tf.debugging.Assert(tf.logical_or(is_jpeg, is_png), [message])
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image
