"""FCN-32s, FCN-16s and FCN-8s on VGG16.

Long, Shelhamer, Darrell. "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 / PAMI 2016. https://arxiv.org/abs/1411.4038

The VGG16 classifier is "convolutionalized": fc6 becomes a 7x7x4096 convolution and fc7 a
1x1x4096 one (ReLU + dropout 0.5 each). A 1x1 `score_fr` layer gives class scores at stride
32; FCN-16s and FCN-8s upsample them 2x with a learned transposed convolution and add 1x1
scores of pool4 (and then pool3), and a final transposed convolution upsamples to the input.
All transposed convolutions have no bias (as in Caffe) and start as bilinear interpolation;
as in the paper, the intermediate ones are learned and the final one stays fixed bilinear
(`learn_final_upsampling=True` trains it too). The variants differ only by `FCN_VARIANTS`.

Unlike the reference Caffe models, which pad the input by 100 pixels, use "valid"
convolutions and crop every fused map, we use "same" padding everywhere and pad the input
(bottom/right) to a multiple of 32 inside the model, then crop the logits back
(`keras_seg.layers.stride_safe`): all maps then align exactly at strides 8/16/32 and no
offsets are needed. The layers and parameter count are those of the paper (fcn8s with 21
classes: 134,489,759 parameters, of which 112,896 in the fixed upscore8).
"""

from __future__ import annotations

import keras
from keras import layers

from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.backbones.vgg import check_imagenet_compatible
from keras_seg.backbones.vgg import load_imagenet_vgg16
from keras_seg.layers import Normalize
from keras_seg.layers import stride_safe
from keras_seg.layers.initializers import BilinearUpsampling
from keras_seg.models.base import SegmentationModel
from keras_seg.registry import register_model

# name -> (skip features fused coarse to fine, as (skip name, pyramid level); final upsampling).
FCN_VARIANTS: dict[str, tuple[tuple[tuple[str, str], ...], int]] = {
    "fcn32s": ((), 32),
    "fcn16s": ((("pool4", "P4"),), 16),
    "fcn8s": ((("pool4", "P4"), ("pool3", "P3")), 8),
}
_SMALL_CONFIG = {"width": 8, "fc_channels": 32}
_PAPER_CONFIG = {"num_classes": 21, "input_shape": (None, None, 3)}
# Learnable + fixed parameters for 21 classes. Paper Table 1 gives 134M for FCN-VGG16; the
# other figures add the score/upsampling layers of the reference prototxts (voc-fcn*s).
_PAPER_PARAMS = {"fcn32s": 136_150_000, "fcn16s": 134_800_000, "fcn8s": 134_400_000}


def _upsample(x, num_classes: int, factor: int, name: str, trainable: bool = True):
    """Bias-free transposed conv (kernel 2*factor, stride factor) initialised to bilinear."""
    return layers.Conv2DTranspose(
        num_classes,
        2 * factor,
        strides=factor,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearUpsampling(),
        trainable=trainable,
        name=name,
    )(x)


def _score(x, num_classes: int, name: str):
    return layers.Conv2D(num_classes, 1, name=name)(x)


def _build_fcn(
    variant: str,
    num_classes: int,
    input_shape: tuple[int | None, int | None, int],
    backbone: str | None,
    weights: str | None,
    fc_channels: int,
    width: int,
    dropout: float,
    learn_final_upsampling: bool,
) -> keras.Model:
    if backbone not in (None, "vgg16"):
        raise ValueError(f"{variant} takes backbone None or 'vgg16', got {backbone!r}")
    check_imagenet_compatible(weights, width, input_shape)
    if weights == "imagenet" and fc_channels != 4096:
        raise ValueError(
            f"weights='imagenet' needs fc_channels=4096 (VGG16's fc6/fc7), got {fc_channels}"
        )
    if fc_channels < 1:
        raise ValueError(f"fc_channels must be >= 1, got {fc_channels!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    skips, final_factor = FCN_VARIANTS[variant]
    normalization = get_backbone_spec("vgg16").normalization
    inputs = keras.Input(input_shape, name="images")

    def body(x):
        x = Normalize(normalization, name="normalize")(x)
        trunk = build_backbone("vgg16", input_shape=tuple(x.shape[1:]), width=width)
        features = trunk(x)
        x = layers.Conv2D(fc_channels, 7, padding="same", activation="relu", name="fc6")(
            features["P5"]
        )
        if dropout:
            x = layers.Dropout(dropout, name="drop6")(x)
        x = layers.Conv2D(fc_channels, 1, activation="relu", name="fc7")(x)
        if dropout:
            x = layers.Dropout(dropout, name="drop7")(x)
        score = _score(x, num_classes, "score_fr")
        upscore_name = "upscore2"
        for skip, level in skips:
            score = _upsample(score, num_classes, 2, upscore_name)
            skip_score = _score(features[level], num_classes, f"score_{skip}")
            score = layers.Add(name=f"fuse_{skip}")([score, skip_score])
            upscore_name = f"upscore_{skip}"
        return _upsample(
            score,
            num_classes,
            final_factor,
            f"upscore{final_factor}",
            trainable=learn_final_upsampling,
        )

    model = SegmentationModel(inputs, stride_safe(inputs, 32, body), name=variant)
    if weights == "imagenet":
        # VGG16 convolutions and its fc1/fc2 reshaped into fc6/fc7, as the paper does.
        load_imagenet_vgg16(model, include_top=True)
    return model


def _register(variant: str):
    skips, factor = FCN_VARIANTS[variant]
    fused = " and ".join(name for name, _ in skips) + " skips" if skips else "no skips"

    @register_model(
        variant,
        small_config=_SMALL_CONFIG,
        paper_config=_PAPER_CONFIG,
        paper_params=_PAPER_PARAMS[variant],
    )
    def builder(
        num_classes: int,
        input_shape: tuple[int | None, int | None, int] = (None, None, 3),
        backbone: str | None = "vgg16",
        weights: str | None = None,
        fc_channels: int = 4096,
        width: int = 64,
        dropout: float = 0.5,
        learn_final_upsampling: bool = False,
    ) -> keras.Model:
        return _build_fcn(
            variant,
            num_classes,
            input_shape,
            backbone,
            weights,
            fc_channels,
            width,
            dropout,
            learn_final_upsampling,
        )

    builder.__name__ = builder.__qualname__ = variant
    builder.__doc__ = f"""{variant.upper()[:3]}-{variant[3:]} (Long et al. 2015): VGG16, {fused}, {factor}x final upsampling.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, 3)` RGB pixels 0..255, `None` for any size.
        backbone: `None` or "vgg16" (the paper's trunk; the only one supported).
        weights: `None`, or "imagenet" for VGG16's convolutions and fc1/fc2 as fc6/fc7
            (needs `width=64`, `fc_channels=4096`).
        fc_channels: channels of fc6 (7x7 conv) and fc7 (1x1 conv); 4096 in the paper.
        width: VGG16 first-block channels (64 in the paper); all blocks scale with it.
        dropout: dropout rate after fc6 and fc7 (0.5 in the paper; 0 removes the layers).
        learn_final_upsampling: train the final {factor}x bilinear upsampling (fixed in the paper).

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)`.

    Example:
        >>> model = keras_seg.build("{variant}", num_classes=21, weights="imagenet")
    """
    return builder


fcn32s = _register("fcn32s")
fcn16s = _register("fcn16s")
fcn8s = _register("fcn8s")
