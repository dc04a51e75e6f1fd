"""HRNetV2 for semantic segmentation.

Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang, Liu, Xiao. "Deep High-Resolution
Representation Learning for Visual Recognition", TPAMI 2020. https://arxiv.org/abs/1908.07919

The HRNetV2 representation and head: the four branch outputs of an HRNet backbone
(`keras_seg.backbones.hrnet`; P2..P5, strides 4..32) bilinearly upsampled to stride 4 and
concatenated (15C channels: 720 for W48), a 1x1 conv + BN + ReLU keeping the channels, 1x1
logits, bilinear upsampling to the input size (mmsegmentation's `fcn_hr48` head: its
`FCNHead` with `input_transform="resize_concat"`, one 1x1 convolution, no dropout). Any
backbone with P2..P5 works; the input is padded to a multiple of 32 and the logits cropped.

Parameters: HRNetV2-W48 on Cityscapes (19 classes), 65.9M in the paper (Table 3); ours
65,858,659 learnable (timm's hrnet_w48 without its classification head, 65,325,120, plus
the head) -> `PAPER_PARAMS`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.layers import Normalize
from keras_seg.layers import ResizeToMatch
from keras_seg.layers import conv_bn_act
from keras_seg.layers import logits_head
from keras_seg.layers import stride_safe
from keras_seg.models.base import SegmentationModel
from keras_seg.registry import register_model

DEFAULT_BACKBONE = "hrnetv2_w48"
PAPER_PARAMS = 65_900_000
LEVELS = ("P2", "P3", "P4", "P5")
_SMALL = {"backbone": "hrnetv2_w18_small", "head_filters": 16}


@register_model(
    "hrnet",
    small_config=_SMALL,
    paper_config={"num_classes": 19},
    paper_params=PAPER_PARAMS,
)
def hrnet(
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | None = DEFAULT_BACKBONE,
    weights: str | None = None,
    head_filters: int | None = None,
    align_corners: bool = False,
    backbone_kwargs: dict[str, Any] | None = None,
) -> keras.Model:
    """HRNetV2 (Wang et al. 2020): all four resolutions concatenated at stride 4.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, C)`, `None` for any size.
        backbone: `hrnetv2_w48` (default), `hrnetv2_w32`, `hrnetv2_w18`,
            `hrnetv2_w18_small(_v2)`, or any backbone with P2..P5.
        weights: `None` or a timm HRNet checkpoint of the backbone (see `keras_seg.build`).
        head_filters: channels of the 1x1 conv + BN + ReLU after the concatenation; `None`
            keeps the concatenated channels (720 for W48), as the paper.
        align_corners: bilinear upsampling with aligned corners (HRNet's official code)
            instead of half-pixel centres (mmsegmentation).
        backbone_kwargs: extra backbone options.

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)`.

    Example:
        >>> model = keras_seg.build("hrnet", num_classes=19, backbone="hrnetv2_w18")
    """
    backbone = backbone or DEFAULT_BACKBONE
    if head_filters is not None and (
        isinstance(head_filters, bool) or not isinstance(head_filters, int) or head_filters < 1
    ):
        raise ValueError(f"head_filters must be a positive integer or None, got {head_filters!r}")
    spec = get_backbone_spec(backbone)
    features = build_backbone(
        backbone,
        input_shape=(None, None, input_shape[-1]),
        weights=weights,
        **(backbone_kwargs or {}),
    )
    channels = sum(features.output[level].shape[-1] for level in LEVELS)

    def body(x):
        pyramid = features(x)
        finest = pyramid[LEVELS[0]]
        branches = [finest] + [
            ResizeToMatch(align_corners=align_corners, name=f"head_upsample_{level}")(
                [pyramid[level], finest]
            )
            for level in LEVELS[1:]
        ]
        y = layers.Concatenate(name="head_concat")(branches)
        y = conv_bn_act(y, head_filters or channels, "head", kernel_size=1)
        logits = logits_head(y, num_classes)
        return ResizeToMatch(align_corners=align_corners, name="upsample_logits", dtype="float32")(
            [logits, x]
        )

    inputs = keras.Input(input_shape, name="images")
    x = Normalize(spec.normalization, name="normalize")(inputs)
    return SegmentationModel(inputs, stride_safe(x, 32, body), name="hrnet")
