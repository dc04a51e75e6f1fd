"""HRNetV2 backbones: hrnetv2_w18_small, hrnetv2_w18_small_v2, hrnetv2_w18, _w32, _w48.

Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang, Liu, Xiao. "Deep High-Resolution
Representation Learning for Visual Recognition", TPAMI 2020. https://arxiv.org/abs/1908.07919

Built exactly as timm's `hrnet_w*` (timm/models/hrnet.py, from HRNet-Image-Classification),
so timm's ImageNet checkpoints load (`keras_seg.weights.hrnet`): a stem of two 3x3 stride-2
convolutions (stride 4), stage 1 of bottlenecks, then stages 2, 3, 4 with 2, 3, 4 parallel
branches (widths C, 2C, 4C, 8C) of basic blocks. Each module of a stage runs its branches,
then fuses them: branch i receives the sum of every branch j, through a 1x1 conv + BN and
nearest upsampling when j is coarser, a chain of 3x3 stride-2 conv + BN (ReLU between) when j
is finer, then a ReLU. A transition starts each new branch from the coarsest one by a 3x3
stride-2 conv + BN + ReLU. BatchNorm momentum 0.1 and eps 1e-5 (PyTorch's, as timm).

Every layer is named after timm's module path (`conv1`, `layer1.0.conv2`,
`stage3.1.branches.2.0.bn1`, `stage4.0.fuse_layers.0.3.0`, ...), so the key map is the
identity. Strided convolutions pad 1 on every side as PyTorch does (TF "same" would pad
bottom/right only). The fuse upsampling resizes to the finer branch's size (nearest, equal to
PyTorch's `scale_factor` upsampling wherever timm runs), so the backbone takes any input
size, where timm needs the stride-32 sizes to divide evenly.

Pyramid: P1 = the stem's first conv (stride 2, 64 channels; timm's `features_only`
feature 0), P2..P5 = the four branch outputs of stage 4 (strides 4, 8, 16, 32; timm's
`feature_location=""` features; HRNetV2's segmentation head concatenates them). timm's
classification head (`incre_modules`, `downsamp_modules`, `final_layer`, `classifier`) is
not built. Output stride is 32 only (HRNet keeps its high resolution in its branches).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
from keras import layers

from keras_seg.backbones import register_backbone
from keras_seg.layers import ResizeToMatch
from keras_seg.layers import pytorch_batch_norm


@dataclass(frozen=True)
class HRNetVariant:
    """timm's `cfg_cls` entry: stage-1 bottlenecks and width, modules of stages 2-4, basic
    blocks per branch, and C, the width of the highest-resolution branch."""

    stage1_blocks: int
    stage1_channels: int
    modules: tuple[int, int, int]
    blocks: int
    width: int


VARIANTS: dict[str, HRNetVariant] = {
    "hrnetv2_w18_small": HRNetVariant(1, 32, (1, 1, 1), 2, 16),
    "hrnetv2_w18_small_v2": HRNetVariant(2, 64, (1, 3, 2), 2, 18),
    "hrnetv2_w18": HRNetVariant(4, 64, (1, 4, 3), 4, 18),
    "hrnetv2_w32": HRNetVariant(4, 64, (1, 4, 3), 4, 32),
    "hrnetv2_w48": HRNetVariant(4, 64, (1, 4, 3), 4, 48),
}
# keras_seg backbone -> timm model name.
TIMM_NAMES = {name: name.replace("hrnetv2_", "hrnet_") for name in VARIANTS}
STEM_WIDTH = 64


def _relu(x, name: str):
    return layers.Activation("relu", name=name)(x)


def _conv(x, filters: int, kernel: int, name: str, strides: int = 1):
    """PyTorch `Conv2d(kernel, strides, padding=kernel // 2, bias=False)`."""
    if kernel > 1 and strides > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
        return layers.Conv2D(filters, kernel, strides=strides, use_bias=False, name=name)(x)
    return layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)


def _block(x, filters: int, name: str, bottleneck: bool):
    """timm's (torchvision's) `BasicBlock` or `Bottleneck`, stride 1."""
    out = filters * (4 if bottleneck else 1)
    shortcut = x
    if x.shape[-1] != out:
        shortcut = pytorch_batch_norm(
            _conv(x, out, 1, f"{name}.downsample.0"), f"{name}.downsample.1"
        )
    kernels = (1, 3, 1) if bottleneck else (3, 3)
    for i, kernel in enumerate(kernels, start=1):
        last = i == len(kernels)
        x = pytorch_batch_norm(
            _conv(x, out if last else filters, kernel, f"{name}.conv{i}"), f"{name}.bn{i}"
        )
        if not last:
            x = _relu(x, f"{name}.act{i}")
    x = layers.Add(name=f"{name}.add")([shortcut, x])
    return _relu(x, f"{name}.act{len(kernels)}")


def _down(x, filters: int, name: str, relu: bool):
    """3x3 stride-2 conv + BN (+ ReLU), as `{name}.0` and `{name}.1`."""
    x = pytorch_batch_norm(_conv(x, filters, 3, f"{name}.0", strides=2), f"{name}.1")
    return _relu(x, f"{name}.2") if relu else x


def _transition(branches: list, channels: list[int], name: str) -> list:
    """timm `_make_transition_layer`: adapt existing branches, start new ones."""
    out = []
    for i, filters in enumerate(channels):
        if i < len(branches):
            x = branches[i]
            if x.shape[-1] != filters:
                x = _relu(
                    pytorch_batch_norm(_conv(x, filters, 3, f"{name}.{i}.0"), f"{name}.{i}.1"),
                    f"{name}.{i}.2",
                )
            out.append(x)
            continue
        x = branches[-1]
        steps = i + 1 - len(branches)
        for j in range(steps):
            x = _down(x, filters if j == steps - 1 else x.shape[-1], f"{name}.{i}.{j}", True)
        out.append(x)
    return out


def _module(branches: list, blocks: int, name: str) -> list:
    """timm `HighResolutionModule`: branches of basic blocks, then the fuse layers."""
    branches = list(branches)
    for b, x in enumerate(branches):
        for k in range(blocks):
            x = _block(x, x.shape[-1], f"{name}.branches.{b}.{k}", bottleneck=False)
        branches[b] = x
    fused = []
    for i, target in enumerate(branches):
        terms = []
        for j, x in enumerate(branches):
            prefix = f"{name}.fuse_layers.{i}.{j}"
            if j > i:
                x = pytorch_batch_norm(_conv(x, target.shape[-1], 1, f"{prefix}.0"), f"{prefix}.1")
                x = ResizeToMatch("nearest", name=f"{prefix}.upsample")([x, target])
            elif j < i:
                for k in range(i - j):
                    last = k == i - j - 1
                    x = _down(
                        x, target.shape[-1] if last else x.shape[-1], f"{prefix}.{k}", not last
                    )
            terms.append(x)
        y = layers.Add(name=f"{name}.fuse_sum.{i}")(terms)
        fused.append(_relu(y, f"{name}.fuse_act.{i}"))
    return fused


def hrnet(
    name: str,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    weights: str | None = None,
    output_stride: int = 32,
    width: int | None = None,
) -> keras.Model:
    """HRNetV2 feature pyramid {"P1".."P5"}; see the module docstring.

    Args:
        name: one of `VARIANTS`.
        input_shape: `(H, W, C)` of pixels normalised with ImageNet mean/std ("torch").
        weights: `None`; timm's ImageNet weights load from its checkpoint through
            `build_backbone(name, weights=PATH)` (keras.applications has no HRNet).
        output_stride: 32 only.
        width: C, the channels of the highest-resolution branch (default the variant's:
            18, 32, 48); a smaller one makes cheap test models (no checkpoint fits it).

    Returns:
        Functional `keras.Model` named `name` with dict outputs "P1".."P5".
    """
    if weights is not None:
        raise ValueError(
            f"Backbone {name!r} has no keras.applications weights; use weights=None or a "
            f"timm {TIMM_NAMES[name]!r} checkpoint file, got {weights!r}"
        )
    if output_stride != 32:
        raise ValueError(f"Backbone {name!r} supports output_stride 32 only, got {output_stride!r}")
    variant = VARIANTS[name]
    if width is not None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        variant = dataclasses.replace(variant, width=width)
    inputs = keras.Input(input_shape, name="images")
    p1 = _relu(pytorch_batch_norm(_conv(inputs, STEM_WIDTH, 3, "conv1", strides=2), "bn1"), "act1")
    x = _relu(pytorch_batch_norm(_conv(p1, 64, 3, "conv2", strides=2), "bn2"), "act2")
    for k in range(variant.stage1_blocks):
        x = _block(x, variant.stage1_channels, f"layer1.{k}", bottleneck=True)
    branches = [x]
    for stage, modules in enumerate(variant.modules, start=2):
        channels = [variant.width * 2**i for i in range(stage)]
        branches = _transition(branches, channels, f"transition{stage - 1}")
        for m in range(modules):
            branches = _module(branches, variant.blocks, f"stage{stage}.{m}")
    outputs = {"P1": p1, **{f"P{i}": y for i, y in enumerate(branches, start=2)}}
    return keras.Model(inputs, outputs, name=name)


def _register(name: str) -> None:
    def builder(
        input_shape: tuple[int | None, int | None, int] = (None, None, 3),
        weights: str | None = None,
        output_stride: int = 32,
        width: int | None = None,
    ) -> keras.Model:
        return hrnet(name, input_shape, weights, output_stride, width)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name} feature pyramid (torch normalisation); see `hrnet`."
    register_backbone(name, normalization="torch", output_strides=(32,), small_config={"width": 4})(
        builder
    )


for _name in VARIANTS:
    _register(_name)
