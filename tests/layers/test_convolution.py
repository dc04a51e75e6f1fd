"""AtrousConv2D: a dilated Conv2D as one TensorFlow Conv2D op, equal to PyTorch's (issue #13).

The reference is `torch.nn.functional.conv2d` with `dilation`: same output and gradients
(input and kernel), for the paddings and rates the models use; the traced graph has no
space-to-batch; the models' dilated convolutions are AtrousConv2D and export to TFLite.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_seg
from keras_seg.fold import walk_layers
from keras_seg.layers import AtrousConv2D
from keras_seg.layers import conv2d_class
from keras_seg.layers import keras_dilated_convolution
from tests.helpers import random_images

torch = pytest.importorskip("torch")


def _input(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _layer(rate, padding, dtype=None):
    layer = AtrousConv2D(5, 3, padding=padding, dilation_rate=rate, dtype=dtype)
    layer.build((None, None, None, 6))
    rng = np.random.default_rng(rate)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") * 0.2 for w in layer.weights])
    return layer


@pytest.mark.parametrize("rate", [2, 6, 18])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_output_and_gradients_equal_pytorch_conv2d(rate, padding):
    x = _input((2, 40, 37, 6))
    layer = _layer(rate, padding)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(tf.sin(y))
    gx, gk, gb = tape.gradient(loss, [xt, layer.kernel, layer.bias])

    kernel, bias = layer.get_weights()
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tk = torch.tensor(kernel.transpose(3, 2, 0, 1), requires_grad=True)
    tb = torch.tensor(bias, requires_grad=True)
    pad = "same" if padding == "same" else 0
    ty = torch.nn.functional.conv2d(tx, tk, tb, padding=pad, dilation=rate)
    torch.sin(ty).sum().backward()

    def close(ours, theirs):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())

    close(y.numpy(), ty.detach().numpy().transpose(0, 2, 3, 1))
    close(gx.numpy(), tx.grad.numpy().transpose(0, 2, 3, 1))
    close(gk.numpy(), tk.grad.numpy().transpose(2, 3, 1, 0))
    close(gb.numpy(), tb.grad.numpy())


def test_a_traced_dilated_convolution_is_one_conv2d_op():
    layer = _layer(12, "same")
    fn = tf.function(lambda x: layer(x)).get_concrete_function(tf.TensorSpec([1, 32, 32, 6]))
    ops = {op.type for op in fn.graph.get_operations()}
    assert "Conv2D" in ops and "SpaceToBatchND" not in ops and "BatchToSpaceND" not in ops
    # Keras' own Conv2D takes the space-to-batch path: the reason for the layer.
    plain = keras.layers.Conv2D(5, 3, padding="same", dilation_rate=12)
    fn = tf.function(lambda x: plain(x)).get_concrete_function(tf.TensorSpec([1, 32, 32, 6]))
    assert "SpaceToBatchND" in {op.type for op in fn.graph.get_operations()}
    # What the ONNX export traces (ONNX Runtime refuses a dilated Conv with SAME auto_pad).
    with keras_dilated_convolution():
        fn = tf.function(lambda x: layer(x)).get_concrete_function(tf.TensorSpec([1, 32, 32, 6]))
    assert "SpaceToBatchND" in {op.type for op in fn.graph.get_operations()}


def test_mixed_bfloat16_computes_in_bfloat16_like_keras():
    layer = _layer(6, "same", dtype="mixed_bfloat16")
    plain = keras.layers.Conv2D(5, 3, padding="same", dilation_rate=6, dtype="mixed_bfloat16")
    plain.build((None, None, None, 6))
    plain.set_weights(layer.get_weights())
    x = _input((2, 20, 20, 6))
    y = layer(x)
    assert y.dtype == tf.bfloat16 and layer.kernel.dtype == "float32"
    np.testing.assert_allclose(
        tf.cast(y, tf.float32).numpy(), tf.cast(plain(x), tf.float32).numpy(), rtol=2e-2, atol=2e-2
    )


def test_class_for_a_rate_and_serialization(tmp_path):
    assert conv2d_class(1) is keras.layers.Conv2D and conv2d_class((1, 1)) is keras.layers.Conv2D
    assert conv2d_class(2) is AtrousConv2D and conv2d_class([1, 4]) is AtrousConv2D
    inputs = keras.Input((None, None, 6))
    model = keras.Model(inputs, _layer(4, "same")(inputs))
    model.save(tmp_path / "atrous.keras")
    loaded = keras.saving.load_model(tmp_path / "atrous.keras")
    assert type(loaded.layers[-1]) is AtrousConv2D
    x = _input((1, 24, 24, 6))
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


@pytest.mark.parametrize(
    "name, kwargs, count",
    [
        # ResNet-18's dilated 3x3s (3 in layer4 at OS16; 3 + 4 in layers 3-4 at OS8) + ASPP's 3.
        ("deeplabv3plus", {"backbone": "resnet18", "output_stride": 16}, 3 + 3),
        ("deeplabv3", {"backbone": "resnet18", "output_stride": 8}, 7 + 3),
        ("pspnet", {"backbone": "resnet18", "output_stride": 8}, 7),
    ],
)
def test_dilated_convolutions_of_the_models_are_atrous(name, kwargs, count):
    model = keras_seg.build(name, num_classes=3, **kwargs)
    dilated = [
        layer
        for layer in walk_layers(model)
        if isinstance(layer, keras.layers.Conv2D) and max(layer.dilation_rate) > 1
    ]
    assert len(dilated) == count
    assert all(type(layer) is AtrousConv2D for layer in dilated), [
        (layer.name, type(layer).__name__) for layer in dilated if type(layer) is not AtrousConv2D
    ]


def test_a_model_with_atrous_convolutions_exports_to_tflite_with_builtin_ops(tmp_path):
    from keras_seg import export
    from keras_seg.export.tflite_export import TFLiteModel
    from keras_seg.export.tflite_export import non_builtin_ops

    model = keras_seg.build("deeplabv3", num_classes=3, backbone="resnet18", output_stride=8)
    images = random_images(2, 64, 64).astype("uint8")
    path = export.tflite(model, tmp_path / "dlv3.tflite", input_size=(64, 64), check_images=images)
    assert non_builtin_ops(path) == []
    report = export.verify(model, path, images)
    assert report.pixel_agreement >= 0.999
    assert TFLiteModel(path).predict(images)["class_map"].shape == (2, 64, 64)
