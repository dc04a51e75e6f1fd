"""`SegmentationModel.predict` on an in-memory array: Keras' results without its tf.data
pipeline per call (keras_seg/models/base.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.trainers.data_adapters import array_data_adapter

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


def test_predict_on_an_array_equals_keras_with_a_partial_last_batch(no_array_pipeline):
    model = small_model("unet")
    x = random_images(5, 48, 40)
    got = model.predict(x, batch_size=2, verbose=0)
    assert got.shape == (5, 48, 40, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, model.predict_on_batch(x), rtol=1e-5, atol=1e-5)
    # batches of 2, 2 and 1 ran through one trace (unknown batch dimension)
    assert model.predict_function.experimental_get_tracing_count() == 1
    model.predict(random_images(3, 48, 40, seed=1), verbose=0)
    assert model.predict_function.experimental_get_tracing_count() == 1


def test_predict_on_batch_traces_once_for_every_batch_size():
    model = small_model("unet")
    x = random_images(4, 48, 40)
    want = model(x, training=False).numpy()
    got = [model.predict_on_batch(x[:1]), model.predict_on_batch(x)]
    assert model.predict_function.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(got[1], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0], want[:1], rtol=1e-5, atol=1e-5)
    pixels = np.round(x).astype(np.uint8)  # a dtype of its own: one more trace, same results
    np.testing.assert_allclose(
        model.predict_on_batch(pixels),
        model.predict_on_batch(pixels.astype(np.float32)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert model.predict_function.experimental_get_tracing_count() == 2


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
