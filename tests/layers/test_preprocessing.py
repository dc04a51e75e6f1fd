"""Normalize: the keras.applications schemes in float, and int8 TFLite that keeps them."""

import keras
import numpy as np
import pytest

from keras_seg.layers import NORMALIZATIONS
from keras_seg.layers import Normalize
from tests.helpers import int8_tflite_outputs
from tests.helpers import random_images

PREPROCESS = {
    "caffe": keras.applications.vgg16.preprocess_input,
    "tf": keras.applications.mobilenet_v2.preprocess_input,
}


@pytest.mark.parametrize("mode", sorted(PREPROCESS))
def test_normalize_equals_keras_applications_preprocessing(mode):
    x = random_images(2, 5, 7)
    expected = PREPROCESS[mode](x.copy())
    np.testing.assert_allclose(Normalize(mode)(x).numpy(), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_mixed_bfloat16_rounds_the_float32_result_once(mode):
    x = random_images(2, 9, 11)
    exact = Normalize(mode)(x).numpy()
    mixed = Normalize(mode, dtype="mixed_bfloat16")(x)
    assert mixed.dtype == "bfloat16"
    # Each value is float32's, rounded to the nearest bfloat16 (not computed in bfloat16).
    np.testing.assert_array_equal(mixed.numpy(), exact.astype(mixed.numpy().dtype))
    # A float64 layer computes in float64.
    mean, std, bgr = NORMALIZATIONS[mode]
    pixels = x.astype("float64")[..., ::-1] if bgr else x.astype("float64")
    np.testing.assert_allclose(
        Normalize(mode, dtype="float64")(x.astype("float64")).numpy(),
        (pixels - np.array(mean)) / np.array(std),
        rtol=1e-12,
    )
    # A saved layer keeps taking its pixels uncast.
    assert Normalize.from_config(Normalize(mode).get_config()).autocast is False


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_int8_tflite_keeps_the_normalized_pixels(mode):
    # TF 2.21 quantized the caffe scheme's channel flip (REVERSE_V2) with a scale of its own
    # while its kernel copies int8 values unchanged: every pixel came out wrong by up to
    # half the range, so SegNet and FCN (VGG16, caffe) gave garbage in int8.
    keras.utils.set_random_seed(0)
    images = keras.Input((16, 16, 3), batch_size=1, name="images")
    normalized = Normalize(mode, name="normalize")(images)
    model = keras.Model(images, keras.layers.Conv2D(4, 1, name="conv")(normalized))
    calibration = random_images(16, 16, 16, seed=1)
    x = random_images(1, 16, 16, seed=2)
    (out,) = int8_tflite_outputs(model, calibration, x)
    expected = model(x).numpy()
    spread = expected.max() - expected.min()
    # int8 has 256 levels: a few steps of error is quantization, more is a wrong graph.
    assert np.abs(out - expected).max() < 0.02 * spread
