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
of one product per tap over the part of the map it reads (`shifted_taps`). In inference the
same cropping applies, and in float32, where the fold would be more than 4x the map (rate 18
on the 32x32 map of a 512 input: 72x72), the step is computed band by band from slices of
the map (`banded_taps`): at batch 4 that branch's transient memory fell from 331 to 150 MiB
and its time from 42 to 30 ms. The TFLite export traces Keras' form instead
(`depthwise_space_to_batch()`), which the converter makes one dilated DEPTHWISE_CONV_2D.

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
_DEPTHWISE_FOLD = [False]


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
def _set(flag: list[bool]) -> Iterator[None]:
    before, flag[0] = flag[0], True
    try:
        yield
    finally:
        flag[0] = before


@contextlib.contextmanager
def depthwise_space_to_batch() -> Iterator[None]:
    """Within it, `AtrousSeparableConv2D` / `AtrousDepthwiseConv2D` trace Keras' own call
    (space-to-batch) at any size: the TFLite export's form, which the converter turns into
    one dilated DEPTHWISE_CONV_2D with per-channel int8 scales (`banded_taps`' products of
    slices would be elementwise MULs with one scale per tensor)."""
    with _set(_DEPTHWISE_FOLD):
        yield


@contextlib.contextmanager
def keras_dilated_convolution() -> Iterator[None]:
    """Within it, every dilated convolution of this module traces Keras' space-to-batch form
    (`AtrousConv2D` included; for the ONNX export)."""
    with _set(_KERAS_PATH), depthwise_space_to_batch():
        yield


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


def _depthwise_step(layer, inputs, kernel, training):
    """The layer's dilated depthwise step where keras_seg does better than Keras' own call;
    None elsewhere (Keras' call then runs).

    First `visible_taps` crops the taps that read only padding (none left dilated: the
    depthwise op directly). Training: the step runs through `recompute_in_backward`, as
    `shifted_taps` where the fold would be mostly padding. Inference: in float32
    (`BANDED_TAPS_DTYPES`) where the fold would be more than `BANDED_TAPS_ABOVE` times the
    map, `banded_taps` (whose largest tensor is the output, not the fold), else the
    depthwise op. Inside `depthwise_space_to_batch()`: always None."""
    if (
        _DEPTHWISE_FOLD[0]
        or keras.backend.backend() != "tensorflow"
        or layer.data_format != "channels_last"
        or max(layer.dilation_rate) == 1
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

    if max(rates) == 1:  # no space-to-batch copy left
        return depthwise(inputs, kernel)
    if not training:
        ratio = _fold_area_ratio(layer, inputs.shape, kernel.shape, rates)
        if tf.as_dtype(inputs.dtype).name in BANDED_TAPS_DTYPES and ratio > BANDED_TAPS_ABOVE:
            return banded_taps(inputs, kernel, rates)
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


#: Above this ratio of the fold's padded area to the map's, inference in float32 runs
#: `banded_taps`. An AtrousSeparableConv2D 2048 -> 256 on DeepLabV3+ ResNet-50's 32x32 ASPP
#: map at 512 (forward; AMX Xeon, oneDNN, 2026-12-04; `python tools/depthwise_fold_vs_shifted.py
#: --inference --case 6:32 12:32 18:32 --batch 1` (and 4, and `--dtype bfloat16`);
#: bench_results/depthwise_fold_vs_banded_*.json), fold against banded: rate 18 (72x72,
#: 5.1x) 9.9 -> 7.9 ms at batch 1, 42 -> 30 ms and allocator peak 331 -> 150 MiB at batch 4;
#: rate 12 (60x60, 3.5x) 7.3 -> 10.6 ms, 36 -> 40 ms; rate 6 (2.2x) 6.5 -> 12.2 ms. In
#: the peers row's worker, rate 12 banded too (`BANDED_TAPS_ABOVE` 3) changed neither its
#: time nor its peak RSS (bench_results/ab_banded_above3_deeplabv3plus_f32.json). In
#: bfloat16 (mixed_bfloat16) banded was slower at every rate (rate 18 at batch 1 4.3 -> 6.3
#: ms) and the folds are half the size, so bfloat16 keeps the fold.
BANDED_TAPS_ABOVE = 4.0
#: The compute dtypes in which inference runs `banded_taps` (see `BANDED_TAPS_ABOVE`).
BANDED_TAPS_DTYPES = frozenset({"float32"})


def _fold_area_ratio(layer, input_shape, kernel_shape, rates) -> float:
    """The area space-to-batch would fold `input_shape`'s map into (padded to a multiple of
    the rates) over the map's ("same" padding, stride 1, an odd kernel, depth multiplier 1
    and a static map size; otherwise 0)."""
    sizes = input_shape[1:3]
    if (
        layer.padding != "same"
        or max(layer.strides) != 1
        or None in sizes
        or kernel_shape[3] != 1
        or any(k % 2 == 0 for k in kernel_shape[:2])
    ):
        return 0.0
    padded = [
        -(-(size + (k - 1) * d) // d) * d  # "same" padding, rounded up to a multiple of d
        for size, k, d in zip(sizes, kernel_shape[:2], rates, strict=True)
    ]
    return padded[0] * padded[1] / (sizes[0] * sizes[1])


def _fold_is_mostly_padding(layer, input_shape, kernel_shape, rates) -> bool:
    """Whether space-to-batch would fold the map into more than `SHIFTED_TAPS_ABOVE` times
    its area (`_fold_area_ratio`)."""
    return _fold_area_ratio(layer, input_shape, kernel_shape, rates) > SHIFTED_TAPS_ABOVE


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


def _bands(size: int, rate: int, half: int) -> list[tuple[int, int]]:
    """`[start, stop)` runs of output rows (or columns) along which the same taps of a
    `2 * half + 1` kernel at `rate` stay inside a map of `size`."""
    cuts = {0, size}
    for j in range(1, half + 1):
        cuts.update(c for c in (j * rate, size - j * rate) if 0 < c < size)
    cuts = sorted(cuts)
    return list(zip(cuts[:-1], cuts[1:], strict=False))


def banded_taps(x, kernel, rates):
    """A depthwise convolution (as `shifted_taps`: "same" padding, stride 1, odd kernel,
    depth multiplier 1) computed band by band: the output is cut where a tap starts or stops
    reading inside the map, and each band is the sum of its taps' products over slices of
    the input, then the bands are concatenated. No padded copy and no full-size term per tap
    (which `shifted_taps` pads, for the gradient's sake): the output is the largest tensor
    made. For inference; Keras' values up to float rounding."""
    kh, kw = kernel.shape[:2]
    height, width = x.shape[1:3]
    rows = []
    for top, bottom in _bands(height, rates[0], kh // 2):
        cols = []
        for left, right in _bands(width, rates[1], kw // 2):
            total = None
            for i in range(kh):
                dy = (i - kh // 2) * rates[0]
                if top + dy < 0 or bottom + dy > height:
                    continue  # this band's rows read padding through tap row i
                for j in range(kw):
                    dx = (j - kw // 2) * rates[1]
                    if left + dx < 0 or right + dx > width:
                        continue
                    seen = x[:, top + dy : bottom + dy, left + dx : right + dx, :]
                    term = seen * kernel[i, j, :, 0]
                    total = term if total is None else total + term
            cols.append(total)
        rows.append(cols[0] if len(cols) == 1 else tf.concat(cols, axis=2))
    return rows[0] if len(rows) == 1 else tf.concat(rows, axis=1)


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
        x = _depthwise_step(self, inputs, self.depthwise_kernel, training)
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
        outputs = _depthwise_step(self, inputs, self.kernel, training)
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
