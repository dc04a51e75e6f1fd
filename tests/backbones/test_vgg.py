"""VGG16 backbone: pyramid strides, keras.applications layer names, ImageNet weight loading."""

import keras
import numpy as np
import pytest

from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.backbones.vgg import imagenet_vgg16_weights


@pytest.mark.parametrize("batch_norm", [False, True])
def test_pyramid_strides_and_channels(batch_norm):
    backbone = build_backbone("vgg16", width=8, batch_norm=batch_norm)
    features = backbone(np.zeros((2, 64, 96, 3), "float32"))
    assert sorted(features) == ["P1", "P2", "P3", "P4", "P5"]
    for k, channels in zip(range(1, 6), [8, 16, 32, 64, 64], strict=True):
        assert tuple(features[f"P{k}"].shape) == (2, 64 // 2**k, 96 // 2**k, channels)
    assert get_backbone_spec("vgg16").normalization == "caffe"


def test_deepest_pyramid_takes_the_last_feature_at_each_stride():
    backbone = build_backbone("vgg16_torchvision", width=8, pyramid="deepest")
    features = backbone(np.zeros((1, 64, 96, 3), "float32"))
    # P1..P4: blocks 2..5 before their pools (16, 32, 64, 64 channels); P5: block5's pool.
    for k, channels in zip(range(1, 6), [16, 32, 64, 64, 64], strict=True):
        assert tuple(features[f"P{k}"].shape) == (1, 64 // 2**k, 96 // 2**k, channels)
    assert backbone.output["P4"]._keras_history[0].name == "block5_conv3"
    assert get_backbone_spec("vgg16_torchvision").normalization == "torch"
    with pytest.raises(ValueError, match="pyramid must be one of"):
        build_backbone("vgg16", pyramid="pool5")


def _weight_table(model: keras.Model) -> list[tuple[str, list[tuple[int, ...]]]]:
    return [
        (layer.name, [tuple(w.shape) for w in layer.weights])
        for layer in model.layers
        if layer.weights
    ]


def test_layer_names_and_shapes_match_keras_applications():
    reference = keras.applications.VGG16(include_top=False, weights=None)
    ours = build_backbone("vgg16")
    assert _weight_table(ours) == _weight_table(reference)
    pools = [layer.name for layer in ours.layers if "pool" in layer.name]
    assert pools == [f"block{k}_pool" for k in range(1, 6)]
    assert ours.count_params() == reference.count_params() == 14_714_688


def test_batch_norm_variant_keeps_vgg_conv_names():
    reference = {
        name: shapes
        for name, shapes in _weight_table(keras.applications.VGG16(include_top=False, weights=None))
    }
    ours = build_backbone("vgg16", batch_norm=True)
    convs = {name: shapes for name, shapes in _weight_table(ours) if not name.endswith("_bn")}
    assert convs == reference
    assert sum(layer.name.endswith("_bn") for layer in ours.layers) == 13


@pytest.fixture
def fake_imagenet(monkeypatch):
    """keras.applications.VGG16 with random weights instead of a download; returns the models."""
    built = []
    original = keras.applications.VGG16

    def fake(include_top=True, weights="imagenet", **kwargs):
        assert weights == "imagenet"
        built.append(original(include_top=include_top, weights=None, **kwargs))
        return built[-1]

    monkeypatch.setattr(keras.applications, "VGG16", fake)
    return built


@pytest.mark.parametrize("batch_norm", [False, True])
def test_imagenet_weights_are_copied_by_layer_name(fake_imagenet, batch_norm):
    ours = build_backbone("vgg16", weights="imagenet", batch_norm=batch_norm)
    (source,) = fake_imagenet
    for layer in source.layers:
        if layer.weights:
            for a, b in zip(
                ours.get_layer(layer.name).get_weights(), layer.get_weights(), strict=True
            ):
                np.testing.assert_array_equal(a, b)
    if not batch_norm:
        # Same weights, same layers: same block5_pool features as keras.applications.
        x = np.random.default_rng(0).normal(0, 50, (1, 64, 64, 3)).astype("float32")
        np.testing.assert_allclose(ours(x)["P5"].numpy(), source(x).numpy(), rtol=1e-5, atol=1e-4)


def test_fc_layers_are_convolutionalized(monkeypatch):
    # A small stand-in for VGG16's classifier head: pool5 (7x7xC) -> flatten -> fc1 -> fc2.
    pool5_in = keras.Input((7, 7, 16))
    x = keras.layers.Flatten(name="flatten")(pool5_in)
    x = keras.layers.Dense(8, name="fc1")(x)
    x = keras.layers.Dense(6, name="fc2")(x)
    source = keras.Model(pool5_in, keras.layers.Dense(5, name="predictions")(x))
    monkeypatch.setattr(keras.applications, "VGG16", lambda include_top, weights: source)
    weights = imagenet_vgg16_weights(include_top=True)
    assert sorted(weights) == ["fc6", "fc7"]
    assert weights["fc6"][0].shape == (7, 7, 16, 8)
    assert weights["fc7"][0].shape == (1, 1, 8, 6)
    # fc6 as a 7x7 "valid" conv on pool5 equals fc1 on the flattened pool5.
    pool5 = np.random.default_rng(0).normal(size=(2, 7, 7, 16)).astype("float32")
    conv = keras.layers.Conv2D(8, 7)
    conv.build(pool5.shape)
    conv.set_weights(weights["fc6"])
    expected = source.get_layer("fc1")(source.get_layer("flatten")(pool5)).numpy()
    np.testing.assert_allclose(conv(pool5).numpy().reshape(2, 8), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"weights": "imagenet", "width": 32}, ValueError, "needs width=64.*got 32"),
        ({"weights": "imagenet", "input_shape": (None, None, 1)}, ValueError, "3 input channels"),
        ({"weights": "places365"}, ValueError, "'places365'"),
        ({"output_stride": 16}, ValueError, r"output_stride in \(32,\), got 16"),
        ({"width": 0}, ValueError, "width must be a positive integer"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_backbone("vgg16", **kwargs)


def test_failed_download_names_the_missing_file(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    with pytest.raises(
        OSError, match=r"vgg16_weights_tf_dim_ordering_tf_kernels_notop\.h5.*no network"
    ):
        build_backbone("vgg16", weights="imagenet")
