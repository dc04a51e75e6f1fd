"""Kernel initialisers that Keras does not ship, and the PyTorch references' defaults.

`torch_conv_fan_out` and `torch_conv_fan_in` are the initialisers of the PyTorch code our
layers port (Keras' own default, glorot_uniform, gives ReLU networks half the variance):
torchvision's ResNet/VGG/MobileNet convolutions use `kaiming_normal_(mode="fan_out",
nonlinearity="relu")`; segmentation_models.pytorch's `initialize_decoder` uses
`kaiming_uniform_(mode="fan_in", nonlinearity="relu")` with zero biases. Its
`initialize_head` (xavier_uniform, zero bias) is Keras' default already.

`BilinearUpsampling` starts a stride-`s` `Conv2DTranspose` as bilinear interpolation, the way
FCN (Long et al. 2015) initialises its "deconvolution" layers (Caffe's `bilinear` filler).
Keras has no such initialiser, so we write the closed form here.
"""

from __future__ import annotations

import keras
import numpy as np


def torch_conv_fan_out() -> keras.initializers.Initializer:
    """torchvision backbones' convolutions: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`,
    an untruncated normal with std `sqrt(2 / (kh * kw * out_channels))`."""
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def torch_conv_fan_in() -> keras.initializers.Initializer:
    """SMP decoders' convolutions (`initialize_decoder`): `kaiming_uniform_(mode="fan_in",
    nonlinearity="relu")`, uniform within `sqrt(6 / (kh * kw * in_channels))` (= he_uniform)."""
    return keras.initializers.VarianceScaling(2.0, "fan_in", "uniform")


def bilinear_kernel_1d(size: int) -> np.ndarray:
    """The 1-D bilinear interpolation filter of length `size` (`2 * factor` for upsampling).

    `f[i] = 1 - |i - c| / factor` with `factor = ceil(size / 2)` and `c` the filter centre;
    e.g. size 4 gives `[0.25, 0.75, 0.75, 0.25]`.
    """
    if int(size) < 1:
        raise ValueError(f"Bilinear kernel size must be >= 1, got {size!r}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1.0 - np.abs(np.arange(size) - center) / factor


@keras.saving.register_keras_serializable(package="keras_seg")
class BilinearUpsampling(keras.initializers.Initializer):
    """Initialise a `Conv2DTranspose` kernel `(kh, kw, out, in)` to bilinear upsampling.

    Channel `i` maps to channel `i` with the 2-D filter `outer(f_h, f_w)` and other pairs are 0,
    so each channel is upsampled on its own. With `kernel_size = 2 * stride` and `"same"`
    padding the layer then equals half-pixel bilinear resizing (`tf.image.resize`) away from
    the borders.

    Example:
        >>> layers.Conv2DTranspose(21, 4, strides=2, padding="same", use_bias=False,
        ...                        kernel_initializer=BilinearUpsampling())
    """

    def __call__(self, shape, dtype=None):
        if len(shape) != 4:
            raise ValueError(
                f"BilinearUpsampling needs a 4-D (kh, kw, out, in) kernel shape, got {shape!r}"
            )
        kh, kw, out_channels, in_channels = shape
        filt = np.outer(bilinear_kernel_1d(kh), bilinear_kernel_1d(kw))
        kernel = np.zeros(shape, dtype="float32")
        for channel in range(min(out_channels, in_channels)):
            kernel[:, :, channel, channel] = filt
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}
