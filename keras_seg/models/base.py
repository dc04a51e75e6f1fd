"""`SegmentationModel`: the Functional model every keras_seg builder returns.

It is `keras.Model(inputs, outputs)` (same layers, weights, config and training) with one
change: `predict` / `predict_on_batch`, `evaluate` and `fit`'s validation run each Conv2D ->
BatchNorm pair as one convolution folded from the current weights
(`keras_seg.fold.live_folded_call`), which TensorFlow fuses with its ReLU. That matters in
bfloat16, where Grappler leaves every BatchNorm to run as an op of its own; in float32
Grappler fuses the pair itself.
Measured on the 2-core AMX Xeon (2026-12-02): see `bench_results/perf.md`,
"A model's own predict folds BatchNorm".

And `predict` on an in-memory array runs its batches through Keras' own predict step without
building a tf.data pipeline per call (see `SegmentationModel.predict`), traced for the exact
shape of its batches (`keras_seg.tracing`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_seg.fold import live_folded_call
from keras_seg.machine import refuse_training_if_frozen
from keras_seg.machine import weights_assumed_frozen
from keras_seg.tracing import ExactShapes


@keras.saving.register_keras_serializable(package="keras_seg")
class SegmentationModel(keras.Model):
    """A Functional `keras.Model` whose `predict_step` and `test_step` fold BatchNorm into the
    convolutions.

    Build it as `keras.Model`: `SegmentationModel(inputs, outputs, name=...)`. Saved `.keras`
    files keep the class (`keras_seg` must be imported to load them, as for its layers).
    """

    def make_train_function(self, force=False):
        """Keras' train function, refused in a process whose oneDNN kernels keep the first
        weights they see (`keras_seg.machine.inference_only`): `fit`, `train_on_batch`."""
        refuse_training_if_frozen()
        return super().make_train_function(force=force)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return live_folded_call(self, x, self._fold_once())

    def _fold_once(self) -> dict | None:
        """Where this process declares its weights frozen (`keras_seg.machine.inference_only`:
        oneDNN keeps the first filters it sees, training is refused), the dict in which
        `live_folded_call` keeps the folded kernels `predict_step` computes at its first
        call, shared by every trace; None elsewhere (each call folds the current weights).
        `evaluate`'s `test_step` folds on each call."""
        if not weights_assumed_frozen():
            return None
        if getattr(self, "_folded_once", None) is None:
            self._folded_once = {}
        return self._folded_once

    def test_step(self, data):
        """Keras' `test_step` (loss, metrics) with the forward pass folded as `predict_step`'s:
        `evaluate` and `fit`'s validation run the folded convolutions too."""
        self._fold_inference_calls = True  # read by `call` while Keras traces the step
        try:
            return super().test_step(data)
        finally:
            self._fold_inference_calls = False

    def call(self, inputs, training=None, mask=None):
        if getattr(self, "_fold_inference_calls", False) and not training:
            # Folded on each call even where the weights are frozen: inside `__call__` Keras
            # reads the kernels cast to the compute dtype already, so a kept fold would
            # differ from `predict_step`'s by that rounding (see `_fold_once`).
            return live_folded_call(self, inputs)
        return super().call(inputs, training=training, mask=mask)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict`; for one in-memory array (NumPy or an eager tensor) without
        `steps` or `callbacks`, the batches are sliced here and run through the same
        predict step (traced for their exact shape, see `_compiled_predict`), with the same
        progress bar.

        Why not Keras' loop for those: for an array it builds a tf.data pipeline (tracing
        its map functions and creating an iterator) on every call, and converts each
        batch's outputs to NumPy once more for the callbacks' logs even when no callback
        reads them; a segmentation model's outputs are `B x H x W x classes` floats, so
        that copy grows with the batch. U-Net ResNet-34 at 512 on the AMX Xeon (2026-12-03,
        float32): `predict` took 0.32 s for one image and 1.30 s for four where
        `predict_on_batch` took 0.27 and 0.76 s (bench_results/perf.md, "`predict` on an
        array"). Anything else (a dataset, a generator, several inputs, `steps`,
        `callbacks`, a distribution strategy, `steps_per_execution` > 1) takes Keras' path.
        """
        if not self._predicts_array_here(x, steps, callbacks):
            return super().predict(
                x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
            )
        x = tf.convert_to_tensor(x)
        if x.dtype.is_floating and x.dtype != keras.backend.floatx():  # as Keras' adapter
            x = tf.cast(x, keras.backend.floatx())
        batch_size = batch_size or 32  # Keras' default
        starts = range(0, int(x.shape[0]), batch_size)
        progress = keras.callbacks.CallbackList(
            add_progbar=verbose != 0, verbose=verbose, epochs=1, steps=len(starts), model=self
        )
        self.stop_predicting = False
        progress.on_predict_begin()
        outputs = []
        for step, start in enumerate(starts):
            progress.on_predict_batch_begin(step)
            part = x[start : start + batch_size]
            batch = self._compiled_predict(part)([(part,)])
            # Views of the output tensors; the result below is the one copy (`np.asarray`
            # shares the buffer, `Tensor.numpy()` would copy every batch once more).
            outputs.append(keras.tree.map_structure(np.asarray, batch))
            progress.on_predict_batch_end(step)
            if self.stop_predicting:
                break
        progress.on_predict_end()
        if len(outputs) == 1:
            return keras.tree.map_structure(np.array, outputs[0])
        return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *outputs)

    def predict_on_batch(self, x):
        """`keras.Model.predict_on_batch`, traced for the array's exact shape (see
        `_compiled_predict`), returning read-only views of the output tensors instead of
        copies.

        Keras returns `tensor.numpy()`, which TensorFlow copies (tensors are immutable), so
        the logits existed twice at the end of every call: 84 MiB more at DeepLabV3+ 512
        batch 4 with 21 classes, the process's peak RSS (bench_results/perf.md, "The output
        copy of `predict_on_batch`"). Here the arrays share the output tensor's buffer and are
        read-only (writing raises NumPy's "assignment destination is read-only"); `.copy()`
        one to write to it. `predict` still returns writable arrays of its own. Inputs that
        are not one array (see `_predicts_array_here`) take Keras' path and get its copies.
        """
        if not self._predicts_array_here(x, None, None):
            return super().predict_on_batch(x)
        return keras.tree.map_structure(np.asarray, self._compiled_predict(x)([(x,)]))

    def _compiled_predict(self, x):
        """The compiled predict function for the batch `x`: Keras' own predict step traced
        for `x`'s exact shape, for the first `keras_seg.tracing.EXACT_SHAPES` shapes, and
        for later shapes Keras' `predict_function`, traced once with an unknown batch
        dimension.

        Why not Keras' function alone: it is a `reduce_retracing` function, so from the
        second batch size on it runs one graph with an unknown batch dimension, and
        Grappler fuses a bottleneck block's residual add and ReLU into the convolution only
        when the shapes are known (`keras_seg.tracing`: DeepLabV3+ ResNet-50 at 512 in
        bfloat16, 0.149 against 0.121 s a call at batch 1, 0.507 against 0.326 s at batch
        4). Before, every batch size ran that one relaxed graph here.
        """
        self.make_predict_function()
        if self.run_eagerly:
            return self.predict_function
        traces = getattr(self, "_exact_predict", None)
        if traces is None or traces.relaxed is not self.predict_function:
            # Keras' predict step as it wraps it (the default strategy, one step per call:
            # what `_predicts_array_here` admits), without its reduce_retracing.
            traces = ExactShapes(
                self.predict_function.python_function, relaxed=self.predict_function
            )
            self._exact_predict = traces
        fn = traces.for_inputs(x)
        if fn is traces.relaxed:  # one trace for every batch size of this image size
            fn.get_concrete_function([(tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),)])
        return fn

    def _predicts_array_here(self, x, steps, callbacks) -> bool:
        """Whether `predict` slices `x` itself (see `predict`), and `predict_on_batch`
        traces it for its exact shape."""
        return (
            steps is None
            and callbacks is None
            and (isinstance(x, np.ndarray) or (tf.is_tensor(x) and hasattr(x, "numpy")))
            and not isinstance(x, (tf.RaggedTensor, tf.SparseTensor))
            and x.ndim >= 1
            and x.shape[0] > 0
            and len(self.inputs) == 1
            and not tf.distribute.has_strategy()
            and self.distribute_strategy is tf.distribute.get_strategy()
            and (self.steps_per_execution or 1) == 1
        )
