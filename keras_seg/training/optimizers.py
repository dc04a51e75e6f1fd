"""Layer-wise learning-rate multipliers for any Keras optimizer.

`train.lr_multipliers` maps regular expressions on variable paths (`variable.path`, e.g.
`decoder_fuse_conv/kernel`, `logits/bias`) to factors of the learning rate: SegFormer trains its
decoder at 10x the encoder's rate (mmsegmentation's `paramwise_cfg` `lr_mult=10.` on `head`).
The first pattern, in the config's order, that `re.search`es a path gives its factor; other
variables keep 1.

Scaling gradients would not do: Adam-family steps are invariant to the gradient's scale. So the
factor multiplies the learning rate that `update_step` receives, per variable, for every
optimizer; and the decoupled weight decay is applied inside the same per-variable step with the
scaled rate (`w -= lr * factor * wd * w`), as PyTorch's per-parameter-group `lr` does. Keras has
no per-variable learning rate of its own (one optimizer per group would also need its own step
counter and schedule copy), hence this small subclass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Sequence

import keras
from keras import ops


def variable_factors(
    multipliers: Mapping[str, float], paths: Sequence[str], where: str = "train.lr_multipliers"
) -> list[float]:
    """The learning-rate factor of each path: the first matching pattern's value, else 1.

    Raises:
        ValueError: a pattern that matches no path (a typo would otherwise do nothing); the
            message names the pattern and shows some of the paths.
    """
    compiled = [(re.compile(p), float(f)) for p, f in multipliers.items()]
    factors, used = [], set()
    for path in paths:
        factor = 1.0
        for pattern, value in compiled:
            if pattern.search(path):
                factor = value
                used.add(pattern.pattern)
                break
        factors.append(factor)
    unused = [p for p in multipliers if p not in used]
    if unused:
        shown = ", ".join(list(paths)[:3] + ["..."] + list(paths)[-3:])
        raise ValueError(
            f"{where}: pattern {unused[0]!r} matches no trainable variable path "
            f"(earlier patterns win; {len(paths)} paths: {shown})"
        )
    return factors


class LayerwiseMixin:
    """Per-variable learning-rate factors for a Keras optimizer (see the module docstring).

    Args:
        lr_multipliers: `{regex on variable.path: factor}`.
    """

    def __init__(self, *args, lr_multipliers: Mapping[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self._lr_factors: list[float] = []

    def build(self, variables):
        super().build(variables)
        self._lr_factors = variable_factors(self.lr_multipliers, [v.path for v in variables])

    def _apply_weight_decay(self, variables):
        """Decay happens in `update_step`, with each variable's own rate."""

    def update_step(self, gradient, variable, learning_rate):
        factor = self._lr_factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            rate = ops.cast(learning_rate, variable.dtype) * ops.cast(
                self.weight_decay, variable.dtype
            )
            self.assign_sub(variable, ops.multiply(variable, rate))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


@keras.saving.register_keras_serializable(package="keras_seg")
class LayerwiseSGD(LayerwiseMixin, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with per-variable learning-rate factors (`lr_multipliers`)."""


@keras.saving.register_keras_serializable(package="keras_seg")
class LayerwiseAdamW(LayerwiseMixin, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with per-variable learning-rate factors (`lr_multipliers`)."""
