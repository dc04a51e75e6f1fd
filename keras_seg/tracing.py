"""Inference graphs traced for the exact shapes they run on.

A `tf.function` with `reduce_retracing=True` (Keras' `predict_function`, and what a
`tf.data` batch with an unknown batch dimension gives any function) runs one graph with
`None` for the dimensions that changed between calls. Grappler optimises that graph with
those dimensions unknown, and its remapper then fuses less: a ResNet bottleneck's residual
`Add` and the `ReLU` after it stay two passes over the activation instead of post-ops of
the convolution before them (the remapper fuses the add only when it can show both inputs
have the same shape). DeepLabV3+ ResNet-50 (the peers row) at 512 on the 2-core AMX Xeon,
`predict_on_batch` in bfloat16, fresh processes alternating: batch 1 0.149 s a call with
the relaxed trace against 0.121 s traced for `(1, 512, 512, 3)`, batch 4 0.507 against
0.326 s; in TensorFlow's profile the relaxed graph has 20 ms of `AddV2` and 18 ms of `Relu`
a call at batch 1 that the exact one does not. float32 (0.372 against 0.373 s) and U-Net
ResNet-34 (basic blocks) did not change (2026-12-03, bench_results/perf.md, "Exact shapes").

`ExactShapes` traces a function once per input shape, for the first `limit` shapes it
sees, and runs every later shape through one relaxed trace, so that a caller whose shapes
keep changing (many image sizes, batch remainders) does not trace without end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

# Distinct input shapes traced exactly, per function: a batch size and the last, smaller
# batch of `predict`, a second image size or batch size, with room to spare.
EXACT_SHAPES = 4


def _shape_key(args) -> tuple:
    return tuple(
        (tuple(value.shape), tf.as_dtype(value.dtype).name) for value in tf.nest.flatten(args)
    )


class ExactShapes:
    """`fn` traced for each exact input shape, for the first `limit` shapes; other shapes go
    to `relaxed` (by default `fn` traced with `reduce_retracing=True`).

    Example:
        >>> forward = ExactShapes(lambda x: model(x, training=False))
        >>> forward(tf.zeros((1, 512, 512, 3)))  # traced for (1, 512, 512, 3)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        relaxed: Callable[..., Any] | None = None,
        limit: int = EXACT_SHAPES,
    ):
        self.exact = tf.function(fn)
        self.relaxed = relaxed or tf.function(fn, reduce_retracing=True)
        self.limit = limit
        self.shapes: set[tuple] = set()

    def for_inputs(self, *args) -> Callable[..., Any]:
        """The function that runs `args`: the exact one while its shape is among the first
        `limit`, else `relaxed`."""
        key = _shape_key(args)
        if key in self.shapes or len(self.shapes) < self.limit:
            self.shapes.add(key)
            return self.exact
        return self.relaxed

    def __call__(self, *args):
        return self.for_inputs(*args)(*args)
