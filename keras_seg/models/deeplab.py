"""DeepLabv3 and DeepLabv3+.

Chen, Papandreou, Schroff, Adam. "Rethinking Atrous Convolution for Semantic Image
Segmentation" (DeepLabv3), 2017. https://arxiv.org/abs/1706.05587
Chen, Zhu, Papandreou, Schroff, Adam. "Encoder-Decoder with Atrous Separable Convolution for
Semantic Image Segmentation" (DeepLabv3+), ECCV 2018. https://arxiv.org/abs/1802.02611

A backbone with output stride 16 (or 8) by atrous convolution, ASPP on its last features
(`keras_seg.layers.aspp`) and:

- deeplabv3: 1x1 logits on the ASPP output, bilinearly upsampled to the input size.
- deeplabv3plus: a decoder: the stride-4 features (P2) projected to 48 channels by 1x1 conv +
  BN + ReLU, concatenated with the ASPP output bilinearly upsampled to their size (4x at OS16),
  two 3x3 conv + BN + ReLU (256), 1x1 logits, bilinear upsampling by 4 to the input size.

The input is normalised for the backbone, then zero-padded (bottom/right) to a multiple of the
output stride (padding after normalisation means padding with the mean pixel, as DeepLab's
preprocessing does) and the logits are cropped back, so any input size works. The deepest
feature has stride `output_stride`, so that multiple keeps every level aligned; padding to 32
would only add pixels (DeepLab's 513x513 crop pads to 528, not 544).
The papers give no parameter counts, so there is no `paper_params` here.

segmentation_models.pytorch builds both a little differently, and three options reproduce
it so its checkpoints load (`keras_seg.weights.smp`): `aspp_post_conv` (a 3x3 conv-BN-ReLU
after the ASPP projection), `decoder_convs=1` (one 3x3 convolution after the concatenation,
not the paper's two) and `align_corners=True` (its bilinear upsampling aligns corners), with
the backbone's `dilation_rule="smp"` and `aspp_rates=(12, 24, 36)` at every output stride.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.backbones import require_levels
from keras_seg.layers import Normalize
from keras_seg.layers import ResizeToMatch
from keras_seg.layers import conv_bn_act
from keras_seg.layers import logits_head
from keras_seg.layers import stride_safe
from keras_seg.layers.aspp import ASPP_RATES
from keras_seg.layers.aspp import aspp
from keras_seg.models.base import SegmentationModel
from keras_seg.registry import register_model

DEFAULT_BACKBONE = "resnet50"
# Cheap test configurations (~0.2-0.3M parameters) on two different backbones, so the
# registry-wide checks cover both the torchvision-layout ResNet and the keras.applications
# MobileNetV2 surgery.
_SMALL_PLUS = {
    "backbone": "resnet18",
    "backbone_kwargs": {"width": 8},
    "aspp_filters": 16,
    "decoder_filters": 16,
}
_SMALL_V3 = {"backbone": "mobilenet_v2", "backbone_kwargs": {"alpha": 0.35}, "aspp_filters": 16}


def _deeplab(
    name: str,
    *,
    decoder: bool,
    num_classes: int,
    input_shape: tuple[int | None, int | None, int],
    backbone: str | None,
    weights: str | None,
    output_stride: int,
    aspp_rates: tuple[int, ...] | None,
    aspp_filters: int,
    aspp_dropout: float,
    separable: bool,
    backbone_kwargs: dict[str, Any] | None,
    decoder_filters: int = 256,
    low_level_filters: int = 48,
    aspp_post_conv: bool = False,
    decoder_convs: int = 2,
    align_corners: bool = False,
) -> keras.Model:
    """DeepLabv3 (`decoder=False`) or DeepLabv3+ (`decoder=True`); see the builders."""
    backbone = backbone or DEFAULT_BACKBONE
    if output_stride not in ASPP_RATES:
        raise ValueError(
            f"output_stride must be one of {sorted(ASPP_RATES)}, got {output_stride!r}"
        )
    if weights not in (None, "imagenet"):
        raise ValueError(
            f"{name} weights must be None or 'imagenet' (the backbone's), got {weights!r}"
        )
    rates = tuple(aspp_rates) if aspp_rates is not None else ASPP_RATES[output_stride]
    for arg, value in [
        ("decoder_filters", decoder_filters),
        ("low_level_filters", low_level_filters),
        ("decoder_convs", decoder_convs),
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    spec = get_backbone_spec(backbone)
    require_levels(backbone, ("P2", "P5") if decoder else ("P5",), name)
    features = build_backbone(
        backbone,
        input_shape=(None, None, input_shape[-1]),
        weights=weights,
        output_stride=output_stride,
        **(backbone_kwargs or {}),
    )

    def body(x):
        pyramid = features(x)
        y = aspp(pyramid["P5"], aspp_filters, rates, aspp_dropout, separable, name="aspp")
        if aspp_post_conv:
            y = conv_bn_act(y, aspp_filters, "aspp_post", separable=separable)
        if decoder:
            low = conv_bn_act(pyramid["P2"], low_level_filters, "decoder_low_level", kernel_size=1)
            y = ResizeToMatch(align_corners=align_corners, name="decoder_upsample")([y, low])
            y = layers.Concatenate(name="decoder_concat")([y, low])
            for i in range(1, decoder_convs + 1):
                y = conv_bn_act(y, decoder_filters, f"decoder_conv{i}", separable=separable)
        logits = logits_head(y, num_classes)
        return ResizeToMatch(align_corners=align_corners, name="upsample_logits", dtype="float32")(
            [logits, x]
        )

    inputs = keras.Input(input_shape, name="images")
    x = Normalize(spec.normalization, name="normalize")(inputs)
    return SegmentationModel(inputs, stride_safe(x, output_stride, body), name=name)


@register_model("deeplabv3plus", small_config=_SMALL_PLUS)
def deeplabv3plus(
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | None = DEFAULT_BACKBONE,
    weights: str | None = None,
    output_stride: int = 16,
    aspp_rates: tuple[int, ...] | None = None,
    aspp_filters: int = 256,
    aspp_dropout: float = 0.1,
    decoder_filters: int = 256,
    low_level_filters: int = 48,
    separable: bool = False,
    backbone_kwargs: dict[str, Any] | None = None,
    aspp_post_conv: bool = False,
    decoder_convs: int = 2,
    align_corners: bool = False,
) -> keras.Model:
    """DeepLabv3+ (Chen et al. 2018): atrous backbone, ASPP and a stride-4 decoder.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, C)`, `None` for any size.
        backbone: a registered backbone with output stride 8/16 (`resnet50` default,
            `resnet101`, `mobilenet_v2`, `resnet18`, `resnet34`).
        weights: `None` or `"imagenet"` for a pretrained backbone.
        output_stride: 16 (paper default for training) or 8 (denser, ~4x the ASPP cost).
        aspp_rates: atrous rates of the ASPP 3x3 branches; default (6, 12, 18) at output
            stride 16, (12, 24, 36) at 8.
        aspp_filters: channels of the ASPP branches and projection (256).
        aspp_dropout: dropout after the ASPP projection.
        decoder_filters: channels of the two 3x3 decoder convolutions (256).
        low_level_filters: channels of the 1x1 projection of the stride-4 features (48).
        separable: depthwise-separable 3x3 convolutions in ASPP and decoder, as the paper
            uses with Xception.
        backbone_kwargs: extra backbone options, e.g. `{"alpha": 0.5}` for mobilenet_v2 or
            `{"width": 16}` for resnet18/34.
        aspp_post_conv: a 3x3 conv-BN-ReLU after the ASPP projection (SMP has it).
        decoder_convs: 3x3 convolutions after the concatenation (2 in the paper, 1 in SMP).
        align_corners: bilinear upsampling with aligned corners (SMP) instead of half-pixel
            centres.

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)`.

    Example:
        >>> model = keras_seg.build("deeplabv3plus", num_classes=21, weights="imagenet")
    """
    return _deeplab(
        "deeplabv3plus",
        decoder=True,
        num_classes=num_classes,
        input_shape=input_shape,
        backbone=backbone,
        weights=weights,
        output_stride=output_stride,
        aspp_rates=aspp_rates,
        aspp_filters=aspp_filters,
        aspp_dropout=aspp_dropout,
        separable=separable,
        backbone_kwargs=backbone_kwargs,
        decoder_filters=decoder_filters,
        low_level_filters=low_level_filters,
        aspp_post_conv=aspp_post_conv,
        decoder_convs=decoder_convs,
        align_corners=align_corners,
    )


@register_model("deeplabv3", small_config=_SMALL_V3)
def deeplabv3(
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | None = DEFAULT_BACKBONE,
    weights: str | None = None,
    output_stride: int = 16,
    aspp_rates: tuple[int, ...] | None = None,
    aspp_filters: int = 256,
    aspp_dropout: float = 0.1,
    separable: bool = False,
    backbone_kwargs: dict[str, Any] | None = None,
    aspp_post_conv: bool = False,
    align_corners: bool = False,
) -> keras.Model:
    """DeepLabv3 (Chen et al. 2017): atrous backbone, ASPP, logits upsampled to the input.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, C)`, `None` for any size.
        backbone: a registered backbone with output stride 8/16 (`resnet50` default).
        weights: `None` or `"imagenet"` for a pretrained backbone.
        output_stride: 16 or 8.
        aspp_rates: atrous rates of the ASPP 3x3 branches; default from `output_stride`.
        aspp_filters: channels of the ASPP branches and projection (256).
        aspp_dropout: dropout after the ASPP projection.
        separable: depthwise-separable 3x3 convolutions in ASPP.
        backbone_kwargs: extra backbone options (`alpha`, `width`).
        aspp_post_conv: a 3x3 conv-BN-ReLU after the ASPP projection (SMP has it).
        align_corners: bilinear upsampling with aligned corners (SMP).

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)`.

    Example:
        >>> model = keras_seg.build("deeplabv3", num_classes=21, output_stride=8)
    """
    return _deeplab(
        "deeplabv3",
        decoder=False,
        num_classes=num_classes,
        input_shape=input_shape,
        backbone=backbone,
        weights=weights,
        output_stride=output_stride,
        aspp_rates=aspp_rates,
        aspp_filters=aspp_filters,
        aspp_dropout=aspp_dropout,
        separable=separable,
        backbone_kwargs=backbone_kwargs,
        aspp_post_conv=aspp_post_conv,
        align_corners=align_corners,
    )
