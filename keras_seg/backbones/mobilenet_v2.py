"""MobileNetV2 backbone.

Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018. https://arxiv.org/abs/1801.04381

`keras.applications.MobileNetV2` ("tf" normalisation, `alpha` width multiplier), so
`weights="imagenet"` loads Keras' weights. The pyramid is the output of the last inverted
residual block at each stride, as in timm's `features_only` and the DeepLab MobileNetV2
(which also stops before the final 1x1 convolution to 1280 channels):

    P1 expanded_conv_project_BN (16a)   P2 block_2_add (24a)   P3 block_5_add (32a)
    P4 block_12_add (96a)               P5 block_16_project_BN (320a)

(channel counts before rounding to multiples of 8). Output stride 16/8 replaces the strided
depthwise convolutions of block_13 (and block_6) by atrous ones (`surgery.pyramid_model`).
"""

from __future__ import annotations

import keras

from keras_seg.backbones import register_backbone
from keras_seg.backbones.surgery import keras_application
from keras_seg.backbones.surgery import pyramid_model

FEATURE_LAYERS = {
    "P1": "expanded_conv_project_BN",
    "P2": "block_2_add",
    "P3": "block_5_add",
    "P4": "block_12_add",
    "P5": "block_16_project_BN",
}


@register_backbone("mobilenet_v2", normalization="tf", output_strides=(8, 16, 32))
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
