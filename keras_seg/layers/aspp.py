"""Atrous Spatial Pyramid Pooling (ASPP).

Chen, Papandreou, Schroff, Adam. "Rethinking Atrous Convolution for Semantic Image
Segmentation" (DeepLabv3), 2017. https://arxiv.org/abs/1706.05587, Sec. 3.3.

Five parallel branches on the backbone's last feature map: a 1x1 convolution, three 3x3
atrous convolutions (rates 6, 12, 18 at output stride 16, doubled at 8) and image-level
pooling (global average pool -> 1x1 conv -> BN -> ReLU -> bilinear resize back), each with
`filters` channels, BatchNorm and ReLU; concatenated and projected by 1x1 conv + BN + ReLU,
then dropout. Built from standard layers plus `ResizeToMatch`, so it takes any (None) size and
lowers to builtin TFLite ops (MEAN, RESIZE_BILINEAR, CONV_2D, CONCATENATION).
"""

from __future__ import annotations

from keras import layers

from keras_seg.layers.blocks import conv_bn_act
from keras_seg.layers.shape import ResizeToMatch

# Output stride -> atrous rates of the three 3x3 branches (DeepLabv3, Sec. 3.3 and 4.1).
ASPP_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 8: (12, 24, 36)}


def aspp(
    x,
    filters: int = 256,
    rates: tuple[int, ...] = (6, 12, 18),
    dropout: float = 0.1,
    separable: bool = False,
    name: str = "aspp",
):
    """Apply ASPP to feature map `x`; returns `(B, h, w, filters)`.

    Args:
        x: backbone features (any spatial size).
        filters: channels of every branch and of the projection (256 in the paper).
        rates: atrous rates of the 3x3 branches, one branch per rate (see `ASPP_RATES`).
        dropout: dropout rate after the projection (0.1, DeepLab's keep_prob 0.9).
        separable: depthwise-separable 3x3 branches (DeepLabv3+'s "atrous separable
            convolution"); the paper's ResNet ASPP uses plain convolutions.
        name: prefix of every layer: `{name}_b0` (1x1), `{name}_b1..` (atrous),
            `{name}_pool_*`, `{name}_concat`, `{name}_proj`, `{name}_dropout`.

    Returns:
        The projected features.
    """
    if filters < 1:
        raise ValueError(f"ASPP filters must be >= 1, got {filters!r}")
    if not rates or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
        raise ValueError(f"ASPP rates must be positive integers, got {rates!r}")
    branches = [conv_bn_act(x, filters, name=f"{name}_b0", kernel_size=1)]
    for i, rate in enumerate(rates, start=1):
        branches.append(
            conv_bn_act(x, filters, name=f"{name}_b{i}", dilation_rate=rate, separable=separable)
        )
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool_gap")(x)
    pooled = conv_bn_act(pooled, filters, name=f"{name}_pool", kernel_size=1)
    branches.append(ResizeToMatch(name=f"{name}_pool_resize")([pooled, x]))
    y = layers.Concatenate(name=f"{name}_concat")(branches)
    y = conv_bn_act(y, filters, name=f"{name}_proj", kernel_size=1)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    return y
