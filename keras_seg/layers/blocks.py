"""Functional-API helpers: every layer they create gets an explicit name."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from keras_seg.layers.convolution import conv2d_class
from keras_seg.layers.initializers import torch_conv_fan_in
from keras_seg.layers.normalization import FusedBatchNorm
from keras_seg.layers.shape import CropToMatch
from keras_seg.layers.shape import PadToMultiple

#: BatchNorm of our decoders as PyTorch's `BatchNorm2d` (eps 1e-5, momentum 0.1, which is
#: Keras' momentum 0.9: Keras weighs the old moving statistics, PyTorch the new batch). Every
#: decoder here ports a PyTorch one (SMP, mmsegmentation, torchvision), and so do the
#: torchvision-layout backbones, which use the same values. Keras' default 0.99 keeps 37% of
#: the initial (0, 1) statistics after 100 steps (0.99 ** 100), so short runs evaluated
#: with moving statistics score far below PyTorch's (issue #13); it makes no difference to
#: inference with loaded weights.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def pytorch_batch_norm(x, name: str):
    """`FusedBatchNorm` with PyTorch's `BatchNorm2d` defaults (`BN_EPSILON`, `BN_MOMENTUM`)."""
    return FusedBatchNorm(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


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

    Initialised as segmentation_models.pytorch's `initialize_decoder`: kaiming-uniform
    (fan_in, ReLU) kernels, zero biases, BatchNorm gamma 1 and beta 0 (`BN_MOMENTUM`).
    Layer names: `{name}_conv`, `{name}_bn`, `{name}_{activation}`.
    """
    conv_cls = conv2d_class(dilation_rate, separable=separable)
    # Separable convolutions keep Keras' defaults: its fan of a depthwise kernel is not torch's.
    init = {} if separable else {"kernel_initializer": torch_conv_fan_in()}
    x = conv_cls(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation_rate,
        padding="same",
        use_bias=not batch_norm,
        name=f"{name}_conv",
        **init,
    )(x)
    if batch_norm:
        x = pytorch_batch_norm(x, f"{name}_bn")
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def logits_head(x, num_classes: int, name: str = "logits", kernel_size: int = 1):
    """Convolution (1x1 by default) to class logits.

    It computes in the model's precision, as `torch.autocast` runs SMP's head: under a mixed
    policy the logits come out in bfloat16/float16 and the float32 layer every builder ends
    with (the crop or resize to the input size, see `stride_safe`) casts them, so the
    model's output, softmax and loss are float32 (the Keras mixed-precision guide's float32
    output layer). On the AMX Xeon the bfloat16 U-Net ResNet-34 with a float32 head took
    0.072 s per `predict_on_batch` (512, batch 1) and 0.352 s per training step (256, batch
    4), 0.066 and 0.337 s with this one (bench_results/ab_logits_bf16_unet_*.json), and
    trained as well (`keras-seg benchmark precision`, bench_results/precision_amx*.json).

    Keras' default glorot_uniform kernel and zero bias are SMP's `initialize_head`
    (xavier_uniform, bias 0).
    """
    return layers.Conv2D(num_classes, kernel_size, padding="same", name=name)(x)


def stride_safe(
    inputs: keras.KerasTensor,
    stride: int,
    body: Callable[[keras.KerasTensor], keras.KerasTensor],
) -> keras.KerasTensor:
    """Run `body` on `inputs` padded to a multiple of `stride`, then crop its output back.

    `body` maps the padded image to logits at the padded resolution. The crop is float32:
    it is the model's output layer, where logits computed under a mixed policy become
    float32.
    """
    padded = PadToMultiple(stride, name="pad_to_stride")(inputs) if stride > 1 else inputs
    return CropToMatch(name="crop_to_input", dtype="float32")([body(padded), inputs])


@keras.saving.register_keras_serializable(package="keras_seg")
class FoldedBatchNorm(keras.layers.Layer):
    """The identity: where `keras_seg.fold.fold_batch_norm` left a BatchNorm that it folded
    into the convolution before it (it takes BatchNorm's call arguments and ignores them)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def get_config(self):
        return super().get_config()
