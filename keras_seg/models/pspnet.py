"""PSPNet: pyramid scene parsing.

Zhao, Shi, Qi, Wang, Jia. "Pyramid Scene Parsing Network", CVPR 2017.
https://arxiv.org/abs/1612.01105

A dilated ResNet at output stride 8 (the torchvision-layout `resnet50_torchvision` /
`resnet101_torchvision`, atrous convolution in conv4 and conv5), then the pyramid pooling
module on its last features: for each bin count (1, 2, 3, 6) adaptive average pooling
(`keras_seg.layers.AdaptiveAveragePooling2D`, PyTorch's bin boundaries), 1x1 conv + BN + ReLU
to in_channels / 4 (512 for 2048), bilinear upsampling back to the feature size; the four
are concatenated with the features, then 3x3 conv 512 + BN + ReLU, dropout 0.1, 1x1 logits,
bilinear upsampling to the input size. `aux_head=True` adds the paper's deep supervision for
training: an FCN head on the conv4 features (P4: 3x3 conv 256 + BN + ReLU, dropout 0.1, 1x1
logits, upsampled), weighted 0.4 in the loss, and the model returns
`{"logits", "aux_logits"}`; inference and export use the default single output.

The stem is the plain 7x7 ResNet stem by default (ImageNet checkpoints of torchvision / timm
load); `backbone_kwargs={"stem": "deep"}` gives the paper's Caffe model's and mmsegmentation's
"ResNetV1c" stem of three 3x3 convolutions (timm's `resnet50c` weights).

Parameters (learnable, as PyTorch counts them), mmsegmentation `pspnet_r50-d8` on
Cityscapes (19 classes, ResNetV1c-50, PSPHead 512, FCNHead aux 1024 -> 256, no conv bias
before BatchNorm): backbone 23,527,264 (torchvision's ResNet-50 without fc, 23,508,032, plus
19,232 for the deep stem); PSP head 4 x 1,049,600 + 18,875,392 + 9,747 = 23,083,539; aux head
2,359,808 + 4,883 = 2,364,691; 48,975,494 in all (`PAPER_PARAMS`). Ours with the deep stem has exactly
that; with the plain stem, 48,956,262 (0.04% fewer); `count_params()` also counts BatchNorm statistics (49,015,014).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.layers import CropToMatch
from keras_seg.layers import Normalize
from keras_seg.layers import PadToMultiple
from keras_seg.layers import ResizeToMatch
from keras_seg.layers import conv_bn_act
from keras_seg.layers import logits_head
from keras_seg.layers import pyramid_pooling
from keras_seg.layers.pooling import PYRAMID_BINS
from keras_seg.models.base import SegmentationModel
from keras_seg.registry import register_model

DEFAULT_BACKBONE = "resnet50_torchvision"
# mmsegmentation pspnet_r50-d8 (Cityscapes, aux head) learnable parameters, derived in the
# module docstring; keras counts BatchNorm statistics too, so tests compare trainable ones.
PAPER_PARAMS = 48_975_494
_SMALL = {
    "backbone": "resnet18",
    "backbone_kwargs": {"width": 8},
    "pyramid_filters": 8,
    "head_filters": 16,
    "aux_filters": 8,
}


@register_model(
    "pspnet",
    small_config=_SMALL,
    paper_config={"num_classes": 19, "aux_head": True},
    paper_params=PAPER_PARAMS,
)
def pspnet(
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | None = DEFAULT_BACKBONE,
    weights: str | None = None,
    output_stride: int = 8,
    pyramid_bins: tuple[int, ...] = PYRAMID_BINS,
    pyramid_filters: int | None = None,
    head_filters: int = 512,
    dropout: float = 0.1,
    aux_head: bool = False,
    aux_filters: int = 256,
    backbone_kwargs: dict[str, Any] | None = None,
) -> keras.Model:
    """PSPNet (Zhao et al. 2017): dilated ResNet and the pyramid pooling module.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, C)`, `None` for any size.
        backbone: a registered backbone with output stride 8/16 (`resnet50_torchvision`
            default, `resnet101_torchvision`, `resnet18`, ...).
        weights: `None`, `"imagenet"` (keras.applications backbones) or a torchvision /
            timm checkpoint of the backbone (see `keras_seg.build`).
        output_stride: 8 (paper) or 16.
        pyramid_bins: bin counts of the pooling branches ((1, 2, 3, 6)).
        pyramid_filters: channels of each pooling branch; `None` is the backbone's
            channels / len(pyramid_bins) (512 on ResNet-50).
        head_filters: channels of the 3x3 convolution after the concatenation (512).
        dropout: dropout before the logits (0.1).
        aux_head: add the auxiliary FCN head on P4 for training; the model then returns
            `{"logits", "aux_logits"}`. `keras-seg train` weights the aux loss by
            `train.aux_loss_weight` (0.4 as in the paper) and saves the model without the
            head; in your own loop, `compile(loss={...}, loss_weights={"logits": 1,
            "aux_logits": 0.4})`.
        aux_filters: channels of the auxiliary head's 3x3 convolution (256).
        backbone_kwargs: extra backbone options (`width` for resnet18/34, ...).

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)` (a dict with
        "aux_logits" too when `aux_head`).

    Example:
        >>> model = keras_seg.build("pspnet", num_classes=19)
    """
    backbone = backbone or DEFAULT_BACKBONE
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
    bins = tuple(pyramid_bins)
    if not bins or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bins):
        raise ValueError(f"pyramid_bins must be positive integers, got {pyramid_bins!r}")
    if pyramid_filters is not None and (
        isinstance(pyramid_filters, bool)
        or not isinstance(pyramid_filters, int)
        or pyramid_filters < 1
    ):
        raise ValueError(
            f"pyramid_filters must be a positive integer or None, got {pyramid_filters!r}"
        )
    for arg, value in [("head_filters", head_filters), ("aux_filters", aux_filters)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    spec = get_backbone_spec(backbone)
    features = build_backbone(
        backbone,
        input_shape=(None, None, input_shape[-1]),
        weights=weights,
        output_stride=output_stride,
        **(backbone_kwargs or {}),
    )
    channels = features.output["P5"].shape[-1]
    branch_filters = pyramid_filters or max(channels // len(bins), 1)

    def head(x, filters: int, name: str):
        y = conv_bn_act(x, filters, f"{name}_conv")
        if dropout:
            y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
        return logits_head(y, num_classes, name=f"{name}_logits")

    def body(x):
        pyramid = features(x)
        y = pyramid_pooling(pyramid["P5"], branch_filters, bins)
        outputs = {"logits": head(y, head_filters, "head")}
        if aux_head:
            outputs["aux_logits"] = head(pyramid["P4"], aux_filters, "aux")
        return {
            key: ResizeToMatch(name=f"upsample_{key}", dtype="float32")([y, x])
            for key, y in outputs.items()
        }

    inputs = keras.Input(input_shape, name="images")
    x = Normalize(spec.normalization, name="normalize")(inputs)
    # As `stride_safe`, for one or two outputs: pad to the output stride, crop back.
    padded = PadToMultiple(output_stride, name="pad_to_stride")(x)
    outputs = {
        key: CropToMatch(name=f"crop_{key}_to_input", dtype="float32")([y, x])
        for key, y in body(padded).items()
    }
    return SegmentationModel(inputs, outputs if aux_head else outputs["logits"], name="pspnet")
