"""U-Net, with the paper's encoder or any registered backbone.

Ronneberger, Fischer, Brox. "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015. https://arxiv.org/abs/1505.04597

Paper network (`backbone=None`): four 2x2 max-pool downsampling steps (64 -> 1024 channels),
two 3x3 convolutions per level, 2x2 transposed-convolution "up-convolutions" that halve the
channels, skip concatenations, and a 1x1 classifier: about 31.03M parameters for 1 input
channel and 2 classes. We use "same" padding so the output matches the input (the paper's
valid convolutions crop the border); the parameter count is the same. `batch_norm=True`
(default) adds BatchNorm after each convolution, as every modern U-Net does;
`batch_norm=False` gives exactly the paper's layers.

With a backbone (`backbone="resnet34"`, ...) the encoder is the backbone's P1..P5 pyramid and
the decoder is segmentation_models.pytorch's `Unet` decoder: five steps with
`decoder_filters` (256, 128, 64, 32, 16) channels, each a 2x nearest upsampling, a
concatenation with the skip (P4, P3, P2, P1, none) and two 3x3 conv-BN-ReLU, then 1x1 logits.
For resnet34 and 21 classes this has 24,436,581 trainable parameters; SMP's
`Unet("resnet34", classes=21)` has 24,439,269 because its head is a 3x3 convolution
(`head_kernel_size=3` builds that, and SMP checkpoints load into it: `keras_seg.weights`).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.backbones import require_levels
from keras_seg.layers import Normalize
from keras_seg.layers import conv_bn_act
from keras_seg.layers import logits_head
from keras_seg.layers import stride_safe
from keras_seg.models.base import SegmentationModel
from keras_seg.registry import register_model

# Pyramid level concatenated at each decoder step of the backbone U-Net (coarse to fine);
# the last step (stride 2 -> 1) has no skip, as in SMP.
PYRAMID_SKIPS: tuple[str | None, ...] = ("P4", "P3", "P2", "P1", None)
DEFAULT_DECODER_FILTERS: tuple[int, ...] = (256, 128, 64, 32, 16)


def _double_conv(x, filters: int, name: str, batch_norm: bool):
    x = conv_bn_act(x, filters, name=f"{name}_1", batch_norm=batch_norm)
    return conv_bn_act(x, filters, name=f"{name}_2", batch_norm=batch_norm)


def _paper_body(x, num_classes: int, base_filters: int, depth: int, batch_norm: bool, dropout):
    """The paper's encoder-decoder on padded pixels -> logits."""
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


def _pyramid_body(
    x,
    num_classes: int,
    backbone: str,
    weights: str | None,
    decoder_filters: tuple[int, ...],
    batch_norm: bool,
    dropout: float,
    backbone_kwargs: dict[str, Any],
    head_kernel_size: int,
    center_block: bool,
):
    """SMP-style U-Net decoder on the backbone's P1..P5 pyramid -> logits."""
    x = Normalize(get_backbone_spec(backbone).normalization, name="normalize")(x)
    encoder = build_backbone(
        backbone, input_shape=tuple(x.shape[1:]), weights=weights, **backbone_kwargs
    )
    features = encoder(x)
    x = features["P5"]
    if center_block:
        x = _double_conv(x, x.shape[-1], "center", batch_norm)
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for step, (filters, skip) in enumerate(zip(decoder_filters, PYRAMID_SKIPS, strict=True)):
        name = f"decoder{step + 1}"
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up")(x)
        if skip is not None:
            x = layers.Concatenate(name=f"{name}_concat")([x, features[skip]])
        x = _double_conv(x, filters, name, batch_norm)
    return logits_head(x, num_classes, kernel_size=head_kernel_size)


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
    decoder_filters: tuple[int, ...] | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    head_kernel_size: int = 1,
    center_block: bool = False,
) -> keras.Model:
    """U-Net (Ronneberger et al. 2015): encoder-decoder with skip concatenations.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, C)`, `None` for any size.
        backbone: `None` for the paper's own encoder, or a registered backbone name
            (`keras_seg.backbones.list_backbones()`, e.g. "resnet34") for an SMP-style U-Net
            on its P1..P5 pyramid.
        weights: `None`, or "imagenet" for the backbone's pretrained weights (backbone only;
            the paper's U-Net has none).
        base_filters: paper encoder only: channels at the first level (64 in the paper);
            level i has `base_filters * 2**i`.
        depth: paper encoder only: number of downsampling steps (4 in the paper); the input
            is padded to a multiple of `2**depth`.
        batch_norm: BatchNorm after each decoder (and paper encoder) convolution.
        dropout: dropout rate on the bottleneck (the paper uses 0.5 there).
        decoder_filters: backbone only: channels of the five decoder steps, stride 16 to 1
            (default `(256, 128, 64, 32, 16)`, as SMP).
        backbone_kwargs: backbone only: extra options of the backbone builder
            (e.g. `{"width": 16}` for resnet18/34).
        head_kernel_size: backbone only: kernel of the logits convolution (1; SMP uses 3).
        center_block: backbone only: two 3x3 conv-BN-ReLU on P5 before the decoder (SMP's
            U-Net has them on VGG encoders).

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)`.

    Example:
        >>> model = keras_seg.build("unet", num_classes=2, input_shape=(None, None, 1))
        >>> model = keras_seg.build("unet", num_classes=21, backbone="resnet34")
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    inputs = keras.Input(input_shape, name="images")
    if backbone is None:
        if weights is not None:
            raise ValueError(
                "unet without a backbone has no pretrained weights; weights must be None, "
                f"got {weights!r}"
            )
        if (
            decoder_filters is not None
            or backbone_kwargs is not None
            or head_kernel_size != 1
            or center_block
        ):
            raise ValueError(
                "decoder_filters, backbone_kwargs, head_kernel_size and center_block need a backbone (e.g. "
                f"backbone='resnet34'), got backbone=None with decoder_filters={decoder_filters!r}, "
                f"backbone_kwargs={backbone_kwargs!r}, head_kernel_size={head_kernel_size!r}"
            )
        if not 1 <= depth <= 6:
            raise ValueError(f"depth must be between 1 and 6, got {depth!r}")
        if base_filters < 1:
            raise ValueError(f"base_filters must be >= 1, got {base_filters!r}")

        def body(x):
            return _paper_body(x, num_classes, base_filters, depth, batch_norm, dropout)

        return SegmentationModel(inputs, stride_safe(inputs, 2**depth, body), name="unet")

    if (base_filters, depth) != (64, 4):
        raise ValueError(
            "base_filters and depth shape the paper encoder only; with "
            f"backbone={backbone!r} use decoder_filters, got base_filters={base_filters!r}, "
            f"depth={depth!r}"
        )
    decoder_filters = tuple(DEFAULT_DECODER_FILTERS if decoder_filters is None else decoder_filters)
    if len(decoder_filters) != len(PYRAMID_SKIPS) or not all(
        isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in decoder_filters
    ):
        raise ValueError(
            f"decoder_filters must be {len(PYRAMID_SKIPS)} positive ints (stride 16 to 1), "
            f"got {decoder_filters!r}"
        )
    get_backbone_spec(backbone)  # an unknown name fails here, listing the known ones
    require_levels(backbone, ("P1", "P2", "P3", "P4", "P5"), "unet")
    if head_kernel_size not in (1, 3):
        raise ValueError(f"head_kernel_size must be 1 or 3, got {head_kernel_size!r}")

    def body(x):
        return _pyramid_body(
            x,
            num_classes,
            backbone,
            weights,
            decoder_filters,
            batch_norm,
            dropout,
            dict(backbone_kwargs or {}),
            head_kernel_size,
            center_block,
        )

    return SegmentationModel(inputs, stride_safe(inputs, 32, body), name=f"unet_{backbone}")
