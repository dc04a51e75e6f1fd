"""Adaptive average pooling to a fixed grid of bins, for any (None) input size, and PSPNet's
pyramid pooling module built on it.

PyTorch's `adaptive_avg_pool2d(x, bins)` averages, for output row i of `bins`, input rows
`floor(i * H / bins)` to `ceil((i + 1) * H / bins)` (exclusive), so neighbouring bins overlap
by a row when `bins` does not divide `H`; the same for columns. Keras has no such layer
(`AveragePooling2D` needs a static window and can't overlap unevenly), so this one slices
every bin with boundaries computed from the runtime shape and averages it. `bins` is a
small constant, so the loop over bins is unrolled at trace time: no Python control flow on
tensor values, and the graph lowers to builtin TFLite ops (STRIDED_SLICE, MEAN,
CONCATENATION) and to ONNX with dynamic height and width.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from keras_seg.layers.blocks import conv_bn_act
from keras_seg.layers.shape import ResizeToMatch

# PSPNet's bin counts (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017, Sec. 3.2).
PYRAMID_BINS = (1, 2, 3, 6)


def _bounds(size, bins: int, i: int):
    """PyTorch's adaptive-pooling window of bin `i` of `bins` over `size` (a scalar tensor)."""
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    return start, end


@keras.saving.register_keras_serializable(package="keras_seg")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average `(B, H, W, C)` over a `bins x bins` grid -> `(B, bins, bins, C)`, as
    `torch.nn.functional.adaptive_avg_pool2d`; H and W may be unknown and need not divide."""

    def __init__(self, bins: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        self.bins = bins

    def call(self, x):
        if self.bins == 1:
            return tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        shape = tf.shape(x)
        rows = []
        for i in range(self.bins):
            top, bottom = _bounds(shape[1], self.bins, i)
            band = x[:, top:bottom]
            cells = []
            for j in range(self.bins):
                left, right = _bounds(shape[2], self.bins, j)
                cells.append(tf.reduce_mean(band[:, :, left:right], axis=[1, 2], keepdims=True))
            rows.append(tf.concat(cells, axis=2))
        return tf.concat(rows, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}


def pyramid_pooling(x, filters: int, bins: tuple[int, ...] = PYRAMID_BINS, name: str = "ppm"):
    """PSPNet's pyramid pooling module: `x` concatenated with, per bin count b, adaptive
    average pooling to b x b, 1x1 conv + BN + ReLU to `filters`, bilinear resize back.

    Layer names: `{name}_pool{b}`, `{name}_b{b}_{conv,bn,relu}`, `{name}_b{b}_upsample`,
    `{name}_concat`.
    """
    branches = [x]
    for b in bins:
        y = AdaptiveAveragePooling2D(b, name=f"{name}_pool{b}")(x)
        y = conv_bn_act(y, filters, f"{name}_b{b}", kernel_size=1)
        branches.append(ResizeToMatch(name=f"{name}_b{b}_upsample")([y, x]))
    return layers.Concatenate(name=f"{name}_concat")(branches)
