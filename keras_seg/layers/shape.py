"""Shape layers that let every model take any input size.

A network with total stride S needs H and W divisible by S. `PadToMultiple` pads the
bottom and right edges up to the next multiple and `CropToMatch` cuts the logits back to the
input size, so the output always matches the input. Both work with unknown (None) sizes
and lower to builtin TFLite ops (PAD, STRIDED_SLICE).
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_seg")
class PadToMultiple(keras.layers.Layer):
    """Zero-pad height and width (bottom/right) up to a multiple of `multiple`."""

    def __init__(self, multiple: int, **kwargs):
        super().__init__(**kwargs)
        if int(multiple) < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple!r}")
        self.multiple = int(multiple)

    def call(self, x):
        shape = tf.shape(x)
        m = self.multiple
        pad_h = (m - shape[1] % m) % m
        pad_w = (m - shape[2] % m) % m
        return tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        def up(d):
            return None if d is None else -(-d // self.multiple) * self.multiple

        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="keras_seg")
class CropToMatch(keras.layers.Layer):
    """Crop `x` (top-left anchored) to the height and width of `reference`: `[x, reference] -> x'`."""

    def call(self, inputs):
        x, reference = inputs
        shape = tf.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])


@keras.saving.register_keras_serializable(package="keras_seg")
class ResizeToMatch(keras.layers.Layer):
    """Bilinear resize of `x` to the height and width of `reference`: `[x, reference] -> x'`.

    `keras.layers.Resizing` needs a static target size; this one follows the reference's
    runtime shape, which dynamic-size models need.
    """

    def __init__(self, interpolation: str = "bilinear", align_corners: bool = False, **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}"
            )
        self.interpolation = interpolation
        self.align_corners = align_corners

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        # The raw ops expose align_corners (tf.image.resize does not) without the deprecation
        # warning of tf.compat.v1.image; both are TFLite builtins.
        resize = {
            "bilinear": tf.raw_ops.ResizeBilinear,
            "nearest": tf.raw_ops.ResizeNearestNeighbor,
        }[self.interpolation]
        out = resize(
            images=x,
            size=size,
            align_corners=self.align_corners,
            half_pixel_centers=not self.align_corners,
        )
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])

    def get_config(self):
        return {
            **super().get_config(),
            "interpolation": self.interpolation,
            "align_corners": self.align_corners,
        }
