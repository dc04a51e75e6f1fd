"""MobileNetV2 backbones: mobilenet_v2 and mobilenet_v2_torchvision.

Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018. https://arxiv.org/abs/1801.04381

mobilenet_v2 is `keras.applications.MobileNetV2` ("tf" normalisation, `alpha` width
multiplier), so `weights="imagenet"` loads Keras' weights. The pyramid is the output of the last inverted
residual block at each stride, as in timm's `features_only` and the DeepLab MobileNetV2
(which also stops before the final 1x1 convolution to 1280 channels):

    P1 expanded_conv_project_BN (16a)   P2 block_2_add (24a)   P3 block_5_add (32a)
    P4 block_12_add (96a)               P5 block_16_project_BN (320a)

(channel counts before rounding to multiples of 8). Output stride 16/8 replaces the strided
depthwise convolutions of block_13 (and block_6) by atrous ones (`surgery.pyramid_model`).

mobilenet_v2_torchvision is the same network in the torchvision layout (torchvision's
`mobilenet_v2`, timm's `mobilenetv2_100` and segmentation_models.pytorch's encoder): strided
3x3 convolutions pad 1 on every side (TF "same" pads bottom/right only), BatchNorm eps 1e-5
(Keras' MobileNetV2: 1e-3), "torch" normalisation; so their checkpoints load
(`keras_seg.weights`). Layer names and the pyramid are those of mobilenet_v2 above, with
`last_conv=True` making P5 the final 1x1 convolution to 1280 channels (`out_relu`,
torchvision's `features[18]`), the deepest feature of SMP's encoder.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_seg.backbones import register_backbone
from keras_seg.backbones.surgery import keras_application
from keras_seg.backbones.surgery import pyramid_model
from keras_seg.layers import pytorch_batch_norm

FEATURE_LAYERS = {
    "P1": "expanded_conv_project_BN",
    "P2": "block_2_add",
    "P3": "block_5_add",
    "P4": "block_12_add",
    "P5": "block_16_project_BN",
}

# torchvision's `inverted_residual_setting`: (expansion t, channels c, blocks n, first stride s).
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@register_backbone(
    "mobilenet_v2", normalization="tf", output_strides=(8, 16, 32), small_config={"alpha": 0.35}
)
def mobilenet_v2(
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    weights: str | None = None,
    output_stride: int = 32,
    alpha: float = 1.0,
) -> keras.Model:
    """MobileNetV2 feature pyramid {"P1".."P5"}.

    Args:
        input_shape: `(H, W, C)` of pixels normalised to [-1, 1] ("tf" scheme).
        weights: `None` or `"imagenet"` (alpha in 0.35, 0.5, 0.75, 1.0, 1.3, 1.4; the
            224x224 weights are used for any input size).
        output_stride: 32, 16 or 8.
        alpha: width multiplier of keras.applications.MobileNetV2.

    Returns:
        Functional `keras.Model` named "mobilenet_v2" with dict outputs "P1".."P5".

    Example:
        >>> backbone = keras_seg.backbones.build_backbone("mobilenet_v2", output_stride=16)
    """
    base = keras_application(
        keras.applications.MobileNetV2,
        "mobilenet_v2",
        weights,
        f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224_no_top.h5",
        input_shape=input_shape,
        alpha=alpha,
    )
    return pyramid_model(base, FEATURE_LAYERS, output_stride, "mobilenet_v2")


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's (and timm's, Keras') `_make_divisible`: round `value` to a multiple of
    `divisor`, never below 90% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_relu6(
    x, filters: int | None, kernel: int, strides: int, name: str, bn: str, relu: str
):
    """torchvision `Conv2dNormActivation` (conv without bias, BN, ReLU6); depthwise when
    `filters` is None. A strided 3x3 pads 1 on every side, as torch does."""
    padding = "same"
    if strides != 1:
        # keras.applications' names: Conv1_pad, block_{i}_pad.
        pad = f"{name.removesuffix('_depthwise')}_pad"
        x = layers.ZeroPadding2D(kernel // 2, name=pad)(x)
        padding = "valid"
    options = {"strides": strides, "padding": padding, "use_bias": False, "name": name}
    if filters is None:
        x = layers.DepthwiseConv2D(kernel, **options)(x)
    else:
        x = layers.Conv2D(filters, kernel, **options)(x)
    return layers.ReLU(6.0, name=relu)(pytorch_batch_norm(x, bn))


def inverted_residual(x, expansion: int, filters: int, strides: int, name: str):
    """torchvision `InvertedResidual`: 1x1 expansion (unless t = 1), 3x3 depthwise, linear
    1x1 projection; the input is added back when the shape is unchanged."""
    inputs = x
    if expansion != 1:
        hidden = int(round(x.shape[-1] * expansion))
        x = _conv_bn_relu6(
            x, hidden, 1, 1, f"{name}_expand", f"{name}_expand_BN", f"{name}_expand_relu"
        )
    x = _conv_bn_relu6(
        x, None, 3, strides, f"{name}_depthwise", f"{name}_depthwise_BN", f"{name}_depthwise_relu"
    )
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(x)
    x = pytorch_batch_norm(x, f"{name}_project_BN")
    if strides == 1 and inputs.shape[-1] == filters:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


def torchvision_mobilenet_v2(
    input_shape: tuple[int | None, int | None, int], alpha: float, last_conv: bool
) -> keras.Model:
    """MobileNetV2 body (no pooling/classifier) in the torchvision layout, with keras.applications'
    layer names: `Conv1`, `expanded_conv_*` (features[1]), `block_{1..16}_*` (features[2..17]),
    and with `last_conv` `Conv_1` / `Conv_1_bn` / `out_relu` (features[18])."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number (1.0 = paper), got {alpha!r}")
    inputs = keras.Input(input_shape, name="images")
    x = _conv_bn_relu6(inputs, make_divisible(32 * alpha), 3, 2, "Conv1", "bn_Conv1", "Conv1_relu")
    index = 0
    for expansion, channels, count, stride in BLOCKS:
        for i in range(count):
            name = f"block_{index}" if index else "expanded_conv"
            x = inverted_residual(
                x, expansion, make_divisible(channels * alpha), stride if i == 0 else 1, name
            )
            index += 1
    if last_conv:
        # torchvision keeps 1280 channels for alpha <= 1 and widens them above.
        filters = make_divisible(1280 * max(1.0, alpha))
        x = _conv_bn_relu6(x, filters, 1, 1, "Conv_1", "Conv_1_bn", "out_relu")
    return keras.Model(inputs, x, name="mobilenet_v2_torchvision")


@register_backbone(
    "mobilenet_v2_torchvision",
    normalization="torch",
    output_strides=(8, 16, 32),
    small_config={"alpha": 0.35},
)
def mobilenet_v2_torchvision(
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    weights: str | None = None,
    output_stride: int = 32,
    alpha: float = 1.0,
    last_conv: bool = False,
    dilation_rule: str = "torchvision",
) -> keras.Model:
    """MobileNetV2 feature pyramid {"P1".."P5"} in the torchvision layout.

    Args:
        input_shape: `(H, W, C)` of pixels normalised with the ImageNet mean and std ("torch").
        weights: `None` only: keras.applications has no weights for this layout; torchvision,
            timm and segmentation_models.pytorch checkpoints load through `build_backbone`
            (`keras_seg.weights`).
        output_stride: 32, 16 or 8.
        alpha: width multiplier (torchvision's `width_mult`), channels rounded as torchvision
            rounds them.
        last_conv: P5 is the final 1x1 conv-BN-ReLU6 to 1280 channels (`out_relu`, as SMP's
            encoder returns) instead of the last block (320 channels).
        dilation_rule: how output stride 16/8 dilates, see `surgery.DILATION_RULES`.

    Returns:
        Functional `keras.Model` named "mobilenet_v2_torchvision" with dict outputs "P1".."P5".

    Example:
        >>> backbone = keras_seg.backbones.build_backbone(
        ...     "mobilenet_v2_torchvision", weights="mobilenet_v2-b0353104.pth", output_stride=16
        ... )
    """
    if weights is not None:
        raise ValueError(
            "Backbone 'mobilenet_v2_torchvision' has no ImageNet weights in keras.applications; "
            f"use weights=None, or a torchvision/timm checkpoint file, got {weights!r}"
        )
    base = torchvision_mobilenet_v2(input_shape, alpha, last_conv)
    levels = {**FEATURE_LAYERS, "P5": "out_relu"} if last_conv else FEATURE_LAYERS
    return pyramid_model(base, levels, output_stride, base.name, dilation_rule)
