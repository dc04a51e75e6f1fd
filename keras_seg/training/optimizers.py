"""keras_seg's optimizers: Keras's SGD and AdamW, each variable's update waiting for its
gradient, and with layer-wise learning-rate multipliers.

Each update waits for its gradient (`UpdateWithGradientMixin`): in a traced training step
TensorFlow's executor runs each op as soon as its inputs are ready. Keras's SGD computes
`momentum * m` from the momentum slot alone and AdamW's decoupled decay `w * wd * lr` from the
weight alone, so both run while the backward pass has barely begun and each holds a copy the
size of its variable until that variable's gradient arrives: for U-Net ResNet-34 under SGD,
98 MiB (one copy of the whole momentum) among what is allocated at the step's peak, found with
`keras-seg benchmark memory` (the profiler's allocation events). PyTorch updates in place after
`backward()`. Keras has no setting for the order, hence the mixin; the steps are Keras's own
(tests/training/test_optimizers.py compares them).

Layer-wise learning-rate multipliers:

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

import contextlib
import re
from collections.abc import Mapping
from collections.abc import Sequence

import keras
import tensorflow as tf
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


class UpdateWithGradientMixin:
    """Each variable's update, its decoupled weight decay included, waits for that variable's
    gradient (see the module docstring)."""

    def _apply_weight_decay(self, variables):
        """Decay happens in `update_step`, with the variable's own rate, after its gradient."""

    def _learning_rate_factor(self, variable) -> float:
        return 1.0

    def update_step(self, gradient, variable, learning_rate):
        # Eager steps already run in program order. One control input per op, not a barrier
        # over all gradients: that kept every gradient alive to the end of the backward pass
        # and raised peak RSS by 150 MiB (U-Net ResNet-34), although TensorFlow's live peak fell.
        after = (
            contextlib.nullcontext()
            if tf.executing_eagerly()
            else tf.control_dependencies([gradient])
        )
        with after:
            factor = self._learning_rate_factor(variable)
            if factor != 1.0:
                learning_rate = ops.multiply(learning_rate, factor)
            if self.weight_decay is not None and self._use_weight_decay(variable):
                # Keras's own expression, in its order: bit for bit the same decay.
                lr = ops.cast(learning_rate, variable.dtype)
                wd = ops.cast(self.weight_decay, variable.dtype)
                variable.assign(variable - variable * wd * lr)
            self._apply_update(gradient, variable, learning_rate)

    def _apply_update(self, gradient, variable, learning_rate):
        """The optimizer's own step for one variable (after decay and the rate's factor)."""
        super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="keras_seg")
class SGD(UpdateWithGradientMixin, keras.optimizers.SGD):
    """`keras.optimizers.SGD`, each variable's update waiting for its gradient.

    With momentum, a dense gradient and no distribution strategy, the step is one in-place op
    per variable, TensorFlow's `ResourceApplyKerasMomentum` (the kernel Keras 2 used; `m =
    momentum * m - lr * g; w += m`, or Nesterov's `w += momentum * m - lr * g`): Keras 3's
    element-wise ops allocate two momentum-sized temporaries per variable (U-Net ResNet-34
    training: peak RSS 1639 -> 1603 MiB, `bench_results/perf.md`).
    """

    def _apply_update(self, gradient, variable, learning_rate):
        if (
            self.momentum == 0
            or not isinstance(gradient, tf.Tensor)
            or tf.distribute.has_strategy()
        ):
            return super()._apply_update(gradient, variable, learning_rate)
        m = self.momentums[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=m.handle,
            lr=tf.cast(learning_rate, variable.dtype),
            grad=tf.cast(gradient, variable.dtype),
            momentum=tf.cast(self.momentum, variable.dtype),
            use_nesterov=self.nesterov,
        )


@keras.saving.register_keras_serializable(package="keras_seg")
class AdamW(UpdateWithGradientMixin, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW`, each variable's update waiting for its gradient."""


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

    def _learning_rate_factor(self, variable) -> float:
        return self._lr_factors[self._get_variable_index(variable)]

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


@keras.saving.register_keras_serializable(package="keras_seg")
class LayerwiseSGD(LayerwiseMixin, SGD):
    """`keras.optimizers.SGD` with per-variable learning-rate factors (`lr_multipliers`)."""


@keras.saving.register_keras_serializable(package="keras_seg")
class LayerwiseAdamW(LayerwiseMixin, AdamW):
    """`keras.optimizers.AdamW` with per-variable learning-rate factors (`lr_multipliers`)."""
