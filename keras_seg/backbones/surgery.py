"""Atrous "surgery": turn a classification network into a dense feature extractor.

DeepLab (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017)
keeps the resolution of the last stage(s) by removing their striding and dilating the
convolutions that follow instead, so the pretrained weights still see the same receptive
field. Keras has no switch for this, so we edit the Functional `get_config()`: walking the
graph we track, for every layer output, the stride it has in the original network (nominal)
and the stride it has now (actual). A layer whose stride would take the nominal stride past
`output_stride` gets strides 1; every convolution with a kernel larger than 1 gets
`dilation_rate` = nominal / actual stride of its input. This is the torchvision
(`replace_stride_with_dilation`) and TF-slim (`stack_blocks_dense`) rule: the convolution that
used to stride keeps the previous rate, the ones after it get twice (four times) that rate.
segmentation_models.pytorch (`replace_strides_with_dilation`) dilates the whole stage instead,
the formerly strided convolution included: `rule="smp"` gives that, for its checkpoints.
Explicit `ZeroPadding2D` + "valid" padding (MobileNetV2, torchvision-layout ResNets) is
rescaled so the dilated output sampled at the old stride equals the original output exactly
(see `_repad`). The kernels keep their shapes, so weights copy one to one from the original.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import keras

from keras_seg.layers import ATROUS_CLASSES
from keras_seg.layers import FusedBatchNorm

# How the convolution that used to stride is dilated: "torchvision" keeps the rate of its input
# (torchvision `replace_stride_with_dilation`, TF-slim); "smp" gives it the new rate of its stage
# (segmentation_models.pytorch `replace_strides_with_dilation`).
DILATION_RULES = ("torchvision", "smp")

# Layers whose `strides` change the resolution (and that `dilate_config` knows how to edit).
_STRIDED = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D"}
_DILATABLE = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D"}


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _inbound_layer_names(layer_config: dict[str, Any]) -> list[str]:
    """Names of the layers whose outputs feed `layer_config` (first call node only)."""
    names: list[str] = []

    def walk(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                names.append(obj["config"]["keras_history"][0])
                return
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list | tuple):
            for value in obj:
                walk(value)

    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise NotImplementedError(
            f"Layer {layer_config['name']!r} is called {len(nodes)} times; shared layers "
            "are not supported by the atrous surgery"
        )
    walk(nodes)
    return names


def dilate_config(
    config: dict[str, Any], output_stride: int, rule: str = "torchvision"
) -> dict[str, Any]:
    """A copy of Functional `config` whose outputs have stride at most `output_stride`.

    Args:
        config: `keras.Model.get_config()` of a Functional model with layers in call order.
        output_stride: largest stride allowed (a power of two); striding beyond it is
            replaced by dilation.

    Returns:
        The edited config, for `keras.Model.from_config`.

    Raises:
        NotImplementedError: the network has a layer the rule cannot convert (a pooling
            window or a "valid" convolution in the dilated part, a shared layer).
    """
    if rule not in DILATION_RULES:
        raise ValueError(f"dilation rule must be one of {DILATION_RULES}, got {rule!r}")
    config = copy.deepcopy(config)
    layers = {layer["name"]: layer for layer in config["layers"]}
    consumers: dict[str, int] = {}
    for layer in config["layers"]:
        for name in _inbound_layer_names(layer):
            consumers[name] = consumers.get(name, 0) + 1
    nominal: dict[str, int] = {}
    actual: dict[str, int] = {}
    for layer in config["layers"]:
        name, cls, cfg = layer["name"], layer["class_name"], layer["config"]
        inbound = _inbound_layer_names(layer)
        unseen = [n for n in inbound if n not in nominal]
        if unseen:
            raise NotImplementedError(f"Layer {name!r} comes before its inputs {unseen}")
        nominal_in = max((nominal[n] for n in inbound), default=1)
        actual_in = max((actual[n] for n in inbound), default=1)
        rate = nominal_in // actual_in
        original = _pair(cfg["strides"])[0] if "strides" in cfg else 1
        if original > 1 and cls not in _STRIDED:
            raise NotImplementedError(f"Layer {name!r} ({cls}) has strides the surgery can't edit")
        unstride = original > 1 and nominal_in * original > output_stride
        if unstride and rule == "smp":
            rate *= original
        kernel = _pair(cfg.get("kernel_size", cfg.get("pool_size", 1)))
        if (unstride or rate > 1) and max(kernel) > 1:
            if cls not in _DILATABLE:
                raise NotImplementedError(
                    f"Layer {name!r} ({cls}, window {kernel}) sits in the dilated part of the "
                    f"network (rate {rate}) and can't be dilated"
                )
            if cfg["padding"] == "valid":
                _repad(layers, consumers, inbound, name, kernel, rate, unstride)
            cfg["dilation_rate"] = [d * rate for d in _pair(cfg["dilation_rate"])]
        if unstride:
            cfg["strides"] = [1, 1]
        nominal[name] = nominal_in * original
        actual[name] = actual_in * (1 if unstride else original)
    return config


def _repad(layers, consumers, inbound, name, kernel, rate, unstride) -> None:
    """Edit the `ZeroPadding2D` before "valid" conv `name` for dilation `rate` at stride 1.

    The strided original's output i reads inputs 2i - top ... 2i - top + k - 1; padding
    (rate * top, rate * (k - 1 - top)) makes the dilated conv read exactly those at position
    2i (in its finer grid) and keep the input size, so the new output sampled every
    2 (4) pixels equals the original's. (Neutralising the padding and using "same", as TF
    DeepLab's MobileNetV2 does, shifts the features by one pixel where `top` is 0.)
    A non-strided conv must already pad by k - 1 in total; its padding is scaled by `rate`.
    """
    pad = layers[inbound[0]] if len(inbound) == 1 else None
    if pad is None or pad["class_name"] != "ZeroPadding2D" or consumers.get(pad["name"]) != 1:
        raise NotImplementedError(
            f"Layer {name!r} has 'valid' padding in the dilated part of the network and no "
            "ZeroPadding2D of its own before it; can't keep its output size"
        )
    new = []
    for (top, bottom), k in zip(pad["config"]["padding"], kernel, strict=True):
        if not unstride and top + bottom != k - 1:
            raise NotImplementedError(
                f"Layer {name!r}: padding {(top, bottom)} does not keep the size of a "
                f"{k}-wide window; can't dilate it"
            )
        new.append([rate * top, rate * (k - 1 - top)])
    pad["config"]["padding"] = new


def pyramid_model(
    base: keras.Model,
    feature_layers: dict[str, str],
    output_stride: int,
    name: str,
    dilation_rule: str = "torchvision",
) -> keras.Model:
    """The `{"P1".."P5"}` pyramid of `base`, rebuilt with atrous surgery and `base`'s weights.

    Args:
        base: Functional classification network (e.g. from `keras.applications`).
        feature_layers: pyramid level -> name of the `base` layer whose output it is.
        output_stride: 8, 16 or 32; the last stage(s) dilate instead of striding beyond it.
        name: name of the returned model.
        dilation_rule: one of `DILATION_RULES`.

    Returns:
        Functional `keras.Model` with dict outputs; layers after the deepest feature are
        dropped. Always rebuilt from the (edited) config, so it shares nothing with `base`.
    """
    outputs = {level: base.get_layer(layer).output for level, layer in feature_layers.items()}
    features = keras.Model(base.input, outputs, name=name)
    config = dilate_config(features.get_config(), output_stride, dilation_rule)
    model = keras.Model.from_config(keras_seg_layers_config(config))
    for layer in features.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def keras_seg_layers_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` (a functional model's) with keras_seg's faster equivalents of two Keras
    layers, with the same arguments and weights: every `keras.layers.BatchNormalization` as
    `FusedBatchNorm` (trained through the fused kernel; keras.applications builds plain
    ones), and every dilated `Conv2D` / `SeparableConv2D` / `DepthwiseConv2D` (the
    surgery's) as keras_seg's `Atrous...` class (`keras_seg.layers.convolution`: one Conv2D
    op instead of space-to-batch; no space-to-batch copy kept for the gradient)."""
    atrous = {keras_class.__name__: ours for keras_class, ours in ATROUS_CLASSES.items()}
    config = copy.deepcopy(config)
    for layer in config["layers"]:
        if layer.get("module") != "keras.layers":
            continue
        cls = layer["class_name"]
        if cls == "BatchNormalization":
            new = FusedBatchNorm
        elif cls in atrous and max(_pair(layer["config"]["dilation_rate"])) > 1:
            new = atrous[cls]
        else:
            continue
        layer["module"] = new.__module__
        layer["class_name"] = new.__name__
        layer["registered_name"] = keras.saving.get_registered_name(new)
    return config


def keras_application(
    factory: Callable[..., keras.Model],
    backbone: str,
    weights: str | None,
    weights_file: str,
    **kwargs: Any,
) -> keras.Model:
    """`factory(include_top=False, weights=weights, **kwargs)`, with a clear error when
    `weights="imagenet"` can't be fetched.

    Raises:
        OSError: ImageNet weights could not be loaded; the message names the backbone and
            the file keras.applications looks for.
    """
    try:
        return factory(include_top=False, weights=weights, **kwargs)
    except Exception as e:  # download, cache and HDF5 errors all mean the same to the caller
        if weights != "imagenet":
            raise
        raise OSError(
            f"Could not load ImageNet weights for backbone {backbone!r}: "
            f"keras.applications.{factory.__name__}(include_top=False, weights='imagenet') needs "
            f"{weights_file} (downloaded to ~/.keras/models/ on first use; without network "
            f"access put the file there, or use weights=None): {type(e).__name__}: {e}"
        ) from e
