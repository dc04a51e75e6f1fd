"""SegNet's max-unpooling with the encoder's pooling indices, in builtin TFLite operators.

SegNet (Badrinarayanan et al. 2017) remembers where each 2x2 max-pool took its maximum and
the decoder puts each value back at that position, zeros elsewhere. The usual TensorFlow
route, `tf.nn.max_pool_with_argmax` + scatter, needs Flex (SELECT_TF_OPS) in TFLite, so
`MaxUnpooling2D` recomputes the positions from the encoder's pre-pool activation instead:

1. `SPACE_TO_DEPTH` splits the pre-pool activation into its four 2x2 window positions
   (row-major: top-left, top-right, bottom-left, bottom-right);
2. the window maximum is their elementwise `MAXIMUM` (the max-pool output), and position k is
   the argmax where it equals that maximum *and* no earlier position did. Ties therefore mark
   only the first maximum in row-major order, which is also what `max_pool_with_argmax`
   returns, so exactly one value per window survives;
3. the decoder features (at the pooled size) are multiplied by each of the four masks and
   `DEPTH_TO_SPACE` interleaves them back to the pre-pool size.

This equals `upsample_nearest(features) * first_argmax_mask`. Every step is a builtin TFLite
op (SPACE_TO_DEPTH, SPLIT, MAXIMUM, EQUAL, CAST, MUL, SUB, ADD, CONCATENATION, DEPTH_TO_SPACE).
The mask carries no gradient (as indices carry none); the features get the gradient at the
argmax positions. The pre-pool activation must have even height and width (SegNet pads its
input to a multiple of 32).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def first_argmax_masks(pre_pool: tf.Tensor) -> list[tf.Tensor]:
    """Four `(B, H/2, W/2, C)` 0/1 masks, one per 2x2 window position, one 1 per window."""
    windows = tf.split(tf.nn.space_to_depth(pre_pool, 2), 4, axis=-1)
    pooled = tf.maximum(tf.maximum(windows[0], windows[1]), tf.maximum(windows[2], windows[3]))
    masks = []
    taken = None  # 1 where an earlier window position already holds the maximum
    for window in windows:
        mask = tf.cast(tf.equal(window, pooled), pooled.dtype)
        if taken is not None:
            mask = mask * (1 - taken)
            taken = taken + mask
        else:
            taken = mask
        masks.append(mask)
    return masks


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
        masks = first_argmax_masks(pre_pool)
        return tf.nn.depth_to_space(tf.concat([features * m for m in masks], axis=-1), 2)

    def compute_output_shape(self, input_shapes):
        features, pre_pool = input_shapes
        return (features[0], pre_pool[1], pre_pool[2], features[3])
