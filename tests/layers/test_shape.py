import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_seg.layers import CropToMatch
from keras_seg.layers import NearestUpsampling2D
from keras_seg.layers import PadToMultiple
from keras_seg.layers import ResizeToMatch


def test_pad_to_multiple_pads_bottom_right_with_zeros_and_crop_undoes_it():
    x = np.arange(1, 1 + 5 * 7, dtype="float32").reshape(1, 5, 7, 1)
    padded = PadToMultiple(4)(x).numpy()
    assert padded.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(padded[:, :5, :7], x)
    assert not padded[:, 5:].any() and not padded[:, :, 7:].any()
    np.testing.assert_array_equal(CropToMatch()([padded, x]).numpy(), x)
    assert PadToMultiple(4)(np.zeros((1, 8, 4, 1), "float32")).shape == (1, 8, 4, 1)
    with pytest.raises(ValueError, match="multiple must be >= 1, got 0"):
        PadToMultiple(0)


def test_resize_to_match_follows_the_reference_at_run_time():
    x = np.random.default_rng(0).random((1, 5, 7, 3)).astype("float32")
    reference = np.zeros((1, 11, 13, 1), "float32")
    np.testing.assert_allclose(
        ResizeToMatch()([x, reference]).numpy(), tf.image.resize(x, (11, 13)).numpy(), atol=1e-6
    )
    corners = ResizeToMatch(align_corners=True)([x, reference]).numpy()
    # align_corners keeps the four corner pixels exactly.
    np.testing.assert_allclose(
        corners[0, [0, 0, -1, -1], [0, -1, 0, -1]], x[0, [0, 0, -1, -1], [0, -1, 0, -1]]
    )
    nearest = ResizeToMatch("nearest")([x, reference]).numpy()
    assert set(np.unique(nearest)) <= set(np.unique(x))
    with pytest.raises(ValueError, match="'bilinear' or 'nearest', got 'cubic'"):
        ResizeToMatch("cubic")


def _op_types(fn, x) -> set[str]:
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("size", [2, 3])
def test_nearest_upsampling_repeats_each_pixel_in_inference_and_training(size, dtype):
    x = tf.cast(np.random.default_rng(0).random((2, 5, 7, 3)), dtype)
    expected = np.repeat(np.repeat(x.numpy(), size, axis=1), size, axis=2)
    layer = NearestUpsampling2D(size, dtype=dtype)
    keras_layer = keras.layers.UpSampling2D(size, dtype=dtype)
    for training in (False, True):
        out = layer(x, training=training)
        assert out.dtype == dtype and out.shape == (2, 5 * size, 7 * size, 3)
        np.testing.assert_array_equal(out.numpy(), expected)
        np.testing.assert_array_equal(out.numpy(), keras_layer(x).numpy())
    # Inference is one resize; training keeps Keras' repeats and so their gradient.
    inference = _op_types(lambda t: layer(t, training=False), x)
    assert "ResizeNearestNeighbor" in inference and "Tile" not in inference
    assert "ResizeNearestNeighbor" not in _op_types(lambda t: layer(t, training=True), x)
    weights = tf.cast(np.random.default_rng(1).random(expected.shape), dtype)

    def gradient(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(fn(x) * weights, "float32"))
        return tape.gradient(loss, x).numpy()

    np.testing.assert_array_equal(
        gradient(lambda t: layer(t, training=True)), gradient(keras_layer)
    )


def test_nearest_upsampling_in_a_model_of_any_size_and_its_config():
    inputs = keras.Input((None, None, 4))
    model = keras.Model(inputs, NearestUpsampling2D(2, name="up")(inputs))
    assert model.output.shape == (None, None, None, 4)
    assert model(np.ones((1, 3, 5, 4), "float32")).shape == (1, 6, 10, 4)
    assert NearestUpsampling2D(2).compute_output_shape((None, 3, None, 4)) == (None, 6, None, 4)
    again = NearestUpsampling2D.from_config(NearestUpsampling2D(3, name="up3").get_config())
    assert again.size == 3 and again.name == "up3"
    with pytest.raises(ValueError, match="size must be an integer >= 1, got 0"):
        NearestUpsampling2D(0)
