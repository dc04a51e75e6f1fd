"""Dilated (atrous) convolutions that run as TensorFlow's own ops or keep less for the gradient.

Keras 3 (3.15) convolves through `tf.nn.convolution` / `tf.nn.depthwise_conv2d`, which run
a dilated convolution anywhere but on a TPU as `SpaceToBatchND -> conv -> BatchToSpaceND`:
the input is padded to a multiple of the rate and folded into rate x rate smaller images,
and the gradient keeps that folded copy. Two layers here do better:

`AtrousConv2D`: TensorFlow's Conv2D op takes `dilations` itself, with the same values and
gradients, where its kernels support them: oneDNN on x86 CPUs, cuDNN on GPUs, and the TFLite
converter maps it to CONV_2D's dilation factors. Measured on a 2-core AVX-512 EPYC (float32,
forward and both gradients, 3x3, 2048 -> 256 channels at 16x16, batch 4: DeepLabV3+
ResNet-50's ASPP at 256x256 input): rate 2 82 -> 69 ms, rate 6 171 -> 57, rate 12 457 -> 110,
rate 18 722 -> 80. TensorFlow's Eigen CPU kernels (what runs where oneDNN is off, as it is by
default on CPUs without AVX-512 VNNI/BF16 or AMX) compute the forward pass but refuse the
gradients of a dilated Conv2D, so there the layer keeps Keras' path
(`native_dilated_convolution()`).

`AtrousSeparableConv2D` / `AtrousDepthwiseConv2D`: TensorFlow's depthwise kernels with
`dilations` are no way out (Eigen refuses them; oneDNN's gradients are wrong: relative error
~1.3 in TF 2.21), so the depthwise step keeps the space-to-batch form, but when training it
keeps only its input for the gradient and recomputes the folded copy in the backward pass
(`recompute_in_backward`). In DeepLabV3+ ResNet-50's ASPP at 256x256, batch 4, the folded
copies it no longer keeps are 191 MiB (rate 18 folds a 16x16 map into 54x54 of padding).
And where a rate reaches past the map, the taps that read only padding are cropped from the
kernel (`visible_taps`): that rate-18 branch is then a 1x1 depthwise product, no fold at all.
Where the fold would still be mostly padding (rate 12 on that map: 48x48), the step is a sum
of one product per tap over the part of the map it reads (`shifted_taps`).

ONNX: ONNX Runtime refuses a dilated Conv with `auto_pad` SAME, which tf2onnx makes of the
op, but converts the space-to-batch form, so the ONNX export traces inside
`keras_dilated_convolution()`. (Explicit pads instead of SAME would suit ONNX but send the
gradient to TensorFlow's Eigen kernels, which refuse dilations on the CPU.)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from collections.abc import Iterator

import keras
import tensorflow as tf

from keras_seg.machine import gpu_available
from keras_seg.machine import onednn_enabled

_KERAS_PATH = [False]


def native_dilated_convolution() -> bool:
    """Whether this process's TensorFlow has Conv2D kernels with dilated gradients: oneDNN
    on the CPU or cuDNN on a GPU. Where not, Keras' path (right everywhere) is taken."""
    return onednn_enabled() or gpu_available()


def recompute_in_backward(fn: Callable[..., tf.Tensor]) -> Callable[..., tf.Tensor]:
    """`fn(*tensors)` whose gradient keeps only the input tensors and runs `fn` again.

    The recomputation waits for the incoming gradient (a control dependency), so it runs in
    the backward pass and Grappler cannot merge it with the forward one. `tf.recompute_grad`
    has no such dependency and handles variables instead of tensors; the callers pass their
    kernels as tensors.
    """

    @tf.custom_gradient
    def wrapped(*tensors):
        def grad(upstream):
            with tf.control_dependencies([upstream]):
                again = [tf.identity(t) for t in tensors]
            with tf.GradientTape() as tape:
                tape.watch(again)
                out = fn(*again)
            return tape.gradient(out, again, output_gradients=upstream)

        return fn(*tensors), grad

    return wrapped


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
    backend, no dilated kernels in this process) is Keras' code."""

    def convolution_op(self, inputs, kernel):
        native = (
            not _KERAS_PATH[0]
            and keras.backend.backend() == "tensorflow"
            and native_dilated_convolution()
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


def _depthwise_recomputed(layer, inputs, kernel, training):
    """The layer's depthwise step; when training a dilated one, through `recompute_in_backward`
    (after `visible_taps` crops the taps that read only padding; none left dilated: direct).

    None where that does not apply (Keras' own call then runs)."""
    if not (
        training
        and keras.backend.backend() == "tensorflow"
        and layer.data_format == "channels_last"
        and max(layer.dilation_rate) > 1
    ):
        return None

    kernel, rates = visible_taps(layer, inputs.shape, keras.ops.cast(kernel, inputs.dtype))

    def depthwise(x, k):
        return keras.ops.depthwise_conv(
            x,
            k,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=rates,
            data_format=layer.data_format,
        )

    if max(rates) == 1:  # no space-to-batch copy left to recompute
        return depthwise(inputs, kernel)
    step = depthwise
    if _fold_is_mostly_padding(layer, inputs.shape, kernel.shape, rates):
        step = functools.partial(shifted_taps, rates=rates)
    return recompute_in_backward(step)(inputs, kernel)


#: Above this ratio of the space-to-batch fold's padded area to the map's, `shifted_taps`.
#: `python tools/depthwise_fold_vs_shifted.py` (forward and both gradients of a 3x3 separable
#: step, 2048 -> 256 channels, batch 4; bench_results/depthwise_fold_vs_shifted.json): on the
#: AVX2 EPYC with Eigen kernels the shifted form used less memory from about 5x, but was
#: faster only at 9x (rate 12 on a 16x16 map: DeepLabV3+'s ASPP on a 256 crop).
SHIFTED_TAPS_ABOVE = 8.0


def _fold_is_mostly_padding(layer, input_shape, kernel_shape, rates) -> bool:
    """Whether space-to-batch would fold `input_shape`'s map into more than
    `SHIFTED_TAPS_ABOVE` times its area of padding ("same" padding, stride 1, an odd kernel,
    depth multiplier 1 and a static map size; otherwise False)."""
    sizes = input_shape[1:3]
    if (
        layer.padding != "same"
        or max(layer.strides) != 1
        or None in sizes
        or kernel_shape[3] != 1
        or any(k % 2 == 0 for k in kernel_shape[:2])
    ):
        return False
    padded = [
        -(-(size + (k - 1) * d) // d) * d  # "same" padding, rounded up to a multiple of d
        for size, k, d in zip(sizes, kernel_shape[:2], rates, strict=True)
    ]
    return padded[0] * padded[1] > SHIFTED_TAPS_ABOVE * sizes[0] * sizes[1]


def shifted_taps(x, kernel, rates):
    """A depthwise convolution ("same" padding, stride 1, odd kernel, depth multiplier 1) as
    the sum of one product per tap, each over the part of the map that tap reads: tap
    `(i, j)` at offset `(dy, dx)` adds `x[:, r + dy, c + dx] * kernel[i, j]` to output pixel
    `(r, c)` where that input pixel exists. No padded copy of the map is made, where
    space-to-batch would fold a 16x16 map at rate 12 into 48x48 (DeepLabV3+'s ASPP on a
    256 crop); TensorFlow's depthwise kernels with `dilations` are no way out (see the
    module docstring). Keras' values up to float rounding (the sums run in another order)."""
    kh, kw = kernel.shape[:2]
    height, width = x.shape[1:3]
    total = None
    for i in range(kh):
        dy = (i - kh // 2) * rates[0]
        for j in range(kw):
            dx = (j - kw // 2) * rates[1]
            if abs(dy) >= height or abs(dx) >= width:
                continue  # reads only padding
            seen = x[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0), :]
            term = seen * kernel[i, j, :, 0]
            rows, cols = (max(-dy, 0), max(dy, 0)), (max(-dx, 0), max(dx, 0))
            term = tf.pad(term, [(0, 0), rows, cols, (0, 0)])
            total = term if total is None else total + term
    return total


def visible_taps(layer, input_shape, kernel):
    """`(kernel, rates)`: the kernel cropped to the taps that can reach the input.

    With "same" padding at stride 1, tap `j` (of `-(k // 2) .. k // 2`) at rate `d` reads only
    padding when `|j| * d > size - 1`, so it adds zeros: DeepLabV3+'s rate-18 branch on the
    16x16 map of a 256 crop (output stride 16) is a 1x1 depthwise product. Cropping skips
    space-to-batch, which folds that map into 54x54 of padding (93 MiB at 2048 channels and
    batch 4, with as much again as scratch in its gradient: `keras-seg benchmark memory`), for
    the same values and gradients (the cropped taps' gradients are zeros either way). Axes
    of unknown size, even kernels, other paddings or strides are left as they are."""
    rates = tuple(layer.dilation_rate)
    if layer.padding != "same" or max(layer.strides) != 1:
        return kernel, rates
    crops, kept_rates = [], []
    for k, d, size in zip(kernel.shape[:2], rates, input_shape[1:3], strict=True):
        half = k // 2
        keep = half if size is None or k % 2 == 0 else min(half, (size - 1) // d)
        crops.append(slice(half - keep, half + keep + 1))
        kept_rates.append(d if keep else 1)
    return kernel[crops[0], crops[1]], tuple(kept_rates)


def _bias_activation(layer, outputs):
    # Keras' base convolution's tail, channels_last (the only layout recomputed).
    if layer.use_bias:
        outputs = keras.ops.add(outputs, keras.ops.cast(layer.bias, outputs.dtype))
    return outputs if layer.activation is None else layer.activation(outputs)


@keras.saving.register_keras_serializable(package="keras_seg")
class AtrousSeparableConv2D(keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` (same arguments, weights and results) whose dilated
    depthwise step, when training, keeps only its input for the gradient instead of the
    space-to-batch copy (`recompute_in_backward`). The pointwise step is Keras' 1x1 conv,
    as in `tf.nn.separable_conv2d`."""

    def call(self, inputs, training=None):
        x = _depthwise_recomputed(self, inputs, self.depthwise_kernel, training)
        if x is None:
            return super().call(inputs)
        kernel = keras.ops.cast(self.pointwise_kernel, x.dtype)
        outputs = keras.ops.conv(x, kernel, padding="valid", data_format=self.data_format)
        return _bias_activation(self, outputs)


@keras.saving.register_keras_serializable(package="keras_seg")
class AtrousDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` (same arguments, weights and results) whose dilated
    convolution, when training, keeps only its input for the gradient instead of the
    space-to-batch copy (`recompute_in_backward`)."""

    def call(self, inputs, training=None):
        outputs = _depthwise_recomputed(self, inputs, self.kernel, training)
        if outputs is None:
            return super().call(inputs)
        return _bias_activation(self, outputs)


# Keras' class -> keras_seg's, for dilated convolutions.
ATROUS_CLASSES: dict[type, type] = {
    keras.layers.Conv2D: AtrousConv2D,
    keras.layers.SeparableConv2D: AtrousSeparableConv2D,
    keras.layers.DepthwiseConv2D: AtrousDepthwiseConv2D,
}


def conv2d_class(dilation_rate, separable: bool = False) -> type[keras.layers.Layer]:
    """The convolution class for a rate: `AtrousConv2D` / `AtrousSeparableConv2D` when
    dilated, else Keras' `Conv2D` / `SeparableConv2D`."""
    rates = dilation_rate if isinstance(dilation_rate, (list, tuple)) else [dilation_rate]
    keras_class = keras.layers.SeparableConv2D if separable else keras.layers.Conv2D
    return ATROUS_CLASSES[keras_class] if max(rates) > 1 else keras_class
