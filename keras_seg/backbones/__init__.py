"""Backbones: image -> feature pyramid {"P1": stride 2, ..., "P5": stride 32}.

A backbone declares the levels it provides (`BackboneSpec.levels`, all five by default); a
transformer such as MiT starts at stride 4 and has "P2".."P5" only, and a decoder that needs a
level the backbone lacks says so (`require_levels`).

Each backbone is a Functional `keras.Model` with dict outputs "P1".."P5", so any decoder can
sit on any backbone. With `output_stride` 16 or 8 the last stage(s) use atrous convolution
instead of striding, so "P5" (and "P4") keep the resolution of stride 16 (or 8).
A backbone expects pixels already normalised with its `normalization` scheme
(see `keras_seg.layers.NORMALIZATIONS`); the segmentation model applies that first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import keras

import keras_seg.weights

ALL_LEVELS = ("P1", "P2", "P3", "P4", "P5")


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable[..., keras.Model]
    normalization: str
    output_strides: tuple[int, ...]
    levels: tuple[str, ...] = ALL_LEVELS
    # Keyword arguments of a cheap version, for the registry-driven tests (tests/backbones).
    small_config: dict[str, Any] = field(default_factory=dict)


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    *,
    normalization: str,
    output_strides: tuple[int, ...] = (32,),
    levels: tuple[str, ...] = ALL_LEVELS,
    small_config: dict[str, Any] | None = None,
):
    """Decorator registering `builder(input_shape, weights, output_stride, **kwargs) -> keras.Model`.

    `levels`: the pyramid levels its outputs hold (a subset of "P1".."P5").
    `small_config`: builder options of a cheap version; the shared backbone tests build it, so
    a new backbone is checked without test edits.
    """
    unknown = sorted(set(levels) - set(ALL_LEVELS))
    if unknown or not levels:
        raise ValueError(f"levels must be a non-empty subset of {ALL_LEVELS}, got {levels!r}")

    def decorator(builder):
        if name in _BACKBONES:
            raise ValueError(f"Backbone {name!r} is already registered")
        _BACKBONES[name] = BackboneSpec(
            name,
            builder,
            normalization,
            tuple(output_strides),
            tuple(levels),
            dict(small_config or {}),
        )
        return builder

    return decorator


def list_backbones() -> list[str]:
    _import_backbones()
    return sorted(_BACKBONES)


def get_backbone_spec(name: str) -> BackboneSpec:
    _import_backbones()
    if name not in _BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}. Known backbones: {', '.join(sorted(_BACKBONES))}"
        )
    return _BACKBONES[name]


def require_levels(backbone: str, levels: tuple[str, ...], model: str) -> None:
    """Raise a one-line ValueError when `backbone` lacks a pyramid level `model` needs."""
    spec = get_backbone_spec(backbone)
    missing = [level for level in levels if level not in spec.levels]
    if missing:
        raise ValueError(
            f"{model} needs pyramid level(s) {', '.join(missing)}, which backbone {backbone!r} "
            f"does not provide (it has {', '.join(spec.levels)})"
        )


def build_backbone(
    name: str,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    weights: str | None = None,
    output_stride: int = 32,
    weights_format: str | None = None,
    weights_partial: bool = False,
    **kwargs,
) -> keras.Model:
    """Build backbone `name` as a Functional model with outputs {"P1".."P5"} (its `levels`).

    Args:
        name: a registered backbone (`list_backbones()`).
        input_shape: `(H, W, C)` of normalised pixels.
        weights: `None`, "imagenet" (keras.applications) or a torchvision/timm checkpoint
            (file, Hugging Face folder or `hf://owner/repo`; see `keras_seg.weights`).
        output_stride: 32, or 16/8 where the backbone dilates.
        weights_format: "torchvision" / "timm" / "smp" / "transformers" instead of recognising the keys.
        weights_partial: load what fits and list the rest instead of failing.
        **kwargs: the backbone's own options (`width`, `alpha`, `batch_norm`, ...).

    Raises:
        ValueError: unknown name, an output stride the backbone does not support, or
            weights it can't take (`keras_seg.weights.WeightsError` for checkpoints).
    """
    spec = get_backbone_spec(name)
    if output_stride not in spec.output_strides:
        raise ValueError(
            f"Backbone {name!r} supports output_stride in {spec.output_strides}, got {output_stride!r}"
        )
    if keras_seg.weights.is_checkpoint_source(weights):
        return keras_seg.weights.load_backbone_checkpoint(
            spec.builder,
            name,
            weights,
            weights_format,
            weights_partial,
            input_shape=input_shape,
            output_stride=output_stride,
            **kwargs,
        )
    if weights not in (None, "imagenet"):
        raise ValueError(
            "Backbone weights must be None, 'imagenet' or a torchvision/timm checkpoint "
            f"({', '.join(keras_seg.weights.CHECKPOINT_SUFFIXES)}, a folder or hf://), "
            f"got {weights!r}"
        )
    return spec.builder(
        input_shape=input_shape, weights=weights, output_stride=output_stride, **kwargs
    )


def _import_backbones() -> None:
    # Importing each module runs its @register_backbone.
    from keras_seg.backbones import hrnet  # noqa: F401
    from keras_seg.backbones import mit  # noqa: F401
    from keras_seg.backbones import mobilenet_v2  # noqa: F401
    from keras_seg.backbones import resnet  # noqa: F401
    from keras_seg.backbones import vgg  # noqa: F401
