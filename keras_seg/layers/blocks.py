"""Functional-API helpers: every layer they create gets an explicit name."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from keras_seg.layers.shape import CropToMatch
from keras_seg.layers.shape import PadToMultiple


def conv_bn_act(
    x,
    filters: int,
    name: str,
    kernel_size: int = 3,
    strides: int = 1,
    dilation_rate: int = 1,
    batch_norm: bool = True,
    activation: str | None = "relu",
    separable: bool = False,
):
    """Conv (bias only without BN) -> optional BatchNorm -> optional activation.

    Layer names: `{name}_conv`, `{name}_bn`, `{name}_{activation}`.
    """
    conv_cls = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv_cls(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation_rate,
        padding="same",
        use_bias=not batch_norm,
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def logits_head(x, num_classes: int, name: str = "logits", kernel_size: int = 1):
    """Convolution (1x1 by default) to class logits, in float32 so mixed precision stays stable."""
    return layers.Conv2D(num_classes, kernel_size, padding="same", dtype="float32", name=name)(x)


def stride_safe(
    inputs: keras.KerasTensor,
    stride: int,
    body: Callable[[keras.KerasTensor], keras.KerasTensor],
) -> keras.KerasTensor:
    """Run `body` on `inputs` padded to a multiple of `stride`, then crop its output back.

    `body` maps the padded image to logits at the padded resolution.
    """
    padded = PadToMultiple(stride, name="pad_to_stride")(inputs) if stride > 1 else inputs
    logits = body(padded)
    if stride > 1:
        logits = CropToMatch(name="crop_to_input", dtype="float32")([logits, inputs])
    return logits


@keras.saving.register_keras_serializable(package="keras_seg")
class FoldedBatchNorm(keras.layers.Layer):
    """The identity: where `keras_seg.fold.fold_batch_norm` left a BatchNorm that it folded
    into the convolution before it (it takes BatchNorm's call arguments and ignores them)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def get_config(self):
        return super().get_config()
