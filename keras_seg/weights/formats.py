"""What a checkpoint is (its `Layout`) and which key map fills which keras_seg backbone.

A backbone checkpoint is a torchvision or timm ImageNet classifier; its keys say which
network it is (ResNet depth from the blocks of layer3, VGG with or without BatchNorm,
MobileNetV2). A whole-model checkpoint is read in `smp.py` (segmentation_models.pytorch) or
`transformers.py` (Hugging Face SegFormer, which also reads MiT encoders).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import keras

from keras_seg.weights import hrnet
from keras_seg.weights import mobilenet
from keras_seg.weights import torchvision
from keras_seg.weights import transformers
from keras_seg.weights.assign import KeyMap
from keras_seg.weights.assign import weighted_layers

WEIGHTS_FORMATS = ("torchvision", "timm", "smp", "transformers")


@dataclass(frozen=True)
class Layout:
    """A recognised checkpoint.

    Attributes:
        format: one of `WEIGHTS_FORMATS` ("transformers": SegFormer and MiT; "torchvision" also covers timm's ResNet and VGG,
            which share its keys).
        backbone: the keras_seg backbone that takes its (encoder) weights.
        backbone_kwargs: backbone options its weights fix (VGG's `batch_norm`, ...).
        prefix: key prefix of the backbone part ("" or SMP's "encoder.").
        model: the keras_seg model of a whole-model checkpoint, else None.
        fixed: model options the weights fix (a different value can't load).
        defaults: model options the weights don't show (the reference's defaults, or its
            config.json); the caller's values win.
        num_classes: classes of a whole-model checkpoint.
        description: one line for messages, e.g. "SMP Unet on resnet34, 21 classes".
        model_map: keras model -> key map of the whole model (whole-model checkpoints).
        reference: how `reference.py` builds the reference model: {"library", "factory",
            "kwargs"} (empty where keras_seg can't name it).
    """

    format: str
    backbone: str
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""
    model: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    description: str = ""
    model_map: Callable[[keras.Model], KeyMap] | None = None
    reference: dict[str, Any] = field(default_factory=dict)


# (recogniser(keys, prefix) -> (backbone, kwargs) | None, formats it belongs to)
_RECOGNISERS = (
    (torchvision.recognise_resnet, ("torchvision", "timm", "smp")),
    (torchvision.recognise_vgg16, ("torchvision", "timm", "smp")),
    (mobilenet.recognise_torchvision, ("torchvision", "smp")),
    (mobilenet.recognise_timm, ("timm",)),
)

# Backbones that take converted weights -> key-map builder (backbone model, prefix, format of
# the checkpoint: torchvision and timm name MobileNetV2's modules differently) -> KeyMap.
BACKBONE_MAPS: dict[str, Callable[[keras.Model, str, str], KeyMap]] = {
    "resnet18": lambda m, p, f: torchvision.resnet_map(weighted_layers(m), p),
    "resnet34": lambda m, p, f: torchvision.resnet_map(weighted_layers(m), p),
    "resnet50_torchvision": lambda m, p, f: torchvision.resnet_map(weighted_layers(m), p),
    "resnet101_torchvision": lambda m, p, f: torchvision.resnet_map(weighted_layers(m), p),
    "vgg16_torchvision": lambda m, p, f: torchvision.vgg_map(m, p),
    **mobilenet.BACKBONE_MAPS,
    **{f"mit_b{i}": transformers.mit_map for i in range(6)},
    **dict.fromkeys(hrnet.BACKBONES, hrnet.key_map),
}

# keras_seg backbone -> the name torchvision, timm and SMP give the same network.
REFERENCE_NAMES = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50_torchvision": "resnet50",
    "resnet101_torchvision": "resnet101",
    "vgg16_torchvision": "vgg16",
    "mobilenet_v2_torchvision": "mobilenet_v2",
}


def reference_name(backbone: str, backbone_kwargs: dict[str, Any], library: str) -> str | None:
    """The torchvision / timm / SMP-encoder name of a keras_seg backbone."""
    name = REFERENCE_NAMES.get(backbone)
    if name is None:
        return None
    if backbone_kwargs.get("stem") == "deep":
        name += "c"  # timm's resnet50c / resnet101c (torchvision has no deep stem)
    if name == "vgg16" and backbone_kwargs.get("batch_norm"):
        name = "vgg16_bn"
    if name == "mobilenet_v2" and library == "timm":
        name = "mobilenetv2_100"
    return name


# Backbone -> key prefixes of a classifier's last layers that the backbone may stop before
# (besides the heads every backbone ignores, `torchvision.HEAD_PREFIXES`).
BACKBONE_HEADS: dict[str, tuple[str, ...]] = {
    mobilenet.BACKBONE: mobilenet.HEAD_PREFIXES,
    **{f"mit_b{i}": transformers.HEAD_PREFIXES for i in range(6)},
    **dict.fromkeys(hrnet.BACKBONES, hrnet.HEAD_PREFIXES),
}

# A keras.applications backbone and the torch-layout one that its checkpoint needs.
TORCH_LAYOUT_OF = {
    "resnet50": "resnet50_torchvision",
    "resnet101": "resnet101_torchvision",
    "vgg16": "vgg16_torchvision",
    "mobilenet_v2": "mobilenet_v2_torchvision",
}


def recognise_backbone(
    keys: set[str], prefix: str = "", weights_format: str | None = None
) -> tuple[str, str, dict[str, Any]] | None:
    """(format, backbone, backbone kwargs) of an ImageNet classifier's keys, else None."""
    for recognise, formats in _RECOGNISERS:
        if weights_format is not None and weights_format not in formats:
            continue
        found = recognise(keys, prefix)
        if found:
            return (weights_format or formats[0], *found)
    return None


def backbone_layout(keys: set[str], source: str, weights_format: str | None) -> Layout:
    """The layout of a backbone (ImageNet classifier) checkpoint.

    Raises:
        WeightsError: the keys match no supported network.
    """
    from keras_seg.weights.checkpoint import WeightsError

    found = recognise_backbone(keys, "", weights_format)
    if found is None:
        sample = ", ".join(sorted(keys)[:4])
        raise WeightsError(
            f"{source}: not a checkpoint keras_seg can read"
            f"{f' as {weights_format!r}' if weights_format else ''} (keys {sample}, ...); "
            f"supported: torchvision/timm ResNet-18/34/50/101, VGG16(-BN), MobileNetV2, timm HRNet, "
            f"segmentation_models.pytorch Unet/DeepLabV3/DeepLabV3Plus on those and "
            f"transformers SegFormer / MiT"
        )
    fmt, backbone, kwargs = found
    if kwargs.get("stem") == "deep":
        fmt = "timm"  # only timm has the deep-stem ResNets
    shared = fmt != "timm" and weights_format is None and backbone.startswith(("resnet", "vgg"))
    factory = reference_name(backbone, kwargs, fmt)
    return Layout(
        fmt,
        backbone,
        kwargs,
        # torchvision and timm share the ResNet and VGG keys: the file can't say which it is.
        description=f"{'torchvision/timm' if shared else fmt} {factory or backbone}",
        reference={"library": fmt, "factory": factory, "kwargs": {}} if factory else {},
    )
