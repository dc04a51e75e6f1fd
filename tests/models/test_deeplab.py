"""DeepLabv3 / DeepLabv3+: ASPP branches and rates, decoder, options, TFLite builtins."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import keras_seg
from keras_seg.layers import aspp
from keras_seg.models import deeplab
from tests.helpers import random_images
from tests.helpers import small_model


def _dilation(model, name):
    return tuple(model.get_layer(name).dilation_rate)


@pytest.mark.parametrize(
    "output_stride, backbone_kwargs, rates",
    [
        (16, {"backbone": "mobilenet_v2", "backbone_kwargs": {"alpha": 0.35}}, (6, 12, 18)),
        (8, {"backbone": "resnet18", "backbone_kwargs": {"width": 8}}, (12, 24, 36)),
    ],
)
def test_aspp_has_five_branches_with_rates_for_output_stride(output_stride, backbone_kwargs, rates):
    model = keras_seg.build(
        "deeplabv3plus", 3, output_stride=output_stride, aspp_filters=16, **backbone_kwargs
    )
    assert tuple(model.get_layer("aspp_b0_conv").kernel_size) == (1, 1)
    assert [_dilation(model, f"aspp_b{i}_conv") for i in (1, 2, 3)] == [(r, r) for r in rates]
    assert all(tuple(model.get_layer(f"aspp_b{i}_conv").kernel_size) == (3, 3) for i in (1, 2, 3))
    assert isinstance(model.get_layer("aspp_pool_gap"), keras.layers.GlobalAveragePooling2D)
    assert len(model.get_layer("aspp_concat").input) == 5
    assert model.get_layer("aspp_proj_conv").filters == 16
    # The ASPP input (P5) is at the output stride.
    probe = keras.Model(model.input, model.get_layer("aspp_proj_relu").output)
    size = 64 // output_stride
    assert tuple(probe(random_images(1, 64, 64)).shape) == (1, size, size, 16)
    assert tuple(model(random_images(1, 45, 71)).shape) == (1, 45, 71, 3)


def test_aspp_rates_option_and_default_projection_width():
    model = keras_seg.build("deeplabv3", 3, aspp_rates=(2, 4, 6, 8), **_small("deeplabv3"))
    assert [_dilation(model, f"aspp_b{i}_conv") for i in (1, 2, 3, 4)] == [
        (2, 2),
        (4, 4),
        (6, 6),
        (8, 8),
    ]
    assert len(model.get_layer("aspp_concat").input) == 6
    features = keras.Input((None, None, 8))
    projected = aspp(features)
    assert projected.shape[-1] == 256
    block = keras.Model(features, projected)
    assert {layer.name for layer in block.layers} >= {"aspp_proj_conv", "aspp_pool_resize"}
    # The pooling branch follows unknown sizes at run time.
    assert tuple(block(np.ones((2, 5, 7, 8), "float32")).shape) == (2, 5, 7, 256)


def _small(name):
    return keras_seg.get_spec(name).small_config


def test_deeplabv3plus_decoder_projects_stride4_features_to_48_channels():
    model = small_model("deeplabv3plus")
    low = model.get_layer("decoder_low_level_conv")
    assert (low.filters, tuple(low.kernel_size)) == (48, (1, 1))
    assert low.input.shape[-1] == 8  # resnet18 width 8: P2 has 8 channels
    probe = keras.Model(model.input, model.get_layer("decoder_concat").output)
    # 64x64 input: P2 is 16x16; the ASPP output (16 channels) is upsampled 4x onto it.
    assert tuple(probe(random_images(1, 64, 64)).shape) == (1, 16, 16, 16 + 48)
    assert [model.get_layer(f"decoder_conv{i}_conv").filters for i in (1, 2)] == [16, 16]


def test_deeplabv3_has_no_decoder():
    model = small_model("deeplabv3")
    assert not [layer.name for layer in model.layers if layer.name.startswith("decoder")]
    assert model.get_layer("logits").input.shape[-1] == 16  # straight from the ASPP


@pytest.mark.parametrize("output_stride", [4, 32])
def test_output_stride_must_be_8_or_16(output_stride):
    with pytest.raises(
        ValueError, match=rf"output_stride must be one of \[8, 16\], got {output_stride}"
    ):
        keras_seg.build("deeplabv3plus", 3, output_stride=output_stride)


def test_model_weights_other_than_imagenet_are_rejected():
    # keras_seg.build loads any other string as a weights file; the builder itself refuses it.
    with pytest.raises(ValueError, match="weights must be None or 'imagenet'.*'coco'"):
        deeplab.deeplabv3(3, weights="coco", **_small("deeplabv3"))


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined:UserWarning")
def test_imagenet_fetch_failure_names_the_backbone(monkeypatch):
    def offline_get_file(fname=None, origin=None, **_):
        raise Exception(f"URL fetch failure on {origin}: network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline_get_file)
    with pytest.raises(OSError, match="backbone 'mobilenet_v2'.*0.35_224_no_top.h5"):
        keras_seg.build("deeplabv3", 3, weights="imagenet", **_small("deeplabv3"))


def _tflite_ops_and_output(model, x):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return ops, interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3plus", "deeplabv3"])
def test_tflite_builtin_ops_only_and_matches_keras(name):
    # TFLite takes a fixed size; 45x71 is a multiple of no stride, so pad/crop are exercised.
    model = keras_seg.build(name, 3, input_shape=(45, 71, 3), **_small(name))
    x = random_images(1, 45, 71)
    ops, out = _tflite_ops_and_output(model, x)
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    assert {"RESIZE_BILINEAR", "MEAN", "CONCATENATION"} <= ops
    expected = model(x).numpy()
    assert out.shape == expected.shape == (1, 45, 71, 3)
    # Untrained nets have small logits; compare relative to their scale.
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-4 * scale)
