"""Count a model's floating-point operations with the TensorFlow profiler (not a formula).

The profiler counts a multiply-add as two FLOPs, as the papers' GFLOPs figures do.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (  # no public equivalent
    convert_variables_to_constants_v2,
)


def count_flops(
    model: keras.Model, height: int = 512, width: int = 512, batch_size: int = 1
) -> int:
    """FLOPs of one inference pass of `model` on a `(batch_size, height, width, C)` input."""
    channels = model.input_shape[-1]
    spec = tf.TensorSpec([batch_size, height, width, channels], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        options = (
            tf.compat.v1.profiler.ProfileOptionBuilder(
                tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
            )
            .with_empty_output()
            .build()
        )
        info = tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options)
    return int(info.total_float_ops)
