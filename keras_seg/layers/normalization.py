"""BatchNormalization that trains through TensorFlow's fused kernel.

Keras 3 (3.15) trains BatchNormalization on the TensorFlow backend with separate ops
(`moments`, then `batch_normalization`), and under a mixed policy it first casts the
activations to float32 and back. TensorFlow's `FusedBatchNormV3` does the statistics, the
normalisation and, in the backward pass, the three gradients in one kernel each, on
bfloat16/float16 activations with float32 statistics. Measured on the 2-core EPYC (issue #13,
train_on_batch, batch 4 at 256x256, AdamW): U-Net ResNet-34 in mixed_bfloat16 7.61 -> 9.77
img/s and peak RSS 1752 -> 1637 MiB, DeepLabV3+ ResNet-50 OS16 5.46 -> 7.35 img/s and
2293 -> 2049 MiB; in float32 the same speed (6.45 and 6.48 img/s).

Inference (and a frozen layer, `trainable=False`) runs the same kernel on the moving
statistics in every precision. In bfloat16/float16 that saves Keras' casts to float32 and
back; in float32 it lets Grappler's remapper fuse Conv2D -> FusedBatchNorm (-> ReLU) into one
convolution (oneDNN: the normalisation and the ReLU as post-ops of the convolution; Eigen: a
`_FusedConv2D`), where Keras' unfused `Mul` and `AddV2` each made a pass over the activation.
Measured on the 2-core AMX Xeon (2026-12-02, float32 `predict_on_batch` at 512, fresh
processes alternating, medians of 8 calls): U-Net ResNet-34 batch 1 0.289 -> 0.261 s on oneDNN
and 0.267 -> 0.251 s on Eigen, batch 4 0.79 -> 0.72 s, DeepLabV3+ ResNet-50 batch 1 0.335 ->
0.324 s. The remapper does not fuse the bfloat16 pair (oneDNN runs a separate batch_normalization
primitive). Exports fold BatchNorm into the convolution before them (`keras_seg.fold`); those
left over export as FusedBatchNormV3 in inference mode, which the TFLite converter lowers.
"""

from __future__ import annotations

import keras
import tensorflow as tf

_FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


@keras.saving.register_keras_serializable(package="keras_seg")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same arguments, weights and results) whose training
    step and inference on 4-D channels-last input run TensorFlow's fused kernel.

    The moving variance is updated with the unbiased batch variance (`n / (n - 1)` times the
    biased one that normalises the batch), as PyTorch's `BatchNorm2d` and Keras 2's fused
    BatchNormalization do; Keras 3's unfused layer uses the biased one. Every other case
    (masks, renorm, synchronized, other ranks or axes, other backends) is Keras' code.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (
            mask is None
            and not self.renorm
            and not self.synchronized
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and tf.as_dtype(inputs.dtype) in _FUSED_DTYPES
        )

    def call(self, inputs, training=None, mask=None):
        train = bool(training) and self.trainable
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        ones = tf.ones_like(self.moving_mean)
        scale = tf.convert_to_tensor(self.gamma) if self.scale else ones
        offset = tf.convert_to_tensor(self.beta) if self.center else tf.zeros_like(ones)
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=scale,
            offset=offset,
            mean=tf.constant([], tf.float32) if train else self.moving_mean,
            variance=tf.constant([], tf.float32) if train else self.moving_variance,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=train,
        )
        if not train:
            return tf.cast(outputs, self.compute_dtype)
        keep = self.momentum
        self.moving_mean.assign(self.moving_mean * keep + mean * (1.0 - keep))
        self.moving_variance.assign(self.moving_variance * keep + variance * (1.0 - keep))
        return tf.cast(outputs, self.compute_dtype)
