"""ResNet backbones: resnet18, resnet34, resnet50, resnet101.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016.
https://arxiv.org/abs/1512.03385

resnet50/101 are `keras.applications.ResNet50/101` (bottleneck blocks, stride in the first
1x1 convolution, "caffe" input normalisation), so `weights="imagenet"` loads Keras' weights.
keras.applications has no ResNet-18/34, so those are written here with basic blocks in the
torchvision layout (stride in the first 3x3 convolution with symmetric zero padding, no conv
bias, BatchNorm eps 1e-5, "torch" normalisation), so converted torchvision weights give the
same outputs; a `width` option shrinks them for tests. Layer names follow keras.applications
(`conv{stage}_block{n}_...`), so every variant has the same pyramid:
P1 = conv1_relu (stride 2), P2..P5 = last block output of stages conv2..conv5.
Output stride 16/8 comes from `surgery.pyramid_model` (atrous convolution in conv5 / conv4+5).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_seg.backbones import register_backbone
from keras_seg.backbones.surgery import keras_application
from keras_seg.backbones.surgery import pyramid_model

# name -> (blocks per stage conv2..conv5, keras.applications factory or None for basic blocks)
RESNETS: dict[str, tuple[tuple[int, ...], Any]] = {
    "resnet18": ((2, 2, 2, 2), None),
    "resnet34": ((3, 4, 6, 3), None),
    "resnet50": ((3, 4, 6, 3), keras.applications.ResNet50),
    "resnet101": ((3, 4, 23, 3), keras.applications.ResNet101),
}


def feature_layers(blocks: tuple[int, ...]) -> dict[str, str]:
    """Pyramid level -> layer name for a ResNet with `blocks` per stage."""
    levels = {"P1": "conv1_relu"}
    for stage, count in enumerate(blocks, start=2):
        levels[f"P{stage}"] = f"conv{stage}_block{count}_out"
    return levels


def _bn(x, name: str):
    # torchvision BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Keras counts the other way).
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def _conv3x3(x, filters: int, strides: int, name: str):
    if strides == 1:
        return layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    # torchvision pads 1 on every side; TF "same" would pad bottom/right only.
    x = layers.ZeroPadding2D(1, name=f"{name[: -len('_conv')]}_pad")(x)
    return layers.Conv2D(filters, 3, strides=strides, use_bias=False, name=name)(x)


def basic_block(x, filters: int, strides: int, name: str):
    """torchvision `BasicBlock`: two 3x3 convs, projection shortcut when the shape changes."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_0_conv"
        )(x)
        shortcut = _bn(shortcut, f"{name}_0_bn")
    x = _conv3x3(x, filters, strides, f"{name}_1_conv")
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(x, f"{name}_1_bn"))
    x = _conv3x3(x, filters, 1, f"{name}_2_conv")
    x = layers.Add(name=f"{name}_add")([shortcut, _bn(x, f"{name}_2_bn")])
    return layers.Activation("relu", name=f"{name}_out")(x)


def basic_resnet(
    input_shape: tuple[int | None, int | None, int], blocks: tuple[int, ...], width: int, name: str
) -> keras.Model:
    """ResNet-18/34-style classifier body (no pooling/fc head) in the torchvision layout."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer (64 = paper), got {width!r}")
    inputs = keras.Input(input_shape, name="images")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(width, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
    # Zero padding before the max-pool equals torch's -inf padding: inputs are >= 0 after ReLU.
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, count in enumerate(blocks):
        for block in range(count):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, width * 2**stage, strides, f"conv{stage + 2}_block{block + 1}")
    return keras.Model(inputs, x, name=name)


def build_resnet(
    name: str,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    weights: str | None = None,
    output_stride: int = 32,
    width: int = 64,
) -> keras.Model:
    """ResNet feature pyramid {"P1".."P5"}; see the module docstring.

    Args:
        name: one of `RESNETS`.
        input_shape: `(H, W, C)` of already-normalised pixels.
        weights: `None` or `"imagenet"` (resnet50/101 only: keras.applications has no
            ResNet-18/34 weights; load converted ones with `load_weights`).
        output_stride: 32, 16 or 8.
        width: channels of the stem for resnet18/34 (64 = paper); stages have
            `width * (1, 2, 4, 8)`. resnet50/101 come from keras.applications and take 64 only.

    Returns:
        Functional `keras.Model` named `name` with dict outputs "P1".."P5".
    """
    blocks, factory = RESNETS[name]
    if factory is None:
        if weights is not None:
            raise ValueError(
                f"Backbone {name!r} has no ImageNet weights in keras.applications; use "
                f"weights=None (then model.load_weights for converted weights), got {weights!r}"
            )
        base = basic_resnet(input_shape, blocks, width, name)
    else:
        if width != 64:
            raise ValueError(
                f"Backbone {name!r} (keras.applications) takes width=64, got {width!r}"
            )
        base = keras_application(
            factory,
            name,
            weights,
            f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
            input_shape=input_shape,
        )
    return pyramid_model(base, feature_layers(blocks), output_stride, name)


def _register(name: str) -> None:
    normalization = "caffe" if RESNETS[name][1] is not None else "torch"

    def builder(
        input_shape: tuple[int | None, int | None, int] = (None, None, 3),
        weights: str | None = None,
        output_stride: int = 32,
        width: int = 64,
    ) -> keras.Model:
        return build_resnet(name, input_shape, weights, output_stride, width)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name} feature pyramid ({normalization} normalisation); see `build_resnet`."
    register_backbone(name, normalization=normalization, output_strides=(8, 16, 32))(builder)


for _name in RESNETS:
    _register(_name)
