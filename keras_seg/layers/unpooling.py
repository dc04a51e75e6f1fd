"""SegNet's max-unpooling with the encoder's pooling indices, in builtin TFLite operators.

SegNet (Badrinarayanan et al. 2017) remembers where each 2x2 max-pool took its maximum and
the decoder puts each value back at that position, zeros elsewhere. The usual TensorFlow
route, `tf.nn.max_pool_with_argmax` + scatter, needs Flex (SELECT_TF_OPS) in TFLite, so
`MaxUnpooling2D` recomputes the positions from the encoder's pre-pool activation instead:

1. `SPACE_TO_DEPTH` + `RESHAPE` lay each 2x2 window's four values (row-major: top-left,
   top-right, bottom-left, bottom-right) along one axis, and `ARG_MAX` picks one position
   per window: the first maximum, as `max_pool_with_argmax` does (TF's CPU kernel and
   TFLite's both keep the first of equal values), so ties never mark two positions;
2. each position keeps the decoder features (at the pooled size) where it is the argmax
   (`EQUAL` on the int32 index, `SELECT_V2`) and 0 elsewhere;
3. `DEPTH_TO_SPACE` interleaves the four back to the pre-pool size.

This equals `upsample_nearest(features) * first_argmax_mask`, and it survives full-integer
(int8) quantization exactly: `ARG_MAX` compares the raw int8 values of one tensor (the very
values the quantized max-pool compares), the index and masks are integers and booleans, and
`SELECT_V2` passes the int8 features through with their scale unchanged. Two earlier
formulations did not: (a) `EQUAL(window, MAXIMUM(...))` with the masks as 0/1 floats: int8
gave the masks calibrated scales, and a kept value 1 came out as round(1/s)*s (1.35 once,
0 when s > 2); (b) pairwise `GREATER_EQUAL` between the positions: TFLite's quantized
comparisons are wrong when the input scale exceeds 1 (activations over about 255), where
`GREATER_EQUAL` is always true and `EQUAL` can be too, so every window's top-left position
won. Every step is a builtin TFLite op. The index carries no gradient (as pooling indices
carry none); the features get the gradient at the argmax positions. The pre-pool
activation must have even height and width (SegNet pads its input to a multiple of 32).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def first_argmax_index(pre_pool: tf.Tensor) -> tf.Tensor:
    """`(B, H/2, W/2, C)` int32: the row-major position (0..3) of each 2x2 window's first max."""
    shape = tf.shape(pre_pool)
    windows = tf.reshape(
        tf.nn.space_to_depth(pre_pool, 2), [shape[0], shape[1] // 2, shape[2] // 2, 4, -1]
    )
    return tf.argmax(windows, axis=3, output_type=tf.int32)


@keras.saving.register_keras_serializable(package="keras_seg")
class MaxUnpooling2D(keras.layers.Layer):
    """2x2 max-unpooling: `[features, pre_pool] -> features placed at pre_pool's argmaxes`.

    `features` is `(B, H/2, W/2, C)` (the decoder tensor at the pooled resolution) and
    `pre_pool` is `(B, H, W, C)`, the encoder activation that went into the 2x2/stride-2
    max-pool. The output is `(B, H, W, C)`: `features[b, i, j, c]` at the position of the
    first maximum of window `(i, j)` of `pre_pool[..., c]`, zeros elsewhere.

    Example:
        >>> up = MaxUnpooling2D(name="upsample5")([decoder_features, block5_conv3])
    """

    def build(self, input_shapes):
        features, pre_pool = input_shapes
        if features[-1] is not None and pre_pool[-1] is not None and features[-1] != pre_pool[-1]:
            raise ValueError(
                f"{self.name}: features and pre_pool need the same channels, got shapes "
                f"{tuple(features)} and {tuple(pre_pool)}"
            )
        super().build(input_shapes)

    def call(self, inputs):
        features, pre_pool = inputs
        pre_pool = tf.stop_gradient(tf.cast(pre_pool, self.compute_dtype))
        features = tf.cast(features, self.compute_dtype)
        index = first_argmax_index(pre_pool)
        zero = tf.zeros((), features.dtype)
        kept = [tf.where(tf.equal(index, k), features, zero) for k in range(4)]
        return tf.nn.depth_to_space(tf.concat(kept, axis=-1), 2)

    def compute_output_shape(self, input_shapes):
        features, pre_pool = input_shapes
        return (features[0], pre_pool[1], pre_pool[2], features[3])
