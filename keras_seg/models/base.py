"""`SegmentationModel`: the Functional model every keras_seg builder returns.

It is `keras.Model(inputs, outputs)` (same layers, weights, config and training) with one
change: `predict` / `predict_on_batch` run each Conv2D -> BatchNorm pair as one convolution
folded from the current weights (`keras_seg.fold.live_folded_call`), which TensorFlow fuses
with its ReLU. That matters in bfloat16, where Grappler leaves every BatchNorm to run as an
op of its own; in float32 Grappler fuses the pair itself.
Measured on the 2-core AMX Xeon (2026-12-02): see `bench_results/perf.md`,
"A model's own predict folds BatchNorm".
"""

from __future__ import annotations

import keras

from keras_seg.fold import live_folded_call


@keras.saving.register_keras_serializable(package="keras_seg")
class SegmentationModel(keras.Model):
    """A Functional `keras.Model` whose `predict_step` folds BatchNorm into the convolutions.

    Build it as `keras.Model`: `SegmentationModel(inputs, outputs, name=...)`. Saved `.keras`
    files keep the class (`keras_seg` must be imported to load them, as for its layers).
    """

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return live_folded_call(self, x)
