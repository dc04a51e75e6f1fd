"""U-Net.

Ronneberger, Fischer, Brox. "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015. https://arxiv.org/abs/1505.04597

Paper network: four 2x2 max-pool downsampling steps (64 -> 1024 channels), two 3x3
convolutions per level, 2x2 transposed-convolution "up-convolutions" that halve the channels,
skip concatenations, and a 1x1 classifier: about 31.03M parameters for 1 input channel and 2
classes. We use "same" padding so the output matches the input (the paper's valid
convolutions crop the border); the parameter count is the same. `batch_norm=True` (default)
adds BatchNorm after each convolution, as every modern U-Net does; `batch_norm=False`
gives exactly the paper's layers.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_seg.layers import Normalize
from keras_seg.layers import conv_bn_act
from keras_seg.layers import logits_head
from keras_seg.layers import stride_safe
from keras_seg.registry import register_model


def _double_conv(x, filters: int, name: str, batch_norm: bool):
    x = conv_bn_act(x, filters, name=f"{name}_1", batch_norm=batch_norm)
    return conv_bn_act(x, filters, name=f"{name}_2", batch_norm=batch_norm)


@register_model(
    "unet",
    small_config={"base_filters": 8, "depth": 3},
    paper_config={"num_classes": 2, "input_shape": (None, None, 1), "batch_norm": False},
    paper_params=31_030_000,  # "31.03M" for 1 input channel and 2 classes
)
def unet(
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | None = None,
    weights: str | None = None,
    base_filters: int = 64,
    depth: int = 4,
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> keras.Model:
    """U-Net (Ronneberger et al. 2015): symmetric encoder-decoder with skip concatenations.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, C)`, `None` for any size.
        backbone: must be `None` (the paper's own encoder).
        weights: must be `None`; the paper's U-Net has no pretrained encoder.
        base_filters: channels at the first level (64 in the paper); level i has
            `base_filters * 2**i`.
        depth: number of downsampling steps (4 in the paper); the input is padded to a
            multiple of `2**depth`.
        batch_norm: BatchNorm after each convolution (not in the paper).
        dropout: dropout rate before the bottleneck's upsampling (the paper uses 0.5 there).

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)`.

    Example:
        >>> model = keras_seg.build("unet", num_classes=2, input_shape=(None, None, 1))
    """
    if backbone is not None:
        raise ValueError(f"unet takes backbone=None (its own encoder), got {backbone!r}")
    if weights is not None:
        raise ValueError(f"unet has no pretrained weights; weights must be None, got {weights!r}")
    if not 1 <= depth <= 6:
        raise ValueError(f"depth must be between 1 and 6, got {depth!r}")
    if base_filters < 1:
        raise ValueError(f"base_filters must be >= 1, got {base_filters!r}")

    inputs = keras.Input(input_shape, name="images")

    def body(x):
        x = Normalize("tf", name="normalize")(x)
        skips = []
        for level in range(depth):
            x = _double_conv(x, base_filters * 2**level, f"enc{level + 1}", batch_norm)
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{level + 1}")(x)
        x = _double_conv(x, base_filters * 2**depth, "bottleneck", batch_norm)
        if dropout:
            x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
        for level in reversed(range(depth)):
            filters = base_filters * 2**level
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level + 1}")(x)
            x = layers.Concatenate(name=f"concat{level + 1}")([skips[level], x])
            x = _double_conv(x, filters, f"dec{level + 1}", batch_norm)
        return logits_head(x, num_classes)

    return keras.Model(inputs, stride_safe(inputs, 2**depth, body), name="unet")
