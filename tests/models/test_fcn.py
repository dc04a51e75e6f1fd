"""FCN-8s/16s/32s: bilinear-initialised upsampling, skip layout, fc6/fc7 from VGG16, sizes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_seg
from keras_seg.backbones.vgg import load_imagenet_vgg16
from keras_seg.backbones.vgg import vgg16_encoder
from keras_seg.layers import BilinearUpsampling
from keras_seg.models.fcn import FCN_VARIANTS
from tests.helpers import random_images
from tests.helpers import small_model


def test_bilinear_kernel_closed_form():
    kernel = BilinearUpsampling()((4, 4, 2, 3)).numpy()
    filt = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(kernel[:, :, 0, 0], filt)
    np.testing.assert_allclose(kernel[:, :, 1, 1], filt)
    assert not kernel[:, :, 0, 1].any() and not kernel[:, :, 1, 2].any()
    odd = BilinearUpsampling()((3, 3, 1, 1)).numpy()[:, :, 0, 0]
    np.testing.assert_allclose(odd, np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_transposed_conv_starts_as_bilinear_resize(factor):
    layer = keras.layers.Conv2DTranspose(
        3, 2 * factor, strides=factor, padding="same", use_bias=False,
        kernel_initializer=BilinearUpsampling(),
    )  # fmt: skip
    x = np.random.default_rng(0).normal(size=(1, 5, 6, 3)).astype("float32")
    out = layer(x).numpy()
    expected = tf.image.resize(x, (5 * factor, 6 * factor), method="bilinear").numpy()
    assert out.shape == expected.shape
    # Away from the borders (where resize clamps and the transposed conv sees zeros).
    inner = slice(factor, -factor)
    np.testing.assert_allclose(out[:, inner, inner], expected[:, inner, inner], atol=1e-5)
    assert not np.allclose(out[:, :1], expected[:, :1], atol=1e-3)  # the borders do differ


def test_fcn8s_upsampling_layers_start_bilinear_without_bias():
    model = small_model("fcn8s", num_classes=3)
    for name, factor, trainable in [("upscore2", 2, True), ("upscore_pool4", 2, True),
                                    ("upscore8", 8, False)]:  # fmt: skip
        layer = model.get_layer(name)
        assert layer.strides == (factor, factor) and not layer.use_bias
        assert layer.trainable is trainable, name
        expected = BilinearUpsampling()((2 * factor, 2 * factor, 3, 3)).numpy()
        np.testing.assert_array_equal(layer.kernel.numpy(), expected)
    learned = small_model("fcn8s", learn_final_upsampling=True)
    assert learned.get_layer("upscore8").trainable


@pytest.mark.parametrize("name", sorted(FCN_VARIANTS))
def test_skip_layers_per_variant(name):
    model = small_model(name)
    names = {layer.name for layer in model.layers}
    skips, factor = FCN_VARIANTS[name]
    used = {skip for skip, _ in skips}
    for skip in ("pool3", "pool4"):
        assert (f"score_{skip}" in names) == (skip in used), (name, skip)
        assert (f"fuse_{skip}" in names) == (skip in used), (name, skip)
    assert f"upscore{factor}" in names
    assert {"fc6", "fc7", "drop6", "drop7", "score_fr", "vgg16"} <= names
    assert ("upscore2" in names) == bool(skips)
    assert ("upscore_pool4" in names) == ("pool3" in used)


def test_pool3_skip_contributes_to_fcn8s_output():
    model = small_model("fcn8s", num_classes=3)
    x = random_images(1, 64, 64)
    before = model(x).numpy()
    score_pool3 = model.get_layer("score_pool3")
    score_pool3.set_weights([np.zeros_like(w) for w in score_pool3.get_weights()])
    after = model(x).numpy()
    assert np.abs(before - after).max() > 1e-3 * np.abs(before).max()


def test_dropout_zero_removes_dropout_layers():
    names = {layer.name for layer in small_model("fcn32s", dropout=0.0).layers}
    assert "drop6" not in names and "drop7" not in names


def test_imagenet_vgg16_with_fc_layers_loads_into_fcn(monkeypatch):
    # A small stand-in for keras.applications.VGG16(include_top=True): same layer names.
    images = keras.Input((224, 224, 3))
    x = keras.layers.Flatten(name="flatten")(vgg16_encoder(images, width=8)[-1][1])
    x = keras.layers.Dense(32, name="fc1")(x)
    x = keras.layers.Dense(32, name="fc2")(x)
    source = keras.Model(images, keras.layers.Dense(10, name="predictions")(x))
    monkeypatch.setattr(keras.applications, "VGG16", lambda include_top, weights: source)
    model = small_model("fcn8s")  # width 8, fc_channels 32
    load_imagenet_vgg16(model, include_top=True)
    backbone = model.get_layer("vgg16")
    np.testing.assert_array_equal(
        backbone.get_layer("block3_conv2").kernel.numpy(),
        source.get_layer("block3_conv2").kernel.numpy(),
    )
    fc1 = source.get_layer("fc1").kernel.numpy()
    np.testing.assert_array_equal(model.get_layer("fc6").kernel.numpy(), fc1.reshape(7, 7, 64, 32))
    fc2 = source.get_layer("fc2").kernel.numpy()
    np.testing.assert_array_equal(model.get_layer("fc7").kernel.numpy()[0, 0], fc2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backbone": "resnet50"}, "backbone None or 'vgg16', got 'resnet50'"),
        ({"weights": "imagenet", "width": 8}, "needs width=64"),
        ({"weights": "imagenet", "fc_channels": 32}, "needs fc_channels=4096"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_seg.build("fcn8s", num_classes=3, **kwargs)


@pytest.mark.slow
def test_paper_parameter_counts_differ_only_by_score_and_upsampling():
    counts, trainable = {}, {}
    for name in FCN_VARIANTS:
        model = keras_seg.build(name, **keras_seg.get_spec(name).paper_config)
        counts[name] = model.count_params()
        trainable[name] = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
        del model
        keras.backend.clear_session()
    c = 21
    score_pool4, score_pool3 = 512 * c + c, 256 * c + c
    up = {f: (2 * f) ** 2 * c * c for f in (2, 8, 16, 32)}  # bias-free (2f)x(2f) deconvs
    assert counts["fcn8s"] == 134_489_759
    assert counts["fcn16s"] - counts["fcn32s"] == score_pool4 + up[2] + up[16] - up[32]
    assert counts["fcn8s"] - counts["fcn16s"] == score_pool3 + up[2] + up[8] - up[16]
    # The final upsampling is fixed bilinear, as in the paper.
    for name, (_, factor) in FCN_VARIANTS.items():
        assert counts[name] - trainable[name] == up[factor]
    assert abs(trainable["fcn8s"] - 134_400_000) / 134_400_000 < 0.01
