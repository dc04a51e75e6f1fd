"""keras_seg's dilated convolutions (issue #13).

AtrousConv2D: a dilated Conv2D as one TensorFlow Conv2D op where the kernels have dilated
gradients (oneDNN, cuDNN), else Keras' path. The reference is `torch.nn.functional.conv2d`
with `dilation`: same output and gradients (input and kernel), for the paddings and rates
the models use; the traced graph has no space-to-batch; in a fresh process with oneDNN off
(TensorFlow's Eigen kernels refuse dilated gradients) and on, a dilated model trains.
AtrousSeparableConv2D / AtrousDepthwiseConv2D: equal to Keras' layers in value and gradient,
and their training graph keeps no space-to-batch copy for the gradient.
The models' dilated convolutions are these classes and export to TFLite.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_seg
from keras_seg.fold import walk_layers
from keras_seg.layers import AtrousConv2D
from keras_seg.layers import AtrousDepthwiseConv2D
from keras_seg.layers import AtrousSeparableConv2D
from keras_seg.layers import conv2d_class
from keras_seg.layers import convolution
from keras_seg.layers import depthwise_space_to_batch
from keras_seg.layers import keras_dilated_convolution
from keras_seg.layers import native_dilated_convolution
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


def _traced_ops(fn, shape=(1, 32, 32, 6)) -> set[str]:
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(shape)).graph
    return {op.type for op in graph.get_operations()}


def test_native_dilations_only_where_the_kernels_have_dilated_gradients(monkeypatch):
    from tensorflow.python.util import _pywrap_util_port

    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert native_dilated_convolution() == (gpu or _pywrap_util_port.IsMklEnabled())
    layer = _layer(12, "same")
    monkeypatch.setattr(convolution, "native_dilated_convolution", lambda: False)
    assert "SpaceToBatchND" in _traced_ops(lambda x: layer(x))


def test_a_traced_dilated_convolution_is_one_conv2d_op(monkeypatch):
    # Tracing needs no kernel: the graph of the native path, on any machine.
    monkeypatch.setattr(convolution, "native_dilated_convolution", lambda: True)
    layer = _layer(12, "same")
    ops = _traced_ops(lambda x: layer(x))
    assert "Conv2D" in ops and "SpaceToBatchND" not in ops and "BatchToSpaceND" not in ops
    # Keras' own Conv2D takes the space-to-batch path: the reason for the layer.
    plain = keras.layers.Conv2D(5, 3, padding="same", dilation_rate=12)
    assert "SpaceToBatchND" in _traced_ops(lambda x: plain(x))
    # What the ONNX export traces (ONNX Runtime refuses a dilated Conv with SAME auto_pad).
    with keras_dilated_convolution():
        assert "SpaceToBatchND" in _traced_ops(lambda x: layer(x))


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
    assert conv2d_class(1, separable=True) is keras.layers.SeparableConv2D
    assert conv2d_class(6, separable=True) is AtrousSeparableConv2D


_TRAIN_TWO_STEPS = """
import json, keras, numpy as np, keras_seg
from keras_seg.layers import native_dilated_convolution
keras.utils.set_random_seed(0)
model = keras_seg.build("deeplabv3plus", num_classes=3, backbone="resnet18", output_stride=8,
                        separable=True)
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
y = rng.integers(0, 3, (2, 64, 64)).astype("int32")
losses = [float(model.train_on_batch(x, y)) for _ in range(2)]
print(json.dumps({"native": native_dilated_convolution(), "losses": losses}))
"""


def test_dilated_models_train_with_onednn_off_and_on():
    """TensorFlow turns oneDNN on or off by CPU (off without AVX-512 VNNI/BF16 or AMX);
    off, its Eigen kernels refuse a dilated Conv2D's gradients, so AtrousConv2D must take
    Keras' path there: the same training, step for step, either way."""
    results = {}
    for setting in ("0", "1"):
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run(
            [sys.executable, "-c", _TRAIN_TWO_STEPS], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["0"]["native"] is False and results["1"]["native"] is True
    np.testing.assert_allclose(results["0"]["losses"], results["1"]["losses"], rtol=1e-3)
    assert results["0"]["losses"][1] != results["0"]["losses"][0]  # it did step


def _depthwise_pair(kind, rate, dtype=None):
    """keras_seg's layer and Keras' own with the same arguments and weights."""
    keras_class, ours = {
        "separable": (keras.layers.SeparableConv2D, AtrousSeparableConv2D),
        "depthwise": (keras.layers.DepthwiseConv2D, AtrousDepthwiseConv2D),
    }[kind]
    args = (5, 3) if kind == "separable" else (3,)
    kwargs = {"padding": "same", "dilation_rate": rate, "dtype": dtype, "activation": "relu"}
    layers = [cls(*args, **kwargs) for cls in (ours, keras_class)]
    rng = np.random.default_rng(rate)
    for layer in layers:
        layer.build((None, None, None, 6))
    weights = [rng.normal(size=w.shape).astype("float32") * 0.3 for w in layers[0].weights]
    for layer in layers:
        layer.set_weights(weights)
    return layers


def _training_output_and_gradients(layer, x):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
        loss = tf.reduce_sum(tf.sin(tf.cast(y, tf.float32)))
    grads = tape.gradient(loss, [xt, *layer.trainable_weights])
    return [tf.cast(t, tf.float32).numpy() for t in (y, *grads)]


@pytest.mark.parametrize("kind", ["separable", "depthwise"])
@pytest.mark.parametrize("rate", [2, 6, 18])
def test_recomputed_depthwise_equals_keras_in_value_and_gradient(kind, rate):
    ours, theirs = _depthwise_pair(kind, rate)
    x = _input((2, 20, 17, 6))
    got, want = (_training_output_and_gradients(layer, x) for layer in (ours, theirs))
    assert len(got) == len(want) == (5 if kind == "separable" else 4)  # y, x, kernels, bias
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    np.testing.assert_array_equal(ours(x).numpy(), theirs(x).numpy())  # inference


def _training_op_types(layer, shape) -> set[str]:
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return tape.gradient(y, [x, *layer.trainable_weights])

    graph = tf.function(step).get_concrete_function(tf.TensorSpec(shape)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("kind", ["separable", "depthwise"])
@pytest.mark.parametrize("shape, rate", [((2, 16, 16, 6), 18), ((2, 12, 30, 6), 12)])
def test_taps_that_only_see_padding_are_cropped(kind, shape, rate):
    """A rate at least the map's size: the off-centre taps read only padding. Same values and
    gradients as Keras (whose kernel gradient is zero there too), and on a 16x16 map at rate 18
    no space-to-batch at all (12x30 at rate 12: cropped along the height only)."""
    ours, theirs = _depthwise_pair(kind, rate)
    x = _input(shape)
    got, want = (_training_output_and_gradients(layer, x) for layer in (ours, theirs))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    kernel_grad = got[2]
    assert np.abs(kernel_grad[1]).max() > 0 and np.abs(kernel_grad[0]).max() == 0  # centre row

    width_still_dilated = shape[2] > rate
    assert ("SpaceToBatchND" in _training_op_types(ours, shape)) == width_still_dilated
    assert "SpaceToBatchND" in _training_op_types(theirs, shape)


@pytest.mark.parametrize("kind", ["separable", "depthwise"])
@pytest.mark.parametrize(
    "shape, rate, shifted",
    [((2, 16, 16, 6), 12, True), ((2, 9, 40, 6), 12, False), ((2, 20, 20, 6), 12, False)],
)
def test_a_fold_mostly_of_padding_becomes_shifted_products(kind, shape, rate, shifted):
    """Rate 12 on 16x16: space-to-batch would pad to 48x48 (9x the map), so the step is a sum
    of shifted products, without SpaceToBatchND; on 9x40 (the height's taps cropped, then
    9x72, 1.8x) and on 20x20 (48x48, 5.8x) the fold stays. Same values and gradients as
    Keras' layer either way."""
    ours, theirs = _depthwise_pair(kind, rate)
    x = _input(shape)
    got, want = (_training_output_and_gradients(layer, x) for layer in (ours, theirs))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    assert ("SpaceToBatchND" in _training_op_types(ours, shape)) != shifted


def test_which_folds_are_mostly_padding():
    layer = AtrousSeparableConv2D(4, 3, padding="same", dilation_rate=12)
    kernel = (3, 3, 6, 1)
    mostly = convolution._fold_is_mostly_padding
    assert mostly(layer, (4, 16, 16, 6), kernel, (12, 12))  # 48x48 / 16x16 = 9
    assert not mostly(layer, (4, 20, 20, 6), kernel, (12, 12))  # 48x48 / 20x20 = 5.76
    assert not mostly(layer, (4, 16, 16, 6), kernel, (6, 6))  # 30x30 / 16x16 = 3.5
    assert not mostly(layer, (None, None, None, 6), kernel, (12, 12))  # size unknown
    assert not mostly(layer, (4, 16, 16, 6), (3, 3, 6, 2), (12, 12))  # depth multiplier 2
    assert not mostly(layer, (4, 16, 16, 6), (4, 4, 6, 1), (12, 12))  # even kernel


def _inference_op_types(layer, shape, dtype=tf.float32) -> set[str]:
    traced = tf.function(lambda x: layer(x, training=False))
    graph = traced.get_concrete_function(tf.TensorSpec(shape, dtype)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("kind", ["separable", "depthwise"])
@pytest.mark.parametrize(
    "shape, rate, banded",
    [
        ((2, 32, 32, 6), 18, True),  # 72x72 / 32x32 = 5.1: DeepLabV3+'s rate 18 at 512
        ((2, 13, 30, 6), 10, True),  # 40x50 / 13x30 = 5.1, rows 3..9 see only the centre row
        ((2, 16, 16, 6), 12, True),  # 48x48 / 16x16 = 9
        ((2, 32, 32, 6), 12, False),  # 60x60 / 32x32 = 3.5
        ((2, 32, 32, 6), 6, False),  # 48x48: 2.25
    ],
)
def test_float32_inference_runs_banded_taps_where_the_fold_is_mostly_padding(
    kind, shape, rate, banded
):
    """Keras' values either way; where space-to-batch would pad the map to more than
    `BANDED_TAPS_ABOVE` times its area, the traced inference has no SpaceToBatchND (its peak
    is the output, not the fold); `depthwise_space_to_batch()` (the TFLite export) keeps the
    fold everywhere."""
    ours, theirs = _depthwise_pair(kind, rate)
    x = _input(shape)
    want = theirs(x).numpy()
    np.testing.assert_allclose(
        ours(x, training=False), want, rtol=1e-5, atol=1e-5 * np.abs(want).max()
    )
    assert ("SpaceToBatchND" in _inference_op_types(ours, shape)) != banded
    with depthwise_space_to_batch():
        ops = _inference_op_types(ours, shape)
        assert "SpaceToBatchND" in ops and "ConcatV2" not in ops
        np.testing.assert_array_equal(ours(x, training=False), want)


def test_bfloat16_inference_keeps_the_fold():
    """mixed_bfloat16: the elementwise products were no faster than the fold there."""
    ours, theirs = _depthwise_pair("separable", 18, dtype="mixed_bfloat16")
    x = _input((2, 32, 32, 6))
    assert "SpaceToBatchND" in _inference_op_types(ours, x.shape)
    np.testing.assert_array_equal(ours(x, training=False), theirs(x))


def test_recomputed_depthwise_in_mixed_bfloat16():
    ours, theirs = _depthwise_pair("separable", 6, dtype="mixed_bfloat16")
    x = _input((2, 20, 20, 6))
    got, want = (_training_output_and_gradients(layer, x) for layer in (ours, theirs))
    assert ours(x, training=True).dtype == tf.bfloat16
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=3e-2, atol=3e-2 * np.abs(b).max())


@pytest.mark.parametrize("kind", ["separable", "depthwise"])
def test_the_training_graph_keeps_no_space_to_batch_copy(kind):
    def kept_for_gradient(layer) -> list[str]:
        """SpaceToBatchND outputs of the forward pass that a gradient op reads (so they live
        until the backward pass). A recomputed one runs after a gradient op: not kept."""

        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return tape.gradient(y, [x, *layer.trainable_weights])

        def in_backward(op, seen) -> bool:
            if op.name.startswith("gradient"):
                return True
            seen.add(op.name)
            parents = [t.op for t in op.inputs] + list(op.control_inputs)
            return any(in_backward(p, seen) for p in parents if p.name not in seen)

        graph = tf.function(step).get_concrete_function(tf.TensorSpec([2, 16, 16, 6])).graph
        return [
            op.name
            for op in graph.get_operations()
            if op.type == "SpaceToBatchND" and not in_backward(op, set())
            for consumer in op.outputs[0].consumers()
            if consumer.name.startswith("gradient")
        ]

    ours, theirs = _depthwise_pair(kind, 6)
    assert kept_for_gradient(theirs)  # Keras' layer keeps the folded copy
    assert kept_for_gradient(ours) == []


@pytest.mark.parametrize(
    "name, kwargs, count",
    [
        # ResNet-18's dilated 3x3s (3 in layer4 at OS16; 3 + 4 in layers 3-4 at OS8) + ASPP's 3.
        ("deeplabv3plus", {"backbone": "resnet18", "output_stride": 16}, 3 + 3),
        ("deeplabv3", {"backbone": "resnet18", "output_stride": 8}, 7 + 3),
        ("pspnet", {"backbone": "resnet18", "output_stride": 8}, 7),
        # Separable ASPP: its 3 branches are AtrousSeparableConv2D, the backbone's stay Conv2D.
        ("deeplabv3plus", {"backbone": "resnet18", "separable": True}, 3),
    ],
)
def test_dilated_convolutions_of_the_models_are_atrous(name, kwargs, count):
    model = keras_seg.build(name, num_classes=3, **kwargs)
    assert not [
        layer.name
        for layer in walk_layers(model)
        if type(layer) in (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
        and max(layer.dilation_rate) > 1
    ]
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


def test_the_tflite_export_keeps_each_dilated_depthwise_one_op(tmp_path):
    """DeepLabV3+ (separable, as SMP's) at 128 (an 8x8 ASPP map): float32 inference computes
    the rate-6 branch as `banded_taps` (no SpaceToBatchND left in its graph), but the TFLite export traces the space-to-batch form, which the
    converter makes one DEPTHWISE_CONV_2D per depthwise layer (the other rates see only their
    centre tap), and its class maps agree with the Keras model's."""
    from keras_seg import export
    from keras_seg.export.tflite_export import operators

    model = keras_seg.build("deeplabv3plus", num_classes=3, backbone="resnet18", separable=True)
    depthwise = [
        layer
        for layer in walk_layers(model)
        if isinstance(layer, (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D))
    ]
    x = tf.zeros((1, 128, 128, 3))
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(x)
    assert "SpaceToBatchND" not in {op.type for op in traced.graph.get_operations()}
    images = random_images(2, 128, 128).astype("uint8")
    path = export.tflite(
        model, tmp_path / "dlv3p.tflite", input_size=(128, 128), check_images=images
    )
    assert [name for name, _ in operators(path)].count("DEPTHWISE_CONV_2D") == len(depthwise) > 0
    assert export.verify(model, path, images).pixel_agreement >= 0.999
