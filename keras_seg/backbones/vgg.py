"""VGG16 backbone.

Simonyan, Zisserman. "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015. https://arxiv.org/abs/1409.1556

Thirteen 3x3 convolutions in five blocks, each block ending in a 2x2 max-pool; the pyramid
is P1..P5 = block1_pool..block5_pool. We write the network ourselves rather than wrap
`keras.applications.VGG16`, which can neither shrink (`width`) nor add BatchNorm; layers carry
the same names (block1_conv1 ... block5_pool), so `weights="imagenet"` copies the weights of
`keras.applications.VGG16` layer by layer. `VGG16_BLOCKS` and `vgg16_encoder` are shared
with SegNet, whose encoder is this network with BatchNorm.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from keras_seg.backbones import register_backbone
from keras_seg.layers import FusedBatchNorm

# (convolutions, channels at width 64) per block; block k ends with block{k}_pool at stride 2**k.
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))

# The files keras.applications.VGG16 downloads to ~/.keras/models/ for weights="imagenet".
_IMAGENET_FILES = {
    False: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    True: "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
}


def block_channels(width: int) -> list[int]:
    """Output channels of each VGG16 block for `width` (64 gives 64, 128, 256, 512, 512)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer (64 = paper), got {width!r}")
    return [max(1, channels * width // 64) for _, channels in VGG16_BLOCKS]


def vgg_conv(x, filters: int, name: str, batch_norm: bool):
    """3x3 conv (`name`, with bias as in VGG/Caffe) -> optional BN (`name_bn`) -> ReLU.

    Without BatchNorm the ReLU is fused into the conv, as in `keras.applications.VGG16`.
    The conv keeps its bias even before BN (as SegNet's Caffe model does) so ImageNet
    VGG16 weights load into both variants.
    """
    if not batch_norm:
        return layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)
    x = layers.Conv2D(filters, 3, padding="same", name=name)(x)
    x = FusedBatchNorm(epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def vgg16_encoder(x, width: int = 64, batch_norm: bool = False) -> list[tuple[Any, Any]]:
    """Apply the VGG16 convolutions to `x`; returns `(pre_pool, pooled)` for each block."""
    stages = []
    for block, ((convs, _), filters) in enumerate(
        zip(VGG16_BLOCKS, block_channels(width), strict=True), start=1
    ):
        for conv in range(1, convs + 1):
            x = vgg_conv(x, filters, f"block{block}_conv{conv}", batch_norm)
        pre_pool = x
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
        stages.append((pre_pool, x))
    return stages


def imagenet_vgg16_weights(include_top: bool = False) -> dict[str, list[np.ndarray]]:
    """ImageNet weights of `keras.applications.VGG16` by layer name.

    With `include_top=True` the fully connected fc1/fc2 are also returned, "convolutionalized"
    as in FCN (Long et al. 2015): under the names fc6 (7x7 conv kernel) and fc7 (1x1).

    Raises:
        OSError: the weights could not be fetched; the message names the file.
    """
    try:
        source = keras.applications.VGG16(include_top=include_top, weights="imagenet")
    except Exception as e:  # download, cache or HDF5 errors all mean the same to the caller
        raise OSError(
            f"Could not load ImageNet weights for VGG16: keras.applications.VGG16("
            f"include_top={include_top}, weights='imagenet') needs {_IMAGENET_FILES[include_top]} "
            f"(downloaded to ~/.keras/models/ on first use): {type(e).__name__}: {e}"
        ) from e
    weights = {}
    for layer in source.layers:
        if not layer.weights:
            continue
        values = [np.asarray(v) for v in layer.get_weights()]
        if layer.name in ("fc1", "fc2"):
            kernel, bias = values
            if layer.name == "fc1":
                # Flatten of (7, 7, C) is row-major (h, w, c), so this is the 7x7 conv kernel.
                kernel = kernel.reshape(7, 7, kernel.shape[0] // 49, kernel.shape[-1])
            else:
                kernel = kernel.reshape(1, 1, *kernel.shape)
            weights["fc6" if layer.name == "fc1" else "fc7"] = [kernel, bias]
        elif layer.name.startswith("block"):
            weights[layer.name] = values
    return weights


def _find_layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            found = _find_layer(layer, name)
            if found is not None:
                return found
    return None


def load_imagenet_vgg16(model: keras.Model, include_top: bool = False) -> None:
    """Copy ImageNet VGG16 weights into `model`'s layers of the same names (nested models too).

    Raises:
        OSError: the weights could not be fetched.
        ValueError: `model` lacks a VGG16 layer or its weight shapes differ.
    """
    for name, values in imagenet_vgg16_weights(include_top).items():
        layer = _find_layer(model, name)
        if layer is None:
            raise ValueError(f"Model {model.name!r} has no layer {name!r} to take VGG16 weights")
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(
                f"Layer {name!r} of {model.name!r} has weight shapes {expected}, "
                f"ImageNet VGG16 has {got}"
            )
        layer.set_weights(values)


def check_imagenet_compatible(weights: str | None, width: int, input_shape) -> None:
    """Raise a clear error if `weights` is not None/"imagenet" or can't fit this VGG16."""
    if weights not in (None, "imagenet"):
        raise ValueError(f"VGG16 weights must be None or 'imagenet', got {weights!r}")
    if weights == "imagenet":
        if width != 64:
            raise ValueError(f"weights='imagenet' needs width=64 (the ImageNet VGG16), got {width}")
        if input_shape[-1] != 3:
            raise ValueError(
                f"weights='imagenet' needs 3 input channels (RGB), got input_shape {input_shape}"
            )


# Which VGG outputs form the pyramid: "pools" (each block's max-pool: P_k = block{k}_pool),
# or "deepest" (the last feature at each stride, as timm's features_only and SMP's VGG
# encoder take it: P_k = block{k+1}'s last convolution for k = 1..4, P5 = block5_pool).
VGG_PYRAMIDS = ("pools", "deepest")


@register_backbone("vgg16", normalization="caffe", output_strides=(32,), small_config={"width": 8})
def vgg16(
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    weights: str | None = None,
    output_stride: int = 32,
    width: int = 64,
    batch_norm: bool = False,
    pyramid: str = "pools",
) -> keras.Model:
    """VGG16 feature pyramid: {"P1": block1_pool, ..., "P5": block5_pool}.

    Args:
        input_shape: `(H, W, C)` of pixels already normalised with the "caffe" scheme.
        weights: `None` or `"imagenet"` (copied from `keras.applications.VGG16`; needs
            `width=64`; with `batch_norm` only the convolutions are pretrained).
        output_stride: must be 32 (VGG16 has no atrous variant here).
        width: channels of the first block (64 in the paper); every block scales with it.
        batch_norm: BatchNorm after each convolution (VGG16-BN, as in SegNet's encoder).
        pyramid: "pools" or "deepest", see `VGG_PYRAMIDS`.

    Returns:
        Functional `keras.Model` named "vgg16" with dict outputs "P1".."P5".

    Example:
        >>> backbone = keras_seg.backbones.build_backbone("vgg16", weights="imagenet")
    """
    if output_stride != 32:
        raise ValueError(f"vgg16 supports output_stride 32 only, got {output_stride!r}")
    check_imagenet_compatible(weights, width, input_shape)
    if pyramid not in VGG_PYRAMIDS:
        raise ValueError(f"pyramid must be one of {VGG_PYRAMIDS}, got {pyramid!r}")
    inputs = keras.Input(input_shape, name="images")
    stages = vgg16_encoder(inputs, width=width, batch_norm=batch_norm)
    if pyramid == "pools":
        outputs = {f"P{k}": pooled for k, (_, pooled) in enumerate(stages, start=1)}
    else:
        outputs = {f"P{k}": stages[k][0] for k in range(1, 5)} | {"P5": stages[4][1]}
    model = keras.Model(inputs, outputs, name="vgg16")
    if weights == "imagenet":
        load_imagenet_vgg16(model)
    return model


@register_backbone(
    "vgg16_torchvision",
    normalization="torch",
    output_strides=(32,),
    small_config={"width": 8, "batch_norm": True},
)
def vgg16_torchvision(
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    weights: str | None = None,
    output_stride: int = 32,
    width: int = 64,
    batch_norm: bool = False,
    pyramid: str = "pools",
) -> keras.Model:
    """VGG16 for torchvision/timm checkpoints (`vgg16`, `vgg16_bn`): the same layers as
    `vgg16`, with the "torch" (RGB, ImageNet mean/std) normalisation their weights expect.

    Args:
        input_shape, output_stride, width, batch_norm, pyramid: as `vgg16`.
        weights: `None`; load a torchvision/timm checkpoint with `keras_seg.weights`
            (`build_backbone("vgg16_torchvision", weights="vgg16-397923af.pth")`).

    Returns:
        Functional `keras.Model` named "vgg16_torchvision" with dict outputs "P1".."P5".
    """
    if weights is not None:
        raise ValueError(
            "vgg16_torchvision takes weights=None or a torchvision/timm checkpoint file; "
            f"'imagenet' (Keras' Caffe-normalised weights) belongs to 'vgg16', got {weights!r}"
        )
    model = vgg16(input_shape, None, output_stride, width, batch_norm, pyramid)
    return keras.Model(model.input, model.output, name="vgg16_torchvision")
