"""FusedBatchNorm: TensorFlow's fused kernel in training and inference (issue #13).

The reference is PyTorch's `BatchNorm2d` in training mode: same output, gradients and moving
statistics (PyTorch also updates its running variance with the unbiased batch variance).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_seg
from keras_seg.backbones import build_backbone
from keras_seg.fold import walk_layers
from keras_seg.layers import FusedBatchNorm

torch = pytest.importorskip("torch")


def _batch(seed=0, shape=(2, 5, 6, 8)):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 3 + 1.5).astype(np.float32)


def _layer(channels=8, rank=4, **kwargs):
    layer = FusedBatchNorm(epsilon=1e-5, momentum=0.9, **kwargs)
    layer.build((None,) * (rank - 1) + (channels,))
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 1.5, channels), rng.normal(size=channels)]
    weights += [rng.normal(size=channels), rng.uniform(0.5, 2, channels)]
    layer.set_weights([w.astype(np.float32) for w in weights])
    return layer


def _torch_step(layer, x, upstream):
    gamma, beta, mean, var = (torch.tensor(w) for w in layer.get_weights())
    bn = torch.nn.BatchNorm2d(x.shape[-1], eps=1e-5, momentum=0.1).train()
    with torch.no_grad():
        bn.weight.copy_(gamma), bn.bias.copy_(beta)
        bn.running_mean.copy_(mean), bn.running_var.copy_(var)
    inputs = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    out = bn(inputs)
    out.backward(torch.tensor(upstream.transpose(0, 3, 1, 2)))
    return {
        "y": out.detach().numpy().transpose(0, 2, 3, 1),
        "dx": inputs.grad.numpy().transpose(0, 2, 3, 1),
        "dgamma": bn.weight.grad.numpy(),
        "dbeta": bn.bias.grad.numpy(),
        "mean": bn.running_mean.numpy(),
        "var": bn.running_var.numpy(),
    }


def test_training_step_equals_pytorch_batchnorm2d():
    x, upstream = _batch(0), _batch(2)
    layer = _layer()
    expected = _torch_step(layer, x, upstream)
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = layer(inputs, training=True)
    dx, dgamma, dbeta = tape.gradient(y, [inputs, layer.gamma, layer.beta], upstream)
    np.testing.assert_allclose(y.numpy(), expected["y"], atol=1e-5)
    np.testing.assert_allclose(dx.numpy(), expected["dx"], atol=1e-5)
    np.testing.assert_allclose(dgamma.numpy(), expected["dgamma"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dbeta.numpy(), expected["dbeta"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), expected["mean"], atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), expected["var"], rtol=1e-6)


def test_a_traced_training_step_runs_the_fused_kernel():
    layer = _layer()
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 5, 6, 8))
    )
    ops = {op.type for op in graph.graph.get_operations()}
    assert "FusedBatchNormV3" in ops
    assert "Mean" not in ops  # Keras' unfused path computes moments with reductions


def test_mixed_bfloat16_keeps_bfloat16_activations_and_float32_statistics():
    x = _batch(3)
    reference = _layer()
    expected = reference(tf.constant(x), training=True).numpy()
    layer = _layer(dtype="mixed_bfloat16")
    y = layer(tf.constant(x), training=True)
    assert y.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == "float32"
    np.testing.assert_allclose(y.numpy().astype(np.float32), expected, atol=0.05)
    np.testing.assert_allclose(layer.moving_mean.numpy(), reference.moving_mean.numpy(), atol=0.02)


@pytest.mark.parametrize("training", [False, True])
def test_frozen_or_inference_bfloat16_runs_the_kernel_on_the_moving_statistics(training):
    x = tf.constant(_batch(6))
    expected = _layer()(x, training=False).numpy()
    layer = _layer(dtype="mixed_bfloat16")
    layer.trainable = False
    before = layer.get_weights()
    fn = tf.function(lambda x: layer(x, training=training))
    y = fn(x)
    assert y.dtype == tf.bfloat16
    np.testing.assert_allclose(y.numpy().astype(np.float32), expected, atol=0.05)
    for a, b in zip(layer.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    ops = [op.type for op in fn.get_concrete_function(x).graph.get_operations()]
    assert "FusedBatchNormV3" in ops
    assert ops.count("Cast") == 1  # the float32 input to bfloat16; no casts around the norm


@pytest.mark.parametrize("case", ["inference", "frozen", "rank3"])
def test_other_cases_equal_keras_batch_normalization(case):
    shape = (2, 5, 8) if case == "rank3" else (2, 5, 6, 8)
    x = tf.constant(_batch(4, shape))
    ours, theirs = (
        _layer(rank=len(shape)),
        keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9),
    )
    theirs.build((None,) * (len(shape) - 1) + (8,))
    theirs.set_weights(ours.get_weights())
    if case == "frozen":
        ours.trainable = theirs.trainable = False
    training = case != "inference"
    fn = tf.function(lambda x: ours(x, training=training))
    np.testing.assert_allclose(fn(x), theirs(x, training=training), rtol=1e-6, atol=1e-5)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    ops = {op.type for op in fn.get_concrete_function(x).graph.get_operations()}
    # 4-D inference (frozen included) runs the kernel, so that Grappler can fuse it into the
    # convolution before it; other ranks are Keras' code.
    assert ("FusedBatchNormV3" in ops) == (case != "rank3")


_FUSION_SCRIPT = """
import sys
import keras, numpy as np
from keras_seg.layers import FusedBatchNorm
keras.mixed_precision.set_global_policy(sys.argv[1])
i = keras.Input((32, 32, 16))
x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(i)
x = keras.layers.Activation("relu")(FusedBatchNorm(epsilon=1e-5)(x))
model = keras.Model(i, x)
model.predict_on_batch(np.ones((1, 32, 32, 16), "float32"))
"""


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_float32_inference_fuses_batchnorm_and_relu_into_the_convolution(policy, tmp_path):
    """What the float32 kernel is for, in a new process as users run it: with oneDNN on (as
    TensorFlow sets it on AVX-512 CPUs), its own log shows one convolution with the
    normalisation and the ReLU as post-ops and no batch_normalization primitive. In bfloat16
    the remapper does not fuse them: a separate primitive (and the test says so)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "fuse.py"
    script.write_text(_FUSION_SCRIPT)
    env = os.environ | {"ONEDNN_VERBOSE": "1", "TF_ENABLE_ONEDNN_OPTS": "1"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    run = subprocess.run(
        [sys.executable, str(script), policy], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    executed = [line for line in run.stdout.splitlines() if line.startswith("onednn_verbose")]
    executed = [line for line in executed if ",exec," in line]
    convolutions = [line for line in executed if ",convolution," in line]
    norms = [line for line in executed if ",batch_normalization," in line]
    if policy == "float32":
        assert convolutions, run.stdout[-2000:]
        assert all("eltwise_relu" in line for line in convolutions), convolutions
        assert norms == []
    elif "bf16" in " ".join(convolutions):  # a CPU where oneDNN runs bfloat16 convolutions
        assert norms, executed


@pytest.mark.parametrize(
    "backbone", ["resnet18", "resnet50", "mobilenet_v2", "vgg16", "hrnetv2_w18_small"]
)
def test_every_backbone_batchnorm_is_fused(backbone):
    # resnet50 and mobilenet_v2 come from keras.applications, rebuilt by `pyramid_model`.
    model = build_backbone(backbone, input_shape=(64, 64, 3), weights=None)
    norms = [
        layer for layer in walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if backbone == "vgg16":
        assert norms == []
        model = build_backbone("vgg16", input_shape=(64, 64, 3), weights=None, batch_norm=True)
        norms = [
            layer
            for layer in walk_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
    assert norms
    assert {type(layer) for layer in norms} == {FusedBatchNorm}


def test_a_saved_model_with_fused_batchnorm_loads_and_keeps_its_class(tmp_path):
    model = keras_seg.build("unet", num_classes=3, backbone="resnet18", input_shape=(64, 64, 3))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    norms = [
        layer for layer in walk_layers(loaded) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms and {type(layer) for layer in norms} == {FusedBatchNorm}
    x = _batch(5, (1, 64, 64, 3))
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)
