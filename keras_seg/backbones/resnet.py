"""ResNet backbones: resnet18, resnet34, resnet50, resnet101 and resnet50/101_torchvision.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016.
https://arxiv.org/abs/1512.03385

resnet50/101 are `keras.applications.ResNet50/101` (bottleneck blocks, stride in the first
1x1 convolution, "caffe" input normalisation), so `weights="imagenet"` loads Keras' weights.
keras.applications has no ResNet-18/34, so those are written here with basic blocks in the
torchvision layout (stride in the first 3x3 convolution with symmetric zero padding, no conv
bias, BatchNorm eps 1e-5, "torch" normalisation), so converted torchvision weights give the
same outputs; a `width` option shrinks them for tests. resnet50_torchvision and
resnet101_torchvision are the bottleneck networks in that same layout (torchvision's, timm's
and segmentation_models.pytorch's "ResNet v1.5": the stride sits in the 3x3 convolution, not
in the first 1x1 as in keras.applications), so their checkpoints load (`keras_seg.weights`). Layer names follow keras.applications
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
from keras_seg.layers import pytorch_batch_norm
from keras_seg.layers import torch_conv_fan_out

# name -> (blocks per stage conv2..conv5, "basic" / "bottleneck" in the torchvision layout, or
# the keras.applications factory)
RESNETS: dict[str, tuple[tuple[int, ...], Any]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), keras.applications.ResNet50),
    "resnet101": ((3, 4, 23, 3), keras.applications.ResNet101),
    "resnet50_torchvision": ((3, 4, 6, 3), "bottleneck"),
    "resnet101_torchvision": ((3, 4, 23, 3), "bottleneck"),
}


def feature_layers(blocks: tuple[int, ...]) -> dict[str, str]:
    """Pyramid level -> layer name for a ResNet with `blocks` per stage."""
    levels = {"P1": "conv1_relu"}
    for stage, count in enumerate(blocks, start=2):
        levels[f"P{stage}"] = f"conv{stage}_block{count}_out"
    return levels


def _conv(filters: int, kernel_size: int, name: str, **kwargs) -> layers.Conv2D:
    """Bias-free convolution initialised as torchvision's ResNet (`kaiming_normal_`, fan_out,
    ReLU; BatchNorm gamma 1, beta 0 are Keras' defaults too)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        use_bias=False,
        kernel_initializer=torch_conv_fan_out(),
        name=name,
        **kwargs,
    )


def _conv3x3(x, filters: int, strides: int, name: str):
    if strides == 1:
        return _conv(filters, 3, name, padding="same")(x)
    # torchvision pads 1 on every side; TF "same" would pad bottom/right only.
    x = layers.ZeroPadding2D(1, name=f"{name[: -len('_conv')]}_pad")(x)
    return _conv(filters, 3, name, strides=strides)(x)


def basic_block(x, filters: int, strides: int, name: str):
    """torchvision `BasicBlock`: two 3x3 convs, projection shortcut when the shape changes."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, f"{name}_0_conv", strides=strides)(x)
        shortcut = pytorch_batch_norm(shortcut, f"{name}_0_bn")
    x = _conv3x3(x, filters, strides, f"{name}_1_conv")
    x = layers.Activation("relu", name=f"{name}_1_relu")(pytorch_batch_norm(x, f"{name}_1_bn"))
    x = _conv3x3(x, filters, 1, f"{name}_2_conv")
    x = layers.Add(name=f"{name}_add")([shortcut, pytorch_batch_norm(x, f"{name}_2_bn")])
    return layers.Activation("relu", name=f"{name}_out")(x)


def bottleneck_block(x, filters: int, strides: int, name: str):
    """torchvision `Bottleneck` (v1.5): 1x1 -> 3x3 (strided) -> 1x1 to 4 * filters."""
    shortcut = x
    if strides != 1 or x.shape[-1] != 4 * filters:
        shortcut = _conv(4 * filters, 1, f"{name}_0_conv", strides=strides)(x)
        shortcut = pytorch_batch_norm(shortcut, f"{name}_0_bn")
    x = _conv(filters, 1, f"{name}_1_conv")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(pytorch_batch_norm(x, f"{name}_1_bn"))
    x = _conv3x3(x, filters, strides, f"{name}_2_conv")
    x = layers.Activation("relu", name=f"{name}_2_relu")(pytorch_batch_norm(x, f"{name}_2_bn"))
    x = _conv(4 * filters, 1, f"{name}_3_conv")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, pytorch_batch_norm(x, f"{name}_3_bn")])
    return layers.Activation("relu", name=f"{name}_out")(x)


_BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}
# "plain": one 7x7 stride-2 conv (torchvision); "deep": three 3x3 convs (timm's resnet50c,
# mmsegmentation's ResNetV1c, the stem PSPNet and DeepLab's later ResNets use).
STEMS = ("plain", "deep")


def torchvision_resnet(
    input_shape: tuple[int | None, int | None, int],
    blocks: tuple[int, ...],
    width: int,
    name: str,
    kind: str = "basic",
    stem: str = "plain",
) -> keras.Model:
    """ResNet classifier body (no pooling/fc head) in the torchvision layout, with `kind`
    ("basic" or "bottleneck") blocks and a `stem` of `STEMS`."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer (64 = paper), got {width!r}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    inputs = keras.Input(input_shape, name="images")
    if stem == "deep":
        # timm's "c" stem (mmsegmentation's ResNetV1c): 3x3 convs width/2 (stride 2), width/2,
        # width; the last one is conv1_conv, so the pyramid and key names stay.
        x = inputs
        for i, strides in ((1, 2), (2, 1)):
            x = _conv3x3(x, width // 2, strides, f"conv1_{i}_conv")
            x = layers.Activation("relu", name=f"conv1_{i}_relu")(
                pytorch_batch_norm(x, f"conv1_{i}_bn")
            )
        x = _conv3x3(x, width, 1, "conv1_conv")
    else:
        x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
        x = _conv(width, 7, "conv1_conv", strides=2)(x)
    x = layers.Activation("relu", name="conv1_relu")(pytorch_batch_norm(x, "conv1_bn"))
    # Zero padding before the max-pool equals torch's -inf padding: inputs are >= 0 after ReLU.
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, count in enumerate(blocks):
        for block in range(count):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _BLOCKS[kind](x, width * 2**stage, strides, f"conv{stage + 2}_block{block + 1}")
    return keras.Model(inputs, x, name=name)


def build_resnet(
    name: str,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    weights: str | None = None,
    output_stride: int = 32,
    width: int = 64,
    dilation_rule: str = "torchvision",
    stem: str = "plain",
) -> keras.Model:
    """ResNet feature pyramid {"P1".."P5"}; see the module docstring.

    Args:
        name: one of `RESNETS`.
        input_shape: `(H, W, C)` of already-normalised pixels.
        weights: `None` or `"imagenet"` (resnet50/101 only: keras.applications has no
            weights for the torchvision layout; `keras_seg.weights` loads those checkpoints).
        output_stride: 32, 16 or 8.
        width: channels of the stem in the torchvision layout (64 = paper); stages have
            `width * (1, 2, 4, 8)` (times 4 for bottlenecks). resnet50/101 come from
            keras.applications and take 64 only.
        dilation_rule: how output stride 16/8 dilates, see `surgery.DILATION_RULES`.
        stem: one of `STEMS` (torchvision layout only): "deep" is three 3x3 convolutions
            (`width // 2`, `width // 2`, `width`), as timm's resnet50c / mmsegmentation's
            ResNetV1c, whose checkpoints load.

    Returns:
        Functional `keras.Model` named `name` with dict outputs "P1".."P5".
    """
    blocks, factory = RESNETS[name]
    if isinstance(factory, str):
        if weights is not None:
            raise ValueError(
                f"Backbone {name!r} has no ImageNet weights in keras.applications; use "
                f"weights=None, or a torchvision/timm checkpoint file, got {weights!r}"
            )
        base = torchvision_resnet(input_shape, blocks, width, name, factory, stem)
    else:
        if width != 64 or stem != "plain":
            raise ValueError(
                f"Backbone {name!r} (keras.applications) takes width=64 and stem='plain', got "
                f"width={width!r}, stem={stem!r}"
            )
        base = keras_application(
            factory,
            name,
            weights,
            f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
            input_shape=input_shape,
        )
    return pyramid_model(base, feature_layers(blocks), output_stride, name, dilation_rule)


def _register(name: str) -> None:
    normalization = "torch" if isinstance(RESNETS[name][1], str) else "caffe"

    def builder(
        input_shape: tuple[int | None, int | None, int] = (None, None, 3),
        weights: str | None = None,
        output_stride: int = 32,
        width: int = 64,
        dilation_rule: str = "torchvision",
        stem: str = "plain",
    ) -> keras.Model:
        return build_resnet(name, input_shape, weights, output_stride, width, dilation_rule, stem)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name} feature pyramid ({normalization} normalisation); see `build_resnet`."
    small = {"width": 8} if isinstance(RESNETS[name][1], str) else {}
    register_backbone(
        name, normalization=normalization, output_strides=(8, 16, 32), small_config=small
    )(builder)


for _name in RESNETS:
    _register(_name)
