"""`SegmentationModel.predict` on an in-memory array: Keras' results without its tf.data
pipeline per call (keras_seg/models/base.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.trainers.data_adapters import array_data_adapter

from keras_seg.tracing import EXACT_SHAPES
from tests.helpers import random_images
from tests.helpers import small_model


def keras_predict(model, x, **kwargs):
    """What Keras' own `predict` returns for the same call."""
    return keras.Model.predict(model, x, **kwargs)


@pytest.fixture
def no_array_pipeline(monkeypatch):
    """Make Keras' per-call tf.data pipeline for arrays fail if anything builds it."""

    def fail(self):
        raise AssertionError("Keras' ArrayDataAdapter pipeline was built")

    monkeypatch.setattr(array_data_adapter.ArrayDataAdapter, "get_tf_dataset", fail)


def _exact_traces(model) -> int:
    """How many exact-shape traces the model's predict step has (`keras_seg.tracing`)."""
    return model._exact_predict.exact.experimental_get_tracing_count()


def test_predict_on_an_array_equals_keras_with_a_partial_last_batch(no_array_pipeline):
    model = small_model("unet")
    x = random_images(5, 48, 40)
    got = model.predict(x, batch_size=2, verbose=0)
    assert got.shape == (5, 48, 40, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, model.predict_on_batch(x), rtol=1e-5, atol=1e-5)
    # batches of 2, 2 and 1, and then one of 5: a trace for each exact shape
    assert _exact_traces(model) == 3
    model.predict(random_images(3, 48, 40, seed=1), verbose=0)
    assert _exact_traces(model) == 4


def test_predict_on_batch_traces_each_exact_shape_then_one_relaxed_graph():
    """Each new input shape (batch size, image size, dtype) gets a trace of its own, for the
    first EXACT_SHAPES shapes; later shapes share one trace with an unknown batch dimension
    (Keras' `predict_function`), so a caller whose sizes keep changing stops tracing."""
    model = small_model("unet")
    x = random_images(6, 48, 40)
    want = model(x, training=False).numpy()
    for size in (1, 2, 3):
        np.testing.assert_allclose(model.predict_on_batch(x[:size]), want[:size], atol=1e-5)
    pixels = np.round(x[:1]).astype(np.uint8)  # a dtype of its own: a fourth exact trace
    np.testing.assert_allclose(
        model.predict_on_batch(pixels),
        model.predict_on_batch(pixels.astype(np.float32)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert _exact_traces(model) == EXACT_SHAPES == 4
    exact = model._exact_predict.exact
    for size in (1, 2, 3):  # each batch size has a trace of its own: asking makes no new one
        exact.get_concrete_function([(tf.TensorSpec((size, 48, 40, 3)),)])
    assert _exact_traces(model) == 4
    assert model.predict_function.experimental_get_tracing_count() == 0
    for size in (4, 5, 6, 5):  # past the limit: one relaxed trace serves every batch size
        np.testing.assert_allclose(model.predict_on_batch(x[:size]), want[:size], atol=1e-5)
    assert model.predict_function.experimental_get_tracing_count() == 1
    model.predict_on_batch(x[:2])  # a shape traced exactly before still runs that trace
    assert _exact_traces(model) == 4
    assert model.predict_function.experimental_get_tracing_count() == 1


def test_compile_starts_the_exact_traces_afresh():
    """`compile` gives the model a new predict function (Keras rebuilds it); the exact
    traces follow it instead of running the old one."""
    model = small_model("unet")
    x = random_images(2, 32, 32)
    first = model.predict_on_batch(x).copy()
    old = model._exact_predict
    model.compile(loss="sparse_categorical_crossentropy")
    np.testing.assert_allclose(model.predict_on_batch(x), first, rtol=1e-6, atol=1e-6)
    assert model._exact_predict is not old
    assert model._exact_predict.relaxed is model.predict_function


_RESIDUAL_FUSION = """
import sys
import numpy as np
import keras_seg
model = keras_seg.build(
    "deeplabv3plus", num_classes=3, backbone="resnet50", input_shape=(64, 64, 3)
)
model.predict_on_batch(np.ones((1, 64, 64, 3), "float32"))
model.predict_on_batch(np.ones((2, 64, 64, 3), "float32"))  # traced before: untimed
print("MEASURED", flush=True)
model.predict_on_batch(np.ones((2, 64, 64, 3), "float32"))
"""


def test_a_second_batch_size_still_fuses_the_residual_adds(tmp_path):
    """Why the exact traces: with an unknown batch dimension (what Keras' reduce_retracing
    predict function runs from the second batch size on) Grappler leaves a ResNet
    bottleneck's residual add out of the convolution before it. oneDNN's log of the batch-2
    call shows each of ResNet-50's 16 adds as a `sum` post-op of a convolution."""
    script = tmp_path / "fusion.py"
    script.write_text(_RESIDUAL_FUSION)
    env = os.environ | {
        "ONEDNN_VERBOSE": "1",
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    run = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    measured = run.stdout.split("MEASURED", 1)[1].splitlines()
    convolutions = [line for line in measured if ",exec," in line and ",convolution," in line]
    assert len(convolutions) > 50
    assert sum("attr-post-ops:sum" in line for line in convolutions) >= 16


def test_predict_on_batch_returns_read_only_views_that_later_calls_leave_alone():
    model = small_model("unet")
    x = random_images(4, 32, 32)
    want = model(x, training=False).numpy()
    first = model.predict_on_batch(x[:2])
    assert not first.flags.owndata and not first.flags.writeable  # the tensor's own buffer
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0, 0, 0] = 0.0
    second = model.predict_on_batch(x[2:])  # must not reuse the buffer `first` still views
    np.testing.assert_allclose(first, want[:2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(second, want[2:], rtol=1e-5, atol=1e-5)
    for batch_size in (4, 3):  # one batch, then a concatenation: arrays of their own
        got = model.predict(x, batch_size=batch_size, verbose=0)
        assert got.flags.owndata and got.flags.writeable
        got[0, 0, 0, 0] = 0.0


def test_predict_equals_keras_for_float64_uint8_and_tensor_inputs(no_array_pipeline):
    model = small_model("unet")
    x = random_images(3, 32, 32)
    want = model.predict_on_batch(x)
    for inputs in (x.astype(np.float64), tf.constant(x)):
        np.testing.assert_allclose(
            model.predict(inputs, batch_size=2, verbose=0), want, rtol=1e-5, atol=1e-5
        )
    pixels = np.round(x).astype(np.uint8)
    np.testing.assert_allclose(
        model.predict(pixels, batch_size=2, verbose=0),
        model.predict_on_batch(pixels.astype(np.float32)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_several_outputs_come_back_as_keras_gives_them(no_array_pipeline):
    model = small_model("pspnet", aux_head=True)
    x = random_images(3, 64, 64)
    got = model.predict(x, batch_size=2, verbose=0)
    assert isinstance(got, dict) and set(got) == {"logits", "aux_logits"}
    want = model.predict_on_batch(x)
    for key in got:
        assert got[key].shape == (3, 64, 64, 3)
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)


def test_other_inputs_take_keras_path_with_the_same_results():
    model = small_model("unet")
    x = random_images(3, 32, 32)
    want = model.predict_on_batch(x)
    seen = []

    class Outputs(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            seen.append(logs["outputs"].shape)

    got = model.predict(x, batch_size=2, verbose=0, callbacks=[Outputs()])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert seen == [(2, 32, 32, 3), (1, 32, 32, 3)]  # Keras gives callbacks the outputs
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(2)
    np.testing.assert_allclose(model.predict(dataset, verbose=0), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        model.predict(x, steps=1, batch_size=3, verbose=0), want, rtol=1e-5, atol=1e-5
    )


def test_progress_bar_and_eager_mode(capsys):
    model = small_model("unet")
    x = random_images(3, 32, 32)
    model.predict(x, batch_size=2, verbose=1)
    assert "2/2" in capsys.readouterr().out
    model.compile(run_eagerly=True)
    np.testing.assert_allclose(
        model.predict(x, batch_size=2, verbose=0),
        keras_predict(model, x, batch_size=2, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
