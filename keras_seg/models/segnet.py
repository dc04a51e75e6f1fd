"""SegNet.

Badrinarayanan, Kendall, Cipolla. "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", PAMI 2017. https://arxiv.org/abs/1511.00561

Encoder: the 13 convolutions of VGG16, each followed by BatchNorm and ReLU, with 2x2 max-pools
(layers named as in `keras.applications.VGG16`, so `weights="imagenet"` initialises the
encoder convolutions as the paper does). Decoder: the mirror image, as in the official Caffe
prototxt (SegNet-Tutorial `segnet_train.prototxt`): each block upsamples with the pooling
indices of the matching encoder block (`MaxUnpooling2D`, no learned upsampling, no
UpSampling2D), then runs 3x3 conv + BN + ReLU layers conv5_3_D ... conv1_2_D whose last one
per block steps down to the next block's channels; conv1_1_D is a plain 3x3 convolution to
the class logits. With 11 classes (CamVid) this is 29.45M parameters (learnable;
plus 15,872 BatchNorm moving statistics). The input is padded to a multiple of 32 inside the
model so every pool sees even sizes, and the logits are cropped back.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_seg.backbones import get_backbone_spec
from keras_seg.backbones.vgg import VGG16_BLOCKS
from keras_seg.backbones.vgg import block_channels
from keras_seg.backbones.vgg import check_imagenet_compatible
from keras_seg.backbones.vgg import load_imagenet_vgg16
from keras_seg.backbones.vgg import vgg16_encoder
from keras_seg.backbones.vgg import vgg_conv
from keras_seg.layers import Normalize
from keras_seg.layers import stride_safe
from keras_seg.layers.unpooling import MaxUnpooling2D
from keras_seg.models.base import SegmentationModel
from keras_seg.registry import register_model


@register_model(
    "segnet",
    small_config={"width": 8},
    paper_config={"num_classes": 11, "input_shape": (None, None, 3)},
    paper_params=29_450_000,  # learnable, official Caffe model (conv bias + BN scale/shift)
)
def segnet(
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | None = None,
    weights: str | None = None,
    width: int = 64,
) -> keras.Model:
    """SegNet (Badrinarayanan et al. 2017): VGG16-BN encoder, decoder unpooling by max-pool indices.

    Args:
        num_classes: number of output classes.
        input_shape: `(H, W, 3)` RGB pixels 0..255, `None` for any size.
        backbone: must be `None` (SegNet is its own VGG16-BN encoder).
        weights: `None`, or "imagenet" to initialise the encoder convolutions from VGG16
            (needs `width=64`; BatchNorm layers start fresh).
        width: channels of the first block (64 in the paper); every block scales with it.

    Returns:
        Functional `keras.Model` with float32 logits `(B, H, W, num_classes)`.

    Example:
        >>> model = keras_seg.build("segnet", num_classes=11, weights="imagenet")
    """
    if backbone is not None:
        raise ValueError(f"segnet takes backbone=None (its own VGG16-BN encoder), got {backbone!r}")
    check_imagenet_compatible(weights, width, input_shape)
    channels = block_channels(width)
    inputs = keras.Input(input_shape, name="images")

    def body(x):
        x = Normalize(get_backbone_spec("vgg16").normalization, name="normalize")(x)
        stages = vgg16_encoder(x, width=width, batch_norm=True)
        x = stages[-1][1]
        for block in reversed(range(1, len(VGG16_BLOCKS) + 1)):
            convs = VGG16_BLOCKS[block - 1][0]
            x = MaxUnpooling2D(name=f"upsample{block}")([x, stages[block - 1][0]])
            for conv in reversed(range(1, convs + 1)):
                name = f"conv{block}_{conv}_D"
                if conv > 1:
                    x = vgg_conv(x, channels[block - 1], name, batch_norm=True)
                elif block > 1:
                    x = vgg_conv(x, channels[block - 2], name, batch_norm=True)
                else:
                    x = layers.Conv2D(num_classes, 3, padding="same", name=name)(x)
        return x

    model = SegmentationModel(inputs, stride_safe(inputs, 32, body), name="segnet")
    if weights == "imagenet":
        load_imagenet_vgg16(model)
    return model
