"""Start from the weights people already have: PyTorch checkpoints of reference implementations.

`keras_seg.build(name, num_classes, backbone=..., weights=SOURCE)` and
`keras_seg.backbones.build_backbone(name, weights=SOURCE)` take, besides `None` and
`"imagenet"`, a checkpoint `SOURCE` (see `checkpoint.read_checkpoint`): a file, a Hugging Face
folder or an `hf://owner/repo` handle. Its keys say what it is (`formats.Layout`):

- an ImageNet classifier of torchvision or timm (ResNet-18/34/50/101, VGG16(-BN),
  MobileNetV2, timm's HRNet): the backbone's weights; the decoder starts random, as with "imagenet";
- a segmentation_models.pytorch Unet / DeepLabV3 / DeepLabV3Plus: the whole model; its
  architecture options (head kernel, decoder widths, ...) follow from the weights;
- a Hugging Face transformers SegFormer (`nvidia/segformer-*`: the whole model) or MiT
  encoder (`nvidia/mit-b*`: the `mit_b*` backbone), read from `config.json` and the weights.

Every tensor is checked against the layer that takes it; a partial load
(`weights_partial=True`: encoder only, or a new class count) lists what it skipped.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from typing import Any

import keras

from keras_seg.weights import hrnet
from keras_seg.weights import smp
from keras_seg.weights import transformers
from keras_seg.weights.assign import LoadReport
from keras_seg.weights.assign import assign
from keras_seg.weights.checkpoint import CHECKPOINT_SUFFIXES
from keras_seg.weights.checkpoint import Checkpoint
from keras_seg.weights.checkpoint import WeightsError
from keras_seg.weights.checkpoint import is_checkpoint_source
from keras_seg.weights.checkpoint import read_checkpoint
from keras_seg.weights.formats import BACKBONE_HEADS
from keras_seg.weights.formats import BACKBONE_MAPS
from keras_seg.weights.formats import TORCH_LAYOUT_OF
from keras_seg.weights.formats import WEIGHTS_FORMATS
from keras_seg.weights.formats import Layout
from keras_seg.weights.formats import backbone_layout
from keras_seg.weights.parity import ParityMismatch
from keras_seg.weights.torchvision import HEAD_PREFIXES

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "WEIGHTS_FORMATS",
    "Checkpoint",
    "Layout",
    "LoadReport",
    "ParityMismatch",
    "WeightsError",
    "build_from_checkpoint",
    "is_checkpoint_source",
    "load_backbone_checkpoint",
    "read_checkpoint",
    "recognise",
]


def recognise(checkpoint: Checkpoint, weights_format: str | None = None) -> Layout:
    """What `checkpoint` is; `weights_format` (one of `WEIGHTS_FORMATS`) narrows the guess.

    Raises:
        WeightsError: an unknown format name, or keys that match nothing supported.
    """
    if weights_format is not None and weights_format not in WEIGHTS_FORMATS:
        raise WeightsError(
            f"weights_format must be one of {', '.join(WEIGHTS_FORMATS)}, got {weights_format!r}"
        )
    keys = set(checkpoint.tensors)
    if smp.is_smp(keys) and weights_format in (None, "smp"):
        return smp.layout(checkpoint)
    if transformers.is_transformers(keys) and weights_format in (None, "transformers"):
        return transformers.layout(checkpoint)
    if hrnet.is_hrnet(keys) and weights_format in (None, "timm"):
        return hrnet.layout(checkpoint)
    return backbone_layout(keys, checkpoint.source, weights_format)


def _check_backbone(layout: Layout, backbone: str | None, source: str) -> str:
    if backbone in (None, layout.backbone):
        return layout.backbone
    hint = ""
    if TORCH_LAYOUT_OF.get(backbone) == layout.backbone:
        hint = f" (the torch layout of {backbone!r}, whose weights keras.applications has)"
    raise WeightsError(
        f"{source}: the weights are {layout.description}; use backbone={layout.backbone!r}{hint}, "
        f"got backbone={backbone!r}"
    )


def _merge(options: dict[str, Any], key: str, value: Any, source: str, layout: Layout) -> None:
    if key in options and _plain(options[key]) != _plain(value):
        raise WeightsError(
            f"{source}: the weights ({layout.description}) fix {key}={value!r}, got {options[key]!r}"
        )
    options[key] = value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _arguments(
    layout: Layout,
    name: str,
    backbone: str | None,
    num_classes: int | None,
    kwargs: dict[str, Any],
    partial: bool,
    source: str,
) -> tuple[str, int | None, dict[str, Any], bool]:
    """(backbone, num_classes, builder options, whole model?) for building into `layout`."""
    backbone = _check_backbone(layout, backbone, source)
    options = dict(kwargs)
    backbone_kwargs = dict(options.get("backbone_kwargs") or {})
    for key, value in layout.backbone_kwargs.items():
        _merge(backbone_kwargs, key, value, source, layout)
    if backbone_kwargs:
        options["backbone_kwargs"] = backbone_kwargs
    whole = layout.model is not None and layout.model == name
    if layout.model is not None and not whole and not partial:
        raise WeightsError(
            f"{source}: the weights are {layout.description}; build {layout.model!r}, or pass "
            f"weights_partial=True (--partial) to load its encoder into {name!r}"
        )
    if not whole:
        if num_classes is None:
            raise WeightsError(f"{source}: backbone weights need num_classes for {name!r}")
        return backbone, num_classes, options, False
    for key, value in layout.fixed.items():
        _merge(options, key, value, source, layout)
    for key, value in layout.defaults.items():
        options.setdefault(key, value)
    if num_classes is None:
        num_classes = layout.num_classes
    elif num_classes != layout.num_classes and not partial:
        raise WeightsError(
            f"{source}: the weights have {layout.num_classes} classes, "
            f"num_classes={num_classes}; weights_partial=True (--partial) starts a new head"
        )
    return backbone, num_classes, options, True


def _nested_backbone(model: keras.Model, backbone: str) -> keras.Model:
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name == backbone:
            return layer
    raise WeightsError(
        f"model {model.name!r} has no {backbone!r} backbone to take the weights (models with "
        "their own encoder, such as fcn and segnet, load Keras files only)"
    )


def _load_backbone(
    encoder: keras.Model, backbone: str, checkpoint: Checkpoint, layout: Layout, partial: bool
) -> LoadReport:
    if backbone not in BACKBONE_MAPS:
        raise WeightsError(f"backbone {backbone!r} takes no converted weights")
    ignore = HEAD_PREFIXES + (("decoder.", "segmentation_head.") if layout.prefix else ())
    ignore += tuple(layout.prefix + head for head in BACKBONE_HEADS.get(backbone, ()))
    key_map = BACKBONE_MAPS[backbone](encoder, layout.prefix, layout.format)
    return assign(encoder, key_map, checkpoint.tensors, checkpoint.source, partial, ignore)


def build_from_checkpoint(
    builder: Callable[..., keras.Model],
    name: str,
    num_classes: int | None,
    input_shape: tuple[int | None, int | None, int],
    backbone: str | None,
    source: str | os.PathLike,
    weights_format: str | None = None,
    partial: bool = False,
    **kwargs: Any,
) -> tuple[keras.Model, Layout, LoadReport]:
    """Build model `name` with `builder` and fill it from checkpoint `source`.

    Returns:
        The model, what the checkpoint is, and what was loaded and skipped.

    Raises:
        WeightsError: unreadable or unsupported checkpoint, or one that does not fit (the
            message names the key, its shape and the expected one).
    """
    checkpoint = read_checkpoint(source)
    layout = recognise(checkpoint, weights_format)
    backbone, num_classes, options, whole = _arguments(
        layout, name, backbone, num_classes, kwargs, partial, checkpoint.source
    )
    model = builder(
        num_classes=num_classes, input_shape=input_shape, backbone=backbone, weights=None, **options
    )
    if whole and layout.reference and layout.format == "smp":
        # The reference is built with the options the model was built with (the caller may
        # have chosen another output stride than SMP's default, say).
        kwargs = layout.reference["kwargs"] | smp.reference_kwargs(layout.model, options)
        layout = dataclasses.replace(layout, reference={**layout.reference, "kwargs": kwargs})
    if whole:
        report = assign(
            model, layout.model_map(model), checkpoint.tensors, checkpoint.source, partial
        )
    else:
        encoder = _nested_backbone(model, backbone)
        report = _load_backbone(encoder, backbone, checkpoint, layout, partial)
    report.path = checkpoint.path
    _warn_skipped(report, checkpoint.source)
    return model, layout, report


def load_backbone_checkpoint(
    builder: Callable[..., keras.Model],
    name: str,
    source: str | os.PathLike,
    weights_format: str | None = None,
    partial: bool = False,
    **kwargs: Any,
) -> keras.Model:
    """Backbone `name` built with `builder(weights=None, **kwargs)`, filled from `source`
    (an ImageNet classifier, or the encoder of a whole-model checkpoint).

    Raises:
        WeightsError: as `build_from_checkpoint`.
    """
    checkpoint = read_checkpoint(source)
    layout = recognise(checkpoint, weights_format)
    _check_backbone(layout, name, checkpoint.source)
    kwargs = dict(kwargs)
    for key, value in layout.backbone_kwargs.items():
        if key != "dilation_rule":  # how a decoder uses the backbone, not part of its weights
            _merge(kwargs, key, value, checkpoint.source, layout)
    encoder = builder(weights=None, **kwargs)
    report = _load_backbone(encoder, name, checkpoint, layout, partial)
    _warn_skipped(report, checkpoint.source)
    return encoder


def _warn_skipped(report: LoadReport, source: str) -> None:
    if report.skipped or report.unused:
        warnings.warn(f"{source}: partial load: {report.summary()}", stacklevel=3)
