"""SegFormer: a Mix Transformer encoder and an all-MLP decoder.

Xie, Wang, Yu, Anandkumar, Alvarez, Luo. "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", NeurIPS 2021. https://arxiv.org/abs/2105.15203

The encoder is a MiT backbone (`keras_seg.backbones.mit`, "P2".."P5" at strides 4..32). The
decoder projects each level to `decoder_filters` channels with a Linear layer (a Dense on the
last axis), upsamples them bilinearly (half-pixel centres) to stride 4, concatenates them
deepest first, fuses them with a 1x1 convolution + BatchNorm + ReLU, applies dropout and a 1x1
logits convolution; the logits are upsampled bilinearly to the input size. This is Hugging
Face transformers' `SegformerForSemanticSegmentation` with the upsampling of its
`post_process_semantic_segmentation`, and its checkpoints load (`keras_seg.weights`).

There is no padding: like transformers, any size works because the patch-embedding
convolutions floor (stage 1 has `ceil(H / 4)` rows), so a size that is not a multiple of 32
gives the reference's logits too, not those of a padded image.

Parameter counts with 150 classes (ADE20K), equal to transformers' (tests/models):

| backbone | decoder_filters | parameters |
|----------|-----------------|------------|
| mit_b0   | 256             |  3,752,694 |
| mit_b1   | 256             | 13,715,798 |
| mit_b2   | 768             | 27,461,974 |
| mit_b3   | 768             | 47,337,814 |
| mit_b4   | 768             | 64,108,374 |
| mit_b5   | 768             | 84,708,694 |
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
from keras_seg.models.base import SegmentationModel
from keras_seg.registry import register_model

LEVELS = ("P2", "P3", "P4", "P5")
# Decoder width by backbone, as the paper (and transformers' configs): 256 for B0/B1.
DECODER_FILTERS = {"mit_b0": 256, "mit_b1": 256}
DEFAULT_DECODER_FILTERS = 768
_SMALL = {
    "backbone_kwargs": {"hidden_sizes": (8, 16, 20, 32), "depths": (1, 1, 1, 1)},
    "decoder_filters": 16,
}


@register_model(
    "segformer",
    small_config=_SMALL,
    paper_config={"num_classes": 150, "input_shape": (None, None, 3)},
    paper_params=3_752_694,  # transformers' SegformerForSemanticSegmentation, B0, 150 classes
)
def segformer(
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | None = "mit_b0",
    weights: str | None = None,
    decoder_filters: int | None = None,
    dropout: float = 0.1,
    backbone_kwargs: dict[str, Any] | None = None,
) -> keras.Model:
    """SegFormer (Xie et al. 2021): MiT encoder, all-MLP decoder at stride 4.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, C)`, `None` for any size.
        backbone: "mit_b0" (default) .. "mit_b5".
        weights: `None`; pretrained weights come from transformers checkpoints
            (`weights="hf://nvidia/segformer-b0-finetuned-ade-512-512"` or a folder, through
            `keras_seg.build`; `hf://nvidia/mit-b0` for the encoder).
        decoder_filters: width of the MLP decoder; default 256 for mit_b0/b1, 768 otherwise.
        dropout: dropout rate before the logits (transformers' `classifier_dropout_prob`).
        backbone_kwargs: MiT options (`hidden_sizes`, `depths`, `num_heads`).

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)`.

    Example:
        >>> model = keras_seg.build("segformer", num_classes=150, backbone="mit_b2")
    """
    backbone = backbone or "mit_b0"
    spec = get_backbone_spec(backbone)
    require_levels(backbone, LEVELS, "segformer")
    if weights is not None:
        raise ValueError(
            "segformer weights must be None here; pass a transformers checkpoint to "
            f"keras_seg.build(weights=...), got {weights!r}"
        )
    if decoder_filters is None:
        decoder_filters = DECODER_FILTERS.get(backbone, DEFAULT_DECODER_FILTERS)
    if (
        isinstance(decoder_filters, bool)
        or not isinstance(decoder_filters, int)
        or decoder_filters < 1
    ):
        raise ValueError(f"decoder_filters must be a positive integer, got {decoder_filters!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    inputs = keras.Input(input_shape, name="images")
    x = Normalize(spec.normalization, name="normalize")(inputs)
    encoder = build_backbone(
        backbone, input_shape=(None, None, input_shape[-1]), **(backbone_kwargs or {})
    )
    features = encoder(x)
    finest = features[LEVELS[0]]
    projected = []
    for i, level in enumerate(LEVELS):
        y = layers.Dense(decoder_filters, name=f"decoder_linear{i + 1}")(features[level])
        if i:
            y = ResizeToMatch(name=f"decoder_upsample{i + 1}")([y, finest])
        projected.append(y)
    y = layers.Concatenate(name="decoder_concat")(projected[::-1])
    y = conv_bn_act(y, decoder_filters, "decoder_fuse", kernel_size=1)
    if dropout:
        y = layers.Dropout(dropout, name="decoder_dropout")(y)
    logits = logits_head(y, num_classes)
    logits = ResizeToMatch(name="upsample_logits", dtype="float32")([logits, inputs])
    return SegmentationModel(inputs, logits, name=f"segformer_{backbone}")
