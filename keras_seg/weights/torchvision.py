"""Key maps of torchvision's (and timm's) ImageNet classifiers onto keras_seg backbones.

torchvision and timm share their ResNet and VGG state-dict keys (`conv1`, `bn1`,
`layer{1..4}.{i}.conv{1..3}`, `downsample.{0,1}`; `features.{n}`), so one map serves both;
their classifier heads (`fc`, `classifier`, `pre_logits`, `head`) have no Keras counterpart
and are ignored. Each map is built from the Keras backbone's own layer names, so it follows
any block count or width.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import keras

from keras_seg.weights.assign import KeyMap

# Classifier heads that a backbone checkpoint may carry.
HEAD_PREFIXES = ("fc.", "classifier.", "pre_logits.", "head.")

_RESNET_LAYER = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)$")

# Backbone names for (block kind, blocks in layer3); layer3 tells the depths apart.
RESNET_DEPTHS = {
    ("basic", 2): "resnet18",
    ("basic", 6): "resnet34",
    ("bottleneck", 6): "resnet50_torchvision",
    ("bottleneck", 23): "resnet101_torchvision",
}


def resnet_map(layer_names: Iterable[str], prefix: str = "") -> KeyMap:
    """torchvision/timm ResNet keys for the layers of a keras_seg torchvision-layout ResNet."""
    key_map: KeyMap = {}
    layer_names = list(layer_names)
    # timm's deep stem: conv1 = Sequential(conv, bn, act, conv, bn, act, conv), then bn1.
    deep = {"conv1_1_conv": 0, "conv1_1_bn": 1, "conv1_2_conv": 3, "conv1_2_bn": 4}
    is_deep = "conv1_1_conv" in layer_names
    for name in layer_names:
        if name in deep:
            key_map[name] = f"{prefix}conv1.{deep[name]}"
            continue
        if name in ("conv1_conv", "conv1_bn"):
            conv = "conv1.6" if is_deep else "conv1"
            key_map[name] = prefix + (conv if name == "conv1_conv" else "bn1")
            continue
        match = _RESNET_LAYER.match(name)
        if not match:
            continue
        stage, block, index, kind = match.groups()
        module = f"{prefix}layer{int(stage) - 1}.{int(block) - 1}"
        if index == "0":
            key_map[name] = f"{module}.downsample.{0 if kind == 'conv' else 1}"
        else:
            key_map[name] = f"{module}.{kind}{index}"
    return key_map


def vgg_map(backbone: keras.Model, prefix: str = "") -> KeyMap:
    """torchvision/timm VGG(-BN) `features.{n}` keys for a keras_seg VGG backbone's layers.

    `features` is the flat sequence conv (, BN), ReLU, ..., max-pool, so walking the Keras
    layers in order gives each conv's index.
    """
    key_map: KeyMap = {}
    index = 0
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            key_map[layer.name] = f"{prefix}features.{index}"
            index += 2  # conv, ReLU
        elif isinstance(layer, keras.layers.BatchNormalization):
            key_map[layer.name] = f"{prefix}features.{index - 1}"
            index += 1
        elif isinstance(layer, keras.layers.MaxPooling2D):
            index += 1
    return key_map


def recognise_resnet(keys: set[str], prefix: str = "") -> tuple[str, dict] | None:
    """(backbone name, backbone kwargs) of a torchvision/timm ResNet state dict, else None."""
    if f"{prefix}layer1.0.conv1.weight" not in keys:
        return None
    kind = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in keys else "basic"
    pattern = re.compile(re.escape(prefix) + r"layer3\.(\d+)\.")
    blocks = len({m.group(1) for k in keys if (m := pattern.match(k))})
    name = RESNET_DEPTHS.get((kind, blocks))
    kwargs = {"stem": "deep"} if f"{prefix}conv1.0.weight" in keys else {}
    return (name, kwargs) if name else None


def recognise_vgg16(keys: set[str], prefix: str = "") -> tuple[str, dict] | None:
    """("vgg16_torchvision", {"batch_norm": ...}) for a VGG16(-BN) state dict, else None."""
    if f"{prefix}features.0.weight" not in keys:
        return None
    batch_norm = f"{prefix}features.1.running_mean" in keys
    convs = sum(1 for k in keys if re.fullmatch(re.escape(prefix) + r"features\.\d+\.weight", k))
    convs -= convs // 2 if batch_norm else 0  # BN layers have a weight too
    return ("vgg16_torchvision", {"batch_norm": batch_norm}) if convs == 13 else None
