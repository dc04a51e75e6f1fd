"""ResNet and MobileNetV2 backbones (keras.applications and torchvision layouts): pyramid sizes, atrous output stride, weight-preserving surgery."""

import functools

import keras
import numpy as np
import pytest

from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.backbones import mobilenet_v2
from keras_seg.backbones import resnet
from keras_seg.backbones.surgery import dilate_config
from keras_seg.backbones.surgery import pyramid_model

# Cheapest variant of each backbone and its P1..P5 channels (resnet34 shares resnet18's code;
# its layout is checked by the parameter count).
SMALL = {
    "resnet18": ({"width": 8}, (8, 8, 16, 32, 64)),
    "mobilenet_v2": ({"alpha": 0.35}, (8, 8, 16, 32, 112)),
    "mobilenet_v2_torchvision": ({"alpha": 0.35}, (8, 8, 16, 32, 112)),
    "resnet50": ({}, (64, 256, 512, 1024, 2048)),
}


@functools.cache
def _backbone(name: str, output_stride: int) -> keras.Model:
    return build_backbone(name, output_stride=output_stride, **SMALL[name][0])


def _x(height=64, width=64, batch=1):
    return np.random.default_rng(0).normal(size=(batch, height, width, 3)).astype("float32")


@pytest.mark.parametrize(
    "name, normalization",
    [
        ("resnet18", "torch"),
        ("resnet34", "torch"),
        ("resnet50", "caffe"),
        ("resnet101", "caffe"),
        ("mobilenet_v2", "tf"),
        ("mobilenet_v2_torchvision", "torch"),
    ],
)
def test_registered_with_normalization_and_output_strides(name, normalization):
    spec = get_backbone_spec(name)
    assert spec.normalization == normalization
    assert spec.output_strides == (8, 16, 32)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("name", list(SMALL))
def test_pyramid_sizes(name, output_stride):
    model = _backbone(name, output_stride)
    features = model(_x())
    assert sorted(features) == ["P1", "P2", "P3", "P4", "P5"]
    for level, channels in enumerate(SMALL[name][1], start=1):
        size = 64 // min(2**level, output_stride)
        assert tuple(features[f"P{level}"].shape) == (1, size, size, channels), level


@pytest.mark.slow
def test_resnet101_output_stride_8():
    features = build_backbone("resnet101", output_stride=8)(_x())
    assert [tuple(features[f"P{i}"].shape[1:3]) for i in range(1, 6)] == [
        (32, 32),
        (16, 16),
        (8, 8),
        (8, 8),
        (8, 8),
    ]


# (backbone, output stride) -> {layer: (strides, dilation_rate)}, plus explicit paddings.
ATROUS = {
    ("resnet50", 16): {
        "conv4_block1_1_conv": ((2, 2), (1, 1)),
        "conv4_block6_2_conv": ((1, 1), (1, 1)),
        "conv5_block1_1_conv": ((1, 1), (1, 1)),
        "conv5_block1_0_conv": ((1, 1), (1, 1)),
        "conv5_block1_2_conv": ((1, 1), (2, 2)),
        "conv5_block3_2_conv": ((1, 1), (2, 2)),
    },
    ("resnet50", 8): {
        "conv4_block1_1_conv": ((1, 1), (1, 1)),
        "conv4_block1_2_conv": ((1, 1), (2, 2)),
        "conv5_block1_2_conv": ((1, 1), (4, 4)),
    },
    ("resnet18", 16): {
        "conv4_block1_1_conv": ((2, 2), (1, 1)),
        "conv5_block1_1_conv": ((1, 1), (1, 1)),  # the former strided conv keeps rate 1
        "conv5_block1_2_conv": ((1, 1), (2, 2)),
        "conv5_block2_1_conv": ((1, 1), (2, 2)),
        "conv5_block1_0_conv": ((1, 1), (1, 1)),
        "conv5_block1_1_pad": ((1, 1), (1, 1)),
    },
    ("resnet18", 8): {
        "conv4_block1_1_conv": ((1, 1), (1, 1)),
        "conv5_block1_1_conv": ((1, 1), (2, 2)),
        "conv5_block2_2_conv": ((1, 1), (4, 4)),
        "conv5_block1_1_pad": ((2, 2), (2, 2)),
    },
    ("mobilenet_v2", 16): {
        "block_6_depthwise": ((2, 2), (1, 1)),
        "block_13_depthwise": ((1, 1), (1, 1)),
        "block_14_depthwise": ((1, 1), (2, 2)),
        "block_16_depthwise": ((1, 1), (2, 2)),
        "block_13_pad": ((0, 2), (0, 2)),
    },
    ("mobilenet_v2", 8): {
        "block_6_depthwise": ((1, 1), (1, 1)),
        "block_7_depthwise": ((1, 1), (2, 2)),
        "block_13_depthwise": ((1, 1), (2, 2)),
        "block_14_depthwise": ((1, 1), (4, 4)),
        "block_6_pad": ((0, 2), (0, 2)),
        "block_13_pad": ((0, 4), (0, 4)),
    },
    # torchvision pads 1 on every side; the padding scales with the rate.
    ("mobilenet_v2_torchvision", 8): {
        "block_6_depthwise": ((1, 1), (1, 1)),
        "block_7_depthwise": ((1, 1), (2, 2)),
        "block_13_depthwise": ((1, 1), (2, 2)),
        "block_14_depthwise": ((1, 1), (4, 4)),
        "block_6_pad": ((1, 1), (1, 1)),
        "block_13_pad": ((2, 2), (2, 2)),
    },
}


@pytest.mark.parametrize("name, output_stride", list(ATROUS))
def test_output_stride_by_dilation_not_striding(name, output_stride):
    model = _backbone(name, output_stride)
    for layer_name, expected in ATROUS[(name, output_stride)].items():
        config = model.get_layer(layer_name).get_config()
        if layer_name.endswith("_pad"):
            got = tuple(tuple(p) for p in config["padding"])
        else:
            got = (tuple(config["strides"]), tuple(config["dilation_rate"]))
        assert got == expected, layer_name


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v2_torchvision"])
def test_output_stride_32_has_no_dilation(name):
    dilations = {
        tuple(layer.dilation_rate)
        for layer in _backbone(name, 32).layers
        if hasattr(layer, "dilation_rate")
    }
    assert dilations == {(1, 1)}


def _random_batchnorm_statistics(model: keras.Model) -> None:
    # Fresh BatchNorm is the identity at inference; random statistics make the check stricter.
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, shapes[0]),
                    rng.normal(0, 0.1, shapes[1]),
                    rng.normal(0, 0.1, shapes[2]),
                    rng.uniform(0.5, 1.5, shapes[3]),
                ]
            )


BASES = {
    "resnet18": (
        lambda: resnet.torchvision_resnet((None, None, 3), (2, 2, 2, 2), 8, "resnet18"),
        resnet.feature_layers((2, 2, 2, 2)),
    ),
    "mobilenet_v2": (
        lambda: keras.applications.MobileNetV2(
            include_top=False, weights=None, alpha=0.35, input_shape=(None, None, 3)
        ),
        mobilenet_v2.FEATURE_LAYERS,
    ),
    "mobilenet_v2_torchvision": (
        lambda: mobilenet_v2.torchvision_mobilenet_v2((None, None, 3), 0.35, last_conv=True),
        {**mobilenet_v2.FEATURE_LAYERS, "P5": "out_relu"},
    ),
    "resnet50": (
        lambda: keras.applications.ResNet50(
            include_top=False, weights=None, input_shape=(None, None, 3)
        ),
        resnet.feature_layers((3, 4, 6, 3)),
    ),
}


@pytest.mark.parametrize("name", list(BASES))
def test_surgery_keeps_weights_and_dilation_matches_striding(name):
    make_base, layers = BASES[name]
    base = make_base()
    _random_batchnorm_statistics(base)
    x = _x(64, 96, batch=2)
    original = keras.Model(base.input, {k: base.get_layer(v).output for k, v in layers.items()})
    expected = {k: v.numpy() for k, v in original(x).items()}
    models = {os: pyramid_model(base, layers, os, name) for os in (32, 16, 8)}
    shapes = {os: [w.shape for w in m.get_weights()] for os, m in models.items()}
    assert shapes[16] == shapes[32] == shapes[8]
    assert len(models[32].get_weights()) == len(original.get_weights())
    for os, model in models.items():
        got = model(x)
        for level, want in expected.items():
            # Level k has stride 2**k in the original; sampling the dilated output at that
            # stride must give the original output exactly (same weights, same windows).
            step = max(1, 2 ** int(level[1]) // os)
            np.testing.assert_allclose(
                got[level].numpy()[:, ::step, ::step], want, rtol=1e-5, atol=1e-5
            )


def test_mobilenet_v2_torchvision_last_conv_gives_p5_of_1280_channels():
    # SMP's MobileNetV2 encoder returns torchvision features[18] (1x1 conv to 1280) as P5.
    model = build_backbone("mobilenet_v2_torchvision", output_stride=16, alpha=0.35, last_conv=True)
    features = model(_x())
    assert tuple(features["P5"].shape) == (1, 4, 4, 1280)
    assert tuple(features["P4"].shape) == (1, 4, 4, 32)
    assert model.get_layer("Conv_1").kernel_size == (1, 1)


def test_mobilenet_v2_torchvision_matches_torchvision_parameter_count():
    # torchvision mobilenet_v2: 3,504,872 parameters, minus the 1280 * 1000 + 1000 classifier.
    model = build_backbone("mobilenet_v2_torchvision", last_conv=True)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 2_223_872


def test_resnet18_and_34_match_torchvision_parameter_counts():
    # torchvision resnet18 / resnet34 minus the 512 * 1000 + 1000 fc parameters.
    for name, params in [("resnet18", 11_176_512), ("resnet34", 21_284_672)]:
        model = build_backbone(name)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == params, name


def test_unsupported_output_stride_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"'resnet18' supports output_stride in \(8, 16, 32\), got 4"
    ):
        build_backbone("resnet18", output_stride=4, width=8)


def test_surgery_refuses_pooling_windows_it_cannot_dilate():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stem")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    config = keras.Model(inputs, x).get_config()
    with pytest.raises(NotImplementedError, match=r"'pool' \(MaxPooling2D"):
        dilate_config(config, 2)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2_torchvision"])
def test_torch_layout_has_no_imagenet_weights(name):
    with pytest.raises(ValueError, match=f"'{name}' has no ImageNet weights"):
        build_backbone(name, weights="imagenet")


@pytest.mark.parametrize(
    "name, kwargs, file",
    [
        ("resnet50", {}, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        (
            "mobilenet_v2",
            {"alpha": 0.35},
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:`input_shape` is undefined:UserWarning")
def test_imagenet_fetch_failure_names_backbone_and_file(monkeypatch, name, kwargs, file):
    requested = []

    def offline_get_file(fname=None, origin=None, **_):
        requested.append(fname)
        raise Exception(f"URL fetch failure on {origin}: None -- network unreachable")

    # keras.applications calls keras.src.utils.file_utils.get_file; patch the public alias too.
    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline_get_file)
    with pytest.raises(OSError) as info:
        build_backbone(name, weights="imagenet", **kwargs)
    assert requested == [file]
    message = str(info.value)
    assert f"backbone {name!r}" in message
    assert file in message
    assert "network unreachable" in message


def test_deep_stem_is_three_3x3_convolutions_and_keeps_the_pyramid():
    model = build_backbone("resnet18", width=8, stem="deep", output_stride=8)
    kernels = [
        model.get_layer(n).kernel_size for n in ("conv1_1_conv", "conv1_2_conv", "conv1_conv")
    ]
    assert kernels == [(3, 3)] * 3
    assert [model.get_layer(n).filters for n in ("conv1_1_conv", "conv1_2_conv")] == [4, 4]
    features = model(_x())
    assert features["P1"].shape == (1, 32, 32, 8) and features["P5"].shape == (1, 8, 8, 64)
    with pytest.raises(ValueError, match=r"stem must be one of \('plain', 'deep'\), got 'tall'"):
        build_backbone("resnet18", width=8, stem="tall")
    with pytest.raises(ValueError, match="takes width=64 and stem='plain'"):
        build_backbone("resnet50", stem="deep")
