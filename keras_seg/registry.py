"""The one table from model name to builder, and `build`.

A model module registers its builder with `@register_model("name")`; `build` looks the
name up, checks the arguments against the builder's signature and calls it.
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import keras

from keras_seg import weights as weights_module


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes:
        name: the registry name (`unet`, `fcn8s`, ...).
        builder: function `(num_classes, input_shape, backbone, weights, **kwargs) -> keras.Model`.
        small_config: keyword arguments that give a cheap version of the model, for smoke tests
            and demos (a few hundred thousand parameters at most).
        paper_config: keyword arguments of the configuration described in the paper, with
            `num_classes` and `input_shape`; used to pin parameter counts.
        paper_params: the parameter count of `paper_config` reported by (or derived from)
            the paper.
    """

    name: str
    builder: Callable[..., keras.Model]
    small_config: dict[str, Any] = field(default_factory=dict)
    paper_config: dict[str, Any] = field(default_factory=dict)
    paper_params: int | None = None

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.builder) or ""
        return doc.splitlines()[0] if doc else self.name

    @property
    def default_backbone(self) -> str | None:
        return inspect.signature(self.builder).parameters["backbone"].default


_MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    small_config: dict[str, Any] | None = None,
    paper_config: dict[str, Any] | None = None,
    paper_params: int | None = None,
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Decorator that adds a model builder to the registry under `name`.

    The builder must accept `num_classes`, `input_shape`, `backbone` and `weights`.
    """

    def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _MODELS:
            raise ValueError(
                f"Model name {name!r} is already registered by {_MODELS[name].builder}"
            )
        params = inspect.signature(builder).parameters
        missing = [
            p for p in ("num_classes", "input_shape", "backbone", "weights") if p not in params
        ]
        if missing:
            raise TypeError(f"Builder for {name!r} must accept {missing}")
        _MODELS[name] = ModelSpec(
            name=name,
            builder=builder,
            small_config=dict(small_config or {}),
            paper_config=dict(paper_config or {}),
            paper_params=paper_params,
        )
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _import_models()
    return sorted(_MODELS)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; an unknown name lists the known ones."""
    _import_models()
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def build(
    name: str,
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | None = None,
    weights: str | None = None,
    weights_format: str | None = None,
    weights_partial: bool = False,
    **kwargs: Any,
) -> keras.Model:
    """Build a registered segmentation model.

    Args:
        name: registered model name, see `list_models()`.
        num_classes: number of output classes (logit channels), >= 1; `None` takes the
            class count of a whole-model checkpoint in `weights`.
        input_shape: `(height, width, channels)`; height and width may be `None` for any size.
            Images are float pixels in 0..255; normalisation happens inside the model.
        backbone: backbone name for models that take one; `None` picks the model's default.
        weights: `None` for random initialisation, `"imagenet"` for a pretrained backbone,
            a path to a `.weights.h5` file for the whole model, or a PyTorch checkpoint
            (file, Hugging Face folder or `hf://owner/repo`) of torchvision / timm (the
            backbone) or segmentation_models.pytorch (the whole model): `keras_seg.weights`.
        weights_format: "torchvision", "timm", "smp" or "transformers" to name the checkpoint's layout
            instead of recognising it from its keys.
        weights_partial: load what fits and list the rest (a new class count, an encoder
            out of a whole-model checkpoint) instead of failing.
        **kwargs: architecture options of the chosen model (see its builder).

    Returns:
        A Functional `keras.Model` mapping `(B, H, W, C)` images to float32 logits of shape
        `(B, H, W, num_classes)` at the input resolution.

    Example:
        >>> model = keras_seg.build("unet", num_classes=21)
    """
    spec = get_spec(name)
    checkpoint = weights_module.is_checkpoint_source(weights)
    if num_classes is None and checkpoint:
        pass  # the checkpoint's class count; checked when it is read
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(
        d is None or (isinstance(d, int) and d > 0) for d in input_shape
    ):
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive ints or None, got {input_shape!r}"
        )
    if input_shape[2] is None:
        raise ValueError(f"input_shape channels must be known, got {input_shape!r}")
    params = inspect.signature(spec.builder).parameters
    allowed = [p for p in params if p not in ("num_classes", "input_shape", "backbone", "weights")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"Unknown argument(s) {unknown} for model {name!r}. Allowed: {', '.join(allowed) or 'none'}"
        )
    if checkpoint:
        model, _, _ = weights_module.build_from_checkpoint(
            spec.builder,
            name,
            num_classes,
            input_shape,
            backbone,
            weights,
            weights_format,
            weights_partial,
            **kwargs,
        )
        return _without_build_garbage(model)
    if weights_format is not None or weights_partial:
        raise ValueError(
            "weights_format and weights_partial apply to PyTorch checkpoints "
            f"({', '.join(weights_module.CHECKPOINT_SUFFIXES)}, a folder or hf://), got "
            f"weights={weights!r}"
        )
    file_weights = weights if weights not in (None, "imagenet") else None
    model = spec.builder(
        num_classes=num_classes,
        input_shape=input_shape,
        backbone=backbone,
        weights=None if file_weights else weights,
        **kwargs,
    )
    if file_weights:
        model.load_weights(file_weights)
    return _without_build_garbage(model)


def _without_build_garbage(model: keras.Model) -> keras.Model:
    """`model`, after freeing what building it left in reference cycles.

    Builders make throw-away Keras models (the atrous surgery rebuilds a backbone from its
    config and copies the weights over, `backbones.surgery.pyramid_model`); Keras layers, nodes
    and models point at each other, so the discarded ones, a whole backbone's variables with
    them, wait for Python's cyclic collector, whose oldest generation runs rarely. DeepLabV3+
    ResNet-50 (float32) held 218 MiB of tensors after `build` for 102 MiB of parameters, 101
    MiB after this collection (0.11 s of a 2.1 s build; AMX Xeon, 2026-12-03). Peak RSS did
    not move measurably (`tools/ab_process_env.py ... --candidate kept
    AB_KEEP_BUILD_GARBAGE=1`: predict_on_batch at 512 batch 4 1499 -> 1488 MiB, training
    1861 -> 1904 MiB, medians of 3, run-to-run noise ~50 MiB): the BFC allocator keeps the
    pages and reuses them for activations; what it gives back is room for anything else
    (a tf.data cache, a second model) and memory to the system under malloc.
    """
    gc.collect()
    return model


def _import_models() -> None:
    # Importing the package runs every model module's @register_model.
    import keras_seg.models  # noqa: F401


def model_rows(num_classes: int = 21, flops_size: int | None = None) -> Iterator[dict[str, Any]]:
    """One row per registered model at its default configuration: `model`, `backbone`,
    `params`, `gflops` (counted on a `flops_size` square image; None skips the count, which
    traces and freezes each graph) and `description`."""
    for name in list_models():
        spec = get_spec(name)
        model = build(name, num_classes=num_classes)
        gflops = None
        if flops_size:
            from keras_seg.flops import count_flops

            gflops = count_flops(model, flops_size, flops_size) / 1e9
        yield {
            "model": name,
            "backbone": spec.default_backbone or "-",
            "params": model.count_params(),
            "gflops": gflops,
            "description": spec.summary,
        }
        del model
        keras.backend.clear_session()
