"""Conv2D whose dilated (atrous) convolution runs as one TensorFlow Conv2D op.

Keras 3 (3.15) convolves through `tf.nn.convolution`, which runs a dilated convolution
anywhere but on a TPU as `SpaceToBatchND -> Conv2D -> BatchToSpaceND`: the input is padded
to a multiple of the rate and folded into rate x rate smaller images, and the gradient keeps
the folded copy. TensorFlow's Conv2D op takes `dilations` itself (oneDNN on x86 CPUs, cuDNN on
GPUs, and the TFLite converter maps it to CONV_2D's dilation factors) with the same values and
gradients. Measured on the 2-core EPYC (float32, forward and both gradients, 3x3, 2048 -> 256
channels at 16x16, batch 4: DeepLabV3+ ResNet-50's ASPP at 256x256 input): rate 2 82 -> 69 ms,
rate 6 171 -> 57, rate 12 457 -> 110, rate 18 722 -> 80.

ONNX is the exception: ONNX Runtime refuses a dilated Conv with `auto_pad` SAME, which
tf2onnx makes of the op, but converts the space-to-batch form, so the ONNX export traces
inside `keras_dilated_convolution()`. (Explicit pads instead of SAME would suit ONNX but send
the gradient to TensorFlow's Eigen kernels, which refuse dilations on the CPU.)

Only Conv2D: TensorFlow's depthwise kernels with `dilations` give a wrong input gradient on
the CPU (checked with TF 2.21), so `DepthwiseConv2D` / `SeparableConv2D` keep Keras' path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

_KERAS_PATH = [False]


@contextlib.contextmanager
def keras_dilated_convolution() -> Iterator[None]:
    """Within it, `AtrousConv2D` traces Keras' space-to-batch form (for the ONNX export)."""
    before, _KERAS_PATH[0] = _KERAS_PATH[0], True
    try:
        yield
    finally:
        _KERAS_PATH[0] = before


@keras.saving.register_keras_serializable(package="keras_seg")
class AtrousConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (same arguments, weights and results) whose dilated convolution
    at stride 1 in channels_last runs TensorFlow's Conv2D op with its `dilations` attribute
    instead of space-to-batch. Anything else (no dilation, strides, channels_first, another
    backend) is Keras' code."""

    def convolution_op(self, inputs, kernel):
        native = (
            not _KERAS_PATH[0]
            and keras.backend.backend() == "tensorflow"
            and self.data_format == "channels_last"
            and max(self.dilation_rate) > 1
            and max(self.strides) == 1
            and self.groups == 1
        )
        if not native:
            return super().convolution_op(inputs, kernel)
        return tf.nn.conv2d(
            inputs,
            tf.cast(kernel, inputs.dtype),
            strides=1,
            padding=self.padding.upper(),
            dilations=list(self.dilation_rate),
        )


def conv2d_class(dilation_rate) -> type[keras.layers.Conv2D]:
    """`AtrousConv2D` for a dilated convolution, else `keras.layers.Conv2D`."""
    rates = dilation_rate if isinstance(dilation_rate, (list, tuple)) else [dilation_rate]
    return AtrousConv2D if max(rates) > 1 else keras.layers.Conv2D
