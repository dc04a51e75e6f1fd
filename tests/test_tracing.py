"""`keras_seg.tracing.ExactShapes`: a trace per exact input shape, up to a limit."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_seg.inference import Predictor
from keras_seg.tracing import EXACT_SHAPES
from keras_seg.tracing import ExactShapes
from tests.helpers import random_images
from tests.helpers import small_model


def test_each_shape_is_traced_exactly_up_to_the_limit_then_one_relaxed_graph():
    traced = []

    def double(x):
        traced.append(tuple(x.shape))
        return x * 2

    forward = ExactShapes(double, limit=2)
    for size in (1, 2, 1, 3, 4, 3, 5):
        np.testing.assert_array_equal(forward(tf.ones((size, 2))), np.full((size, 2), 2.0))
    # 1 and 2 exactly; past the limit the relaxed function traces 3, then None for all others
    assert traced == [(1, 2), (2, 2), (3, 2), (None, 2)]
    assert forward.for_inputs(tf.ones((2, 2))) is forward.exact
    assert forward.for_inputs(tf.ones((6, 2))) is forward.relaxed
    assert forward.for_inputs(tf.ones((1, 2), tf.int32)) is forward.relaxed  # a new dtype
    assert ExactShapes(double).limit == EXACT_SHAPES


def test_a_predictor_traces_each_image_size_exactly():
    """`Predictor` (evaluate, predict, the demo, the export checks) runs its folded copy
    through `ExactShapes`: two image sizes, two exact traces, the same logits as the model."""
    model = small_model("unet")
    predictor = Predictor(model)
    for height in (64, 48, 64):
        x = random_images(1, height, 64)
        want = model(x, training=False).numpy()
        np.testing.assert_allclose(predictor.logits(x), want, rtol=1e-4, atol=1e-4)
    assert predictor._forward.exact.experimental_get_tracing_count() == 2
    assert predictor._forward.relaxed.experimental_get_tracing_count() == 0
