"""Copy PyTorch tensors into Keras layers through a key map, checking every shape.

A key map says, for each Keras layer (by name, nested models included), which PyTorch module
holds its weights: `{"conv1_conv": "conv1", "conv1_bn": "bn1", ...}`; a SeparableConv2D takes
a `(depthwise, pointwise)` pair of modules. The layer's type says how the tensors turn into
Keras weights (`_CONVERTERS`), so a map is names only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

import keras
import numpy as np

from keras_seg.weights.checkpoint import WeightsError

KeyMap = dict[str, str | tuple[str, str]]

# Keys that a checkpoint may hold without a Keras counterpart: BatchNorm's step counter.
IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclass
class LoadReport:
    """What `assign` did: layers loaded, layers skipped (with why) and checkpoint keys unused;
    `path`: the local checkpoint read (set by the caller)."""

    path: str = ""
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"loaded {len(self.loaded)} layers"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(self.skipped)
        if self.unused:
            text += f"; {len(self.unused)} checkpoint keys unused: " + ", ".join(self.unused[:8])
            text += " ..." if len(self.unused) > 8 else ""
        return text


def _conv(tensors, prefix, layer):
    weights = [tensors[f"{prefix}.weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    return weights + ([tensors[f"{prefix}.bias"]] if layer.use_bias else [])


def _depthwise(tensors, prefix, layer):
    weights = [tensors[f"{prefix}.weight"].transpose(2, 3, 0, 1)]  # C1HW -> HWC1
    return weights + ([tensors[f"{prefix}.bias"]] if layer.use_bias else [])


def _separable(tensors, prefixes, layer):
    depthwise, pointwise = prefixes
    weights = [
        tensors[f"{depthwise}.weight"].transpose(2, 3, 0, 1),
        tensors[f"{pointwise}.weight"].transpose(2, 3, 1, 0),
    ]
    return weights + ([tensors[f"{pointwise}.bias"]] if layer.use_bias else [])


def _batch_norm(tensors, prefix, layer):
    names = (["weight"] if layer.scale else []) + (["bias"] if layer.center else [])
    names += ["running_mean", "running_var"]
    return [tensors[f"{prefix}.{name}"] for name in names]


def _dense(tensors, prefix, layer):
    weights = [tensors[f"{prefix}.weight"].T]
    return weights + ([tensors[f"{prefix}.bias"]] if layer.use_bias else [])


def _layer_norm(tensors, prefix, layer):
    names = (["weight"] if layer.scale else []) + (["bias"] if layer.center else [])
    return [tensors[f"{prefix}.{name}"] for name in names]


# Keras layer class -> converter(tensors, prefix, layer) -> the layer's weights in order.
_CONVERTERS: dict[type, Callable] = {
    keras.layers.SeparableConv2D: _separable,
    keras.layers.DepthwiseConv2D: _depthwise,
    keras.layers.Conv2D: _conv,
    keras.layers.BatchNormalization: _batch_norm,
    keras.layers.Dense: _dense,
    keras.layers.LayerNormalization: _layer_norm,
}


def weighted_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Every layer with weights, by name, looking inside nested models."""
    found: dict[str, keras.layers.Layer] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(weighted_layers(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def _converter(layer) -> Callable:
    for cls, converter in _CONVERTERS.items():
        if isinstance(layer, cls):
            return converter
    raise WeightsError(f"layer {layer.name!r} ({type(layer).__name__}) can't take PyTorch weights")


def _keys(prefix: str | tuple[str, str]) -> str:
    return " + ".join(prefix) if isinstance(prefix, tuple) else prefix


def assign(
    model: keras.Model,
    key_map: KeyMap,
    tensors: dict[str, np.ndarray],
    source: str,
    partial: bool = False,
    ignore: tuple[str, ...] = (),
) -> LoadReport:
    """Set the weights of `model`'s layers named in `key_map` from `tensors`.

    Args:
        model: the Keras model (or backbone) to fill.
        key_map: Keras layer name -> PyTorch module prefix (see the module docstring).
        tensors: the checkpoint.
        source: the checkpoint's name, for messages.
        partial: skip layers whose keys are missing or whose shapes differ, and tolerate
            unused keys, listing them in the report; otherwise each is an error.
        ignore: key prefixes that may stay unused (a classifier's head).

    Returns:
        What was loaded, skipped and left unused.

    Raises:
        WeightsError: (without `partial`) a key missing, a shape that differs (naming the
            key, its shape and the expected one), or checkpoint keys nobody reads.
    """
    layers = weighted_layers(model)
    report = LoadReport()
    used: set[str] = set()
    for name, prefix in key_map.items():
        if name not in layers:
            raise WeightsError(f"{source}: model {model.name!r} has no layer {name!r} to load")
        layer = layers[name]
        try:
            values = _converter(layer)(tensors, prefix, layer)
        except KeyError as e:
            message = f"{source}: no key {e.args[0]!r} (for layer {name!r})"
            if not partial:
                raise WeightsError(
                    message + "; weights_partial=True (--partial) skips it"
                ) from None
            report.skipped.append(f"{name} (no {e.args[0]})")
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            bad = next(i for i, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g)
            message = (
                f"{source}: {_keys(prefix)} has shape {got[bad]} in Keras layout, layer {name!r} "
                f"expects {expected[bad]}"
            )
            if not partial:
                raise WeightsError(
                    message + "; weights_partial=True (--partial) skips it"
                ) from None
            report.skipped.append(f"{name} ({_keys(prefix)} {got[bad]} != {expected[bad]})")
            continue
        layer.set_weights(values)
        used.update(_used_keys(prefix, tensors))
        report.loaded.append(name)
    report.unused = sorted(
        key
        for key in tensors
        if key not in used and not key.endswith(IGNORED_SUFFIXES) and not key.startswith(ignore)
    )
    if report.unused and not partial:
        raise WeightsError(
            f"{source}: {len(report.unused)} checkpoint keys have no layer in {model.name!r} "
            f"(first: {', '.join(report.unused[:3])}); wrong model or backbone? "
            "weights_partial=True (--partial) loads the rest"
        )
    return report


def _used_keys(prefix: str | tuple[str, str], tensors) -> list[str]:
    prefixes = prefix if isinstance(prefix, tuple) else (prefix,)
    return [k for k in tensors if any(k.startswith(p + ".") for p in prefixes)]
