"""segmentation_models.pytorch (SMP) whole-model checkpoints: Unet, DeepLabV3, DeepLabV3Plus.

An SMP state dict is `encoder.*` (the torchvision encoder's keys), `decoder.*` and
`segmentation_head.0` (the logits convolution). Which decoder it is shows in the keys; the
options that the weights fix (head kernel, decoder widths, separable convolutions) are read
from the tensors' shapes, and the ones they don't show (output stride, atrous rates) are SMP's
defaults unless the hub folder's `config.json` says otherwise. keras_seg's layer names are
those of `models/unet.py` and `models/deeplab.py`.
"""

from __future__ import annotations

import re
from typing import Any

import keras

from keras_seg.weights.assign import KeyMap
from keras_seg.weights.checkpoint import Checkpoint
from keras_seg.weights.checkpoint import WeightsError
from keras_seg.weights.formats import BACKBONE_MAPS
from keras_seg.weights.formats import Layout
from keras_seg.weights.formats import recognise_backbone
from keras_seg.weights.formats import reference_name

ENCODER = "encoder."
HEAD = "segmentation_head.0"
# SMP class name (config.json "_model_class") -> keras_seg model.
SMP_MODELS = {"Unet": "unet", "DeepLabV3": "deeplabv3", "DeepLabV3Plus": "deeplabv3plus"}
_ASPP_RATES = (12, 24, 36)  # SMP's decoder_atrous_rates default, at either output stride


def is_smp(keys: set[str]) -> bool:
    return f"{HEAD}.weight" in keys and any(k.startswith(ENCODER) for k in keys)


def _blocks(keys: set[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def layout(checkpoint: Checkpoint) -> Layout:
    """The Layout of an SMP checkpoint.

    Raises:
        WeightsError: an encoder or decoder variant keras_seg has no counterpart for.
    """
    tensors, source = checkpoint.tensors, checkpoint.source
    keys = set(tensors)
    found = recognise_backbone(keys, ENCODER, "smp")
    if found is None:
        raise WeightsError(
            f"{source}: SMP checkpoint with an encoder keras_seg can't map (first key "
            f"{min(k for k in keys if k.startswith(ENCODER))}); supported encoders: resnet18/34/"
            "50/101, vgg16(_bn), mobilenet_v2"
        )
    _, backbone, backbone_kwargs = found
    if backbone == "vgg16_torchvision":
        # SMP's VGG encoder returns the last feature at each stride, not the pools.
        backbone_kwargs = {**backbone_kwargs, "pyramid": "deepest"}
    config = checkpoint.config
    head = tensors[f"{HEAD}.weight"]
    num_classes = int(head.shape[0])
    if "decoder.blocks.0.conv1.0.weight" in keys:
        model, fixed, defaults = "unet", *_unet_options(tensors, source, backbone)
        model_map = _unet_map
    elif "decoder.aspp.0.convs.0.0.weight" in keys:
        model, fixed, defaults = "deeplabv3plus", *_deeplab_options(tensors, source, True)
        model_map = _deeplabv3plus_map
    elif "decoder.aspp.convs.0.0.weight" in keys:
        model, fixed, defaults = "deeplabv3", *_deeplab_options(tensors, source, False)
        model_map = _deeplabv3_map
    else:
        raise WeightsError(
            f"{source}: an SMP decoder keras_seg has no counterpart for (keys "
            f"{', '.join(sorted(k for k in keys if k.startswith('decoder.'))[:3])}); supported: "
            f"{', '.join(SMP_MODELS)}"
        )
    named = config.get("_model_class")
    if named is not None and SMP_MODELS.get(named) != model:
        raise WeightsError(
            f"{source}: config.json names {named!r} but the weights are an SMP {model}"
        )
    if model != "unet":
        defaults["output_stride"] = int(
            config.get("encoder_output_stride", 16 if model == "deeplabv3plus" else 8)
        )
        defaults["aspp_rates"] = tuple(config.get("decoder_atrous_rates", _ASPP_RATES))
        defaults["aspp_dropout"] = float(config.get("decoder_aspp_dropout", 0.5))
        backbone_kwargs = {**backbone_kwargs, "dilation_rule": "smp"}
    name = next(k for k, v in SMP_MODELS.items() if v == model)
    encoder = reference_name(backbone, backbone_kwargs, "smp")
    return Layout(
        format="smp",
        backbone=backbone,
        backbone_kwargs=backbone_kwargs,
        prefix=ENCODER,
        model=model,
        fixed=fixed,
        defaults=defaults,
        num_classes=num_classes,
        description=f"SMP {name} on {encoder}, {num_classes} classes",
        model_map=lambda m: _model_map(m, backbone, model_map),
        reference={
            "library": "smp",
            "factory": name,
            "kwargs": {"encoder_name": encoder, "classes": num_classes}
            | reference_kwargs(model, {**defaults, **fixed}),
        },
    )


def reference_kwargs(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """SMP constructor arguments for keras_seg `options` (segmentation_models_pytorch 0.6)."""
    if model == "unet":
        return {
            "decoder_channels": list(options["decoder_filters"]),
            "decoder_use_norm": "batchnorm" if options["batch_norm"] else False,
        }
    return {
        "encoder_output_stride": options["output_stride"],
        "decoder_atrous_rates": list(options["aspp_rates"]),
        "decoder_channels": options["aspp_filters"],
    }


def _unet_options(tensors, source, backbone) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = set(tensors)
    blocks = _blocks(keys, r"decoder\.blocks\.(\d+)\.")
    if any(".attention" in k for k in keys if k.startswith("decoder.")):
        raise WeightsError(f"{source}: SMP Unet with decoder_attention_type is not supported")
    if blocks != 5:
        raise WeightsError(
            f"{source}: SMP Unet with encoder_depth {blocks}; keras_seg's U-Net has 5 "
            "decoder steps (encoder_depth=5)"
        )
    filters = tuple(int(tensors[f"decoder.blocks.{i}.conv1.0.weight"].shape[0]) for i in range(5))
    fixed = {
        "decoder_filters": filters,
        "batch_norm": "decoder.blocks.0.conv1.1.running_mean" in keys,
        "head_kernel_size": int(tensors[f"{HEAD}.weight"].shape[-1]),
        # SMP puts two convolutions on a VGG encoder's deepest feature.
        "center_block": "decoder.center.0.0.weight" in keys,
    }
    return fixed, {}


def _deeplab_options(tensors, source, plus: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    base = "decoder.aspp.0" if plus else "decoder.aspp"
    separable = f"{base}.convs.1.0.0.weight" in set(tensors)
    # SMP's DeepLabV3Plus always makes its post-ASPP and decoder convolutions separable and
    # DeepLabV3's post-ASPP one plain; keras_seg's `separable` covers all of them.
    if separable != plus:
        raise WeightsError(
            f"{source}: SMP {'DeepLabV3Plus' if plus else 'DeepLabV3'} with "
            f"decoder_aspp_separable={separable} is not supported (only SMP's default, "
            f"{plus})"
        )
    fixed: dict[str, Any] = {
        "separable": separable,
        "aspp_filters": int(tensors[f"{base}.convs.0.0.weight"].shape[0]),
        "aspp_post_conv": True,
        "align_corners": True,
    }
    if plus:
        fixed["low_level_filters"] = int(tensors["decoder.block1.0.weight"].shape[0])
        fixed["decoder_filters"] = int(tensors["decoder.block2.1.weight"].shape[0])
        fixed["decoder_convs"] = 1
    return fixed, {}


def _model_map(model: keras.Model, backbone: str, decoder_map) -> KeyMap:
    encoder = next(
        (m for m in model.layers if isinstance(m, keras.Model) and m.name == backbone), None
    )
    if encoder is None:
        raise WeightsError(f"model {model.name!r} has no {backbone!r} backbone to load into")
    return {
        **BACKBONE_MAPS[backbone](encoder, ENCODER, "smp"),
        **decoder_map(model),
        "logits": HEAD,
    }


def _unet_map(model: keras.Model) -> KeyMap:
    names = {layer.name for layer in model.layers}
    key_map: KeyMap = {}
    for step in range(5):
        for conv in (1, 2):
            name, module = f"decoder{step + 1}_{conv}", f"decoder.blocks.{step}.conv{conv}"
            key_map[f"{name}_conv"] = f"{module}.0"
            if f"{name}_bn" in names:
                key_map[f"{name}_bn"] = f"{module}.1"
    for conv in (1, 2):
        if f"center_{conv}_conv" in names:
            key_map[f"center_{conv}_conv"] = f"decoder.center.{conv - 1}.0"
            if f"center_{conv}_bn" in names:
                key_map[f"center_{conv}_bn"] = f"decoder.center.{conv - 1}.1"
    return key_map


def _aspp_map(base: str) -> KeyMap:
    key_map: KeyMap = {"aspp_b0_conv": f"{base}.convs.0.0", "aspp_b0_bn": f"{base}.convs.0.1"}
    for i in (1, 2, 3):
        key_map[f"aspp_b{i}_conv"] = f"{base}.convs.{i}.0"
        key_map[f"aspp_b{i}_bn"] = f"{base}.convs.{i}.1"
    key_map.update(
        {
            "aspp_pool_conv": f"{base}.convs.4.1",
            "aspp_pool_bn": f"{base}.convs.4.2",
            "aspp_proj_conv": f"{base}.project.0",
            "aspp_proj_bn": f"{base}.project.1",
        }
    )
    return key_map


def _separable(key_map: KeyMap, model: keras.Model) -> KeyMap:
    """SMP's SeparableConv2d is a Sequential (depthwise, pointwise): a pair for Keras."""
    names = {layer.name: layer for layer in model.layers}
    return {
        name: (f"{prefix}.0", f"{prefix}.1")
        if isinstance(names.get(name), keras.layers.SeparableConv2D) and isinstance(prefix, str)
        else prefix
        for name, prefix in key_map.items()
    }


def _deeplabv3plus_map(model: keras.Model) -> KeyMap:
    key_map = {
        **_aspp_map("decoder.aspp.0"),
        "aspp_post_conv": "decoder.aspp.1",
        "aspp_post_bn": "decoder.aspp.2",
        "decoder_low_level_conv": "decoder.block1.0",
        "decoder_low_level_bn": "decoder.block1.1",
        "decoder_conv1_conv": "decoder.block2.0",
        "decoder_conv1_bn": "decoder.block2.1",
    }
    return _separable(key_map, model)


def _deeplabv3_map(model: keras.Model) -> KeyMap:
    key_map = {
        **_aspp_map("decoder.aspp"),
        "aspp_post_conv": "decoder.conv",
        "aspp_post_bn": "decoder.bn",
    }
    return _separable(key_map, model)
