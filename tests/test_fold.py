"""BatchNorm folding: same logits as the model, no BatchNorm left, every registered model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_seg
from keras_seg.fold import fold_batch_norm
from keras_seg.fold import foldable_pairs
from keras_seg.fold import walk_layers
from keras_seg.inference import Predictor
from keras_seg.layers import FoldedBatchNorm
from keras_seg.models.base import SegmentationModel
from tests.helpers import random_images
from tests.helpers import small_model

REPO = Path(__file__).resolve().parents[1]


def randomize_batch_norm(model: keras.Model, seed: int = 0) -> None:
    """Random statistics and affine weights, so BatchNorm is far from the identity."""
    rng = np.random.default_rng(seed)
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(lo, hi, w.shape)
                    for w, (lo, hi) in zip(
                        layer.weights,
                        [(0.5, 1.5), (-0.5, 0.5), (-0.5, 0.5), (0.5, 1.5)],
                        strict=False,
                    )
                ]
            )


def batch_norms(model: keras.Model) -> list[str]:
    bns = [
        layer for layer in walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    return [layer.name for layer in bns]


@pytest.mark.parametrize("name", keras_seg.list_models())
def test_folded_model_gives_the_same_logits(name):
    model = small_model(name)
    randomize_batch_norm(model)
    x = random_images(2, 64, 80)
    folded = fold_batch_norm(model)
    want = model(x, training=False).numpy()
    got = folded(x, training=False).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    left = batch_norms(folded)
    assert len(left) == len(batch_norms(model)) - len(foldable_pairs(model))
    if foldable_pairs(model):
        assert folded is not model
        assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("unet", {"backbone": "resnet18", "base_filters": 64, "depth": 4}),
        ("deeplabv3plus", {"separable": True}),
        ("deeplabv3plus", {"separable": False}),
    ],
)
def test_common_models_fold_every_batch_norm(name, kwargs):
    model = small_model(name, **kwargs)
    assert batch_norms(model)
    assert batch_norms(fold_batch_norm(model)) == []


def test_depthwise_and_transpose_convs_fold():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(inputs)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.Conv2DTranspose(4, 2, strides=2, use_bias=True, name="up")(x)
    x = keras.layers.BatchNormalization(name="up_bn")(x)
    skip = keras.layers.Conv2D(4, 1, name="shared")(x)  # read twice below: not folded
    y = keras.layers.BatchNormalization(name="shared_bn")(skip)
    model = keras.Model(inputs, keras.layers.Add()([y, skip]))
    randomize_batch_norm(model)
    folded = fold_batch_norm(model)
    assert batch_norms(folded) == ["shared_bn"]
    x = random_images(1, 16, 16)
    want = model(x, training=False).numpy()
    np.testing.assert_allclose(folded(x).numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_fold_leaves_the_model_alone_and_saves(tmp_path):
    model = small_model("unet", backbone="resnet18", base_filters=64, depth=4)
    randomize_batch_norm(model)
    before = [w.copy() for w in model.get_weights()]
    folded = fold_batch_norm(model)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(isinstance(layer, FoldedBatchNorm) for layer in walk_layers(folded))
    folded.save(tmp_path / "folded.keras")
    loaded = keras.saving.load_model(tmp_path / "folded.keras")
    x = random_images(1, 64, 64)
    np.testing.assert_allclose(loaded(x).numpy(), folded(x).numpy(), rtol=1e-5, atol=1e-5)


def test_predictor_folds_by_default():
    model = small_model("deeplabv3plus")
    randomize_batch_norm(model)
    x = random_images(1, 64, 64)
    predictor = Predictor(model)
    assert not predictor.folds_once, "only where the weights are declared frozen"
    folded = predictor.logits(x)
    plain = Predictor(model, fold=False).logits(x)
    np.testing.assert_allclose(folded, plain, rtol=1e-4, atol=1e-4 * np.abs(plain).max())


def test_a_frozen_predictor_computes_the_model_and_keeps_its_weights():
    model = small_model("unet")
    randomize_batch_norm(model)
    x = random_images(2, 64, 48)
    want = model(x, training=False).numpy()
    frozen = Predictor(model, freeze=True)
    assert frozen.frozen and not Predictor(model, freeze=False).frozen
    assert not Predictor(model, fold=False, freeze=True).frozen  # the model itself: never
    np.testing.assert_allclose(frozen.logits(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    other = random_images(1, 32, 80)  # any size through the one frozen graph
    assert frozen.logits(other).shape == (1, 32, 80, model.output_shape[-1])
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    np.testing.assert_allclose(frozen.logits(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


_FREEZE_PROBE = """
import json
import numpy as np
from keras_seg.inference import Predictor
from keras_seg.machine import onednn_enabled
from tests.helpers import random_images
from tests.helpers import small_model
model = small_model("unet")
x = random_images(1, 64, 64)
frozen, plain = Predictor(model, freeze=True), Predictor(model)
want = plain.logits(x)
error = float(np.abs(frozen.logits(x) - want).max() / np.abs(want).max())
print(json.dumps([onednn_enabled(), frozen.frozen, plain.frozen, error]))
"""


def test_a_frozen_predictor_agrees_under_onednn():
    # In a new process: TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads, and
    # freezing is for oneDNN's kernels (see Predictor's `freeze`).
    done = subprocess.run(
        [sys.executable, "-c", _FREEZE_PROBE],
        env=os.environ | {"TF_ENABLE_ONEDNN_OPTS": "1", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    onednn, frozen, plain, error = json.loads(done.stdout.strip().splitlines()[-1])
    assert (onednn, frozen, plain) == (True, True, False)
    assert error < 1e-4


def test_a_model_that_cannot_be_cloned_runs_unfolded():
    class Scale(keras.layers.Layer):  # an argument get_config cannot serialize
        def __init__(self, fn, **kwargs):
            super().__init__(**kwargs)
            self.fn = fn

        def call(self, x):
            return self.fn(x)

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(2, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, Scale(lambda t: 2 * t)(x))
    randomize_batch_norm(model)
    x = random_images(1, 16, 16)
    want = model(x, training=False).numpy()
    with pytest.warns(UserWarning, match="not folded"):
        got = Predictor(model).logits(x)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _policies(model: keras.Model) -> set[str]:
    return {
        layer.dtype_policy.name
        for layer in walk_layers(model)
        if not isinstance(layer, keras.layers.InputLayer)
    }


def _mixed_and_float32(name: str) -> tuple[keras.Model, keras.Model]:
    """`name`'s small model built under mixed_bfloat16 (random BatchNorm) and its float32
    twin with the same weights."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mixed = small_model(name)
    randomize_batch_norm(mixed)
    keras.mixed_precision.set_global_policy("float32")
    plain = small_model(name)
    plain.set_weights(mixed.get_weights())
    return mixed, plain


@pytest.mark.parametrize("name", keras_seg.list_models())
def test_a_mixed_precision_model_folds_into_a_float32_copy(name):
    # What the exports run for a model trained in mixed precision (the CPU default where the
    # CPU has native bfloat16): every layer in float32, logits those of the float32 model
    # with the same weights.
    mixed, plain = _mixed_and_float32(name)
    assert "mixed_bfloat16" in _policies(mixed)
    copy = fold_batch_norm(mixed, dtype="float32")
    assert _policies(copy) == {"float32"}
    assert "mixed_bfloat16" in _policies(mixed), "the model itself is not changed"
    x = random_images(2, 64, 80)
    want = plain(x, training=False).numpy()
    got = copy(x, training=False).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_mixed_precision_model_without_batch_norm_is_still_copied_to_float32():
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(2, 3, padding="same", dtype="mixed_bfloat16")(inputs)
    model = keras.Model(inputs, outputs)
    assert foldable_pairs(model) == {}
    assert fold_batch_norm(model) is model
    copy = fold_batch_norm(model, dtype="float32")
    assert _policies(copy) == {"float32"}
    x = random_images(1, 8, 8)
    np.testing.assert_allclose(
        copy(x).numpy(),
        keras.ops.convert_to_numpy(keras.ops.conv(x, model.weights[0], padding="same"))
        + model.weights[1].numpy(),
        rtol=1e-5,
        atol=1e-4,
    )


def _live_foldable(model) -> int:
    """How many BatchNorms `live_folded_call` folds: those after a plain Conv2D."""
    return sum(
        isinstance(conv, keras.layers.Conv2D) and type(conv).call is keras.layers.Conv2D.call
        for conv in foldable_pairs(model).values()
    )


@pytest.mark.parametrize("name", keras_seg.list_models())
def test_a_models_own_predict_folds_live_and_gives_the_same_logits(name):
    """Every builder returns a SegmentationModel whose predict_on_batch/predict run the
    Conv2D -> BatchNorm pairs folded (no BatchNorm op left for them in the traced graph)."""
    import tensorflow as tf

    model = small_model(name)
    assert isinstance(model, SegmentationModel)
    randomize_batch_norm(model)
    x = random_images(2, 64, 80)
    want = model(x, training=False).numpy()
    for got in (model.predict_on_batch(x), model.predict(x, batch_size=1, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    graph = (
        tf.function(model.predict_step).get_concrete_function(tf.TensorSpec((2, 64, 80, 3))).graph
    )
    left = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
    assert len(left) == len(batch_norms(model)) - _live_foldable(model)
    if not name.startswith("fcn"):  # the FCNs' VGG has no BatchNorm
        assert _live_foldable(model) > 0


@pytest.mark.parametrize("name", keras_seg.list_models())
def test_a_mixed_precision_models_folded_predict_is_as_close_to_float32_as_its_call(name):
    """In bfloat16 the fold rounds differently (the folded kernel, not the kernel and then
    the normalisation); its logits are float32 and, on average, as close to the float32
    model's as those of the unfolded bfloat16 call (measured: 0.7-1.15x its mean error)."""
    mixed, plain = _mixed_and_float32(name)
    x = random_images(2, 64, 80)
    want = plain(x, training=False).numpy()
    predicted = mixed.predict_on_batch(x)
    assert predicted.dtype == np.float32
    call_error = np.abs(np.asarray(mixed(x, training=False), np.float32) - want).mean()
    assert np.abs(predicted - want).mean() <= 1.5 * call_error


def test_a_models_predict_follows_its_training():
    """Folded from the variables at each call, not a copy: after training steps change the
    kernels and the moving statistics, predict equals the model's inference call again."""
    model = small_model("unet", backbone="resnet18", base_filters=64, depth=4)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = random_images(2, 64, 64)
    y = np.random.default_rng(1).integers(0, 3, (2, 64, 64))
    before = model.predict_on_batch(x)
    for _ in range(3):
        model.train_on_batch(x, y)
    after = model.predict_on_batch(x)
    want = model(x, training=False).numpy()
    assert np.abs(after - before).max() > 1e-2 * np.abs(before).max()
    np.testing.assert_allclose(after, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _labelled_batch() -> tuple[np.ndarray, np.ndarray]:
    """Two random 64x64 images and 3-class masks."""
    return random_images(2, 64, 64), np.random.default_rng(1).integers(0, 3, (2, 64, 64))


def _evaluate_and_call_loss(model, x, y) -> tuple[float, float]:
    """(`evaluate`'s loss, the loss of `model(x, training=False)`) on the batch `x, y`, the
    model compiled with cross-entropy and SGD."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    got = model.evaluate(x, y, batch_size=2, verbose=0)
    return got, float(loss(y, model(x, training=False)))


def test_a_mixed_precision_models_evaluate_runs_folded():
    """Inside the model's `__call__` (evaluate's test_step) Keras reads the kernels in the
    compute dtype; the fold still multiplies in float32 (it failed with a bfloat16 x float32
    `Mul` before) and evaluate's loss is that of the model's bfloat16 inference call."""
    mixed, _ = _mixed_and_float32("unet")
    assert _live_foldable(mixed) > 0
    got, want = _evaluate_and_call_loss(mixed, *_labelled_batch())
    assert got == pytest.approx(want, rel=2e-2)


def _fold_products(fn):
    """The kernel-sized `Mul`s of `fn` (a `tf.function` of one image batch) traced at 64x64:
    one per kernel it folds on the call."""
    import tensorflow as tf

    graph = fn.get_concrete_function(tf.TensorSpec((1, 64, 64, 3))).graph
    return [
        op
        for op in graph.get_operations()
        if op.type == "Mul"
        and op.outputs[0].shape.rank == 4
        and any(i.op.type == "ReadVariableOp" for i in op.inputs)
    ]


def test_float32_folded_kernels_wait_for_their_layers_input_and_bfloat16_ones_do_not():
    """Computed at the call's start, every float32 folded kernel stayed allocated until its
    convolution ran (a second copy of the weights at the activations' peak); deferred, each
    waits for its layer's input, or for the input of the Pad before it (oneDNN merges the Pad
    into the convolution, so waiting on the Pad would be a cycle: predict would fail)."""
    import tensorflow as tf

    model = small_model("unet", backbone="resnet18", base_filters=64, depth=4)
    products = _fold_products(tf.function(model.predict_step))
    assert len(products) == _live_foldable(model) > 0
    for op in products:
        assert [c.type for c in op.control_inputs] not in ([], ["Pad"]), op.name
    x = random_images(1, 64, 64)
    want = model(x, training=False).numpy()
    np.testing.assert_allclose(
        model.predict_on_batch(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max()
    )
    mixed, _ = _mixed_and_float32("unet")
    assert all(not op.control_inputs for op in _fold_products(tf.function(mixed.predict_step)))


def test_folded_once_the_kernels_are_kept_and_shared_by_every_trace():
    """Given `once` (a process whose weights are frozen, see `SegmentationModel._fold_once`),
    bfloat16 folded kernels are computed at the first call and kept: the traced graphs
    multiply no kernel, every trace reads the same kept tensors, the logits are those of
    the fold on each call, and they no longer follow the weights. float32 keeps folding on
    each call (`FOLD_ONCE_DTYPES`: the kept copy would be as large as the weights)."""
    import tensorflow as tf

    from keras_seg.fold import live_folded_call

    mixed, plain = _mixed_and_float32("unet")
    assert _live_foldable(mixed) > 0
    once: dict = {}
    kept = tf.function(lambda x: live_folded_call(mixed, x, once))
    each = tf.function(lambda x: live_folded_call(mixed, x))
    x = random_images(2, 64, 64)
    got = [kept(x[:1]).numpy(), kept(x).numpy()]  # two traces
    assert len(once) == _live_foldable(mixed)
    assert {kernel.dtype.name for kernel, _ in once.values()} == {"bfloat16"}
    first = {key: kernel for key, (kernel, _) in once.items()}
    kept(x[:1])
    assert all(once[key][0] is kernel for key, kernel in first.items()), "computed again"
    # Exactly: kept in a graph of their own, the folds round to bfloat16 as each call's do.
    for a, b in zip(got, [each(x[:1]).numpy(), each(x).numpy()], strict=True):
        np.testing.assert_array_equal(a, b)

    assert _fold_products(kept) == [] and len(_fold_products(each)) == _live_foldable(mixed)
    for conv in foldable_pairs(mixed).values():  # what the kept tensors stand for
        conv.kernel.assign(conv.kernel * 0.5)
    assert np.array_equal(kept(x).numpy(), got[1]), "the kept kernels are what it computes"
    assert not np.allclose(each(x).numpy(), got[1], atol=1e-3 * np.abs(got[1]).max())

    float32_once: dict = {}
    tf.function(lambda x: live_folded_call(plain, x, float32_once))(x)
    assert float32_once == {}


def test_kept_folds_round_to_bfloat16_as_each_calls_fold():
    """The kept kernels are computed in a graph, as each call's (Grappler turns `1 / sqrt`
    into `Rsqrt` there); computed eagerly, some of them rounded to bfloat16 differently and
    the logits moved (the ISBI 2012 U-Net: up to 0.03, 163 of 1.57M pixels changed class).
    Wide convolutions with random statistics, so that such a rounding shows."""
    import tensorflow as tf

    from keras_seg.fold import live_folded_call

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((None, None, 64))
        x = inputs
        for _ in range(4):
            x = keras.layers.Conv2D(256, 3, padding="same", use_bias=False)(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        model = keras.Model(inputs, keras.layers.Conv2D(4, 1, dtype="float32")(x))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    randomize_batch_norm(model, seed=3)
    once: dict = {}
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 64)).astype("float32")
    kept = tf.function(lambda x: live_folded_call(model, x, once))(x).numpy()
    assert len(once) == 4
    np.testing.assert_array_equal(kept, tf.function(lambda x: live_folded_call(model, x))(x))


def _ops_in(concrete, op_type: str) -> int:
    """How many `op_type` ops a concrete function runs, nested functions included."""
    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return sum(node.op == op_type for node in nodes)


def test_evaluate_runs_the_folded_forward_and_training_does_not():
    """`test_step` (evaluate, fit's validation) folds as `predict_step` does; its loss is
    the loss of `model(x, training=False)`; training and a plain call keep every BatchNorm."""
    import tensorflow as tf

    model = small_model("unet", backbone="resnet18", base_filters=64, depth=4)
    randomize_batch_norm(model)
    x, y = _labelled_batch()
    got, want = _evaluate_and_call_loss(model, x, y)
    assert got == pytest.approx(want, rel=1e-4)
    specs = (tf.TensorSpec((2, 64, 64, 3)), tf.TensorSpec((2, 64, 64), tf.int64))
    folded = _live_foldable(model)
    assert folded > 0
    all_bn = len(batch_norms(model))
    test_graph = tf.function(model.test_step).get_concrete_function(specs)
    assert _ops_in(test_graph, "FusedBatchNormV3") == all_bn - folded
    call = tf.function(lambda x: model(x, training=False)).get_concrete_function(specs[0])
    assert _ops_in(call, "FusedBatchNormV3") == all_bn
    train = tf.function(lambda x: model(x, training=True)).get_concrete_function(specs[0])
    assert _ops_in(train, "FusedBatchNormV3") == all_bn
    history = model.fit(x, y, batch_size=2, epochs=1, validation_data=(x, y), verbose=0)
    assert np.isfinite(history.history["val_loss"][0])


_LOAD_AND_PREDICT = """
import sys
import keras, numpy as np
import keras_seg  # registers keras_seg's classes
model = keras.saving.load_model(sys.argv[1])
print(type(model).__name__)
np.save(sys.argv[3], model.predict_on_batch(np.load(sys.argv[2])))
"""


def test_a_saved_model_keeps_its_class_in_a_new_process(tmp_path):
    model = small_model("deeplabv3plus")
    randomize_batch_norm(model)
    x = random_images(1, 64, 64)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "load.py").write_text(_LOAD_AND_PREDICT)
    args = [tmp_path / "load.py", tmp_path / "model.keras", tmp_path / "x.npy", tmp_path / "y.npy"]
    run = subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == "SegmentationModel"
    want = model(x, training=False).numpy()
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


_BF16_PREDICT = """
import keras, numpy as np
import keras_seg
keras.mixed_precision.set_global_policy("mixed_bfloat16")
model = keras_seg.build("unet", num_classes=3, backbone="resnet18", input_shape=(64, 64, 3))
model.predict_on_batch(np.ones((1, 64, 64, 3), "float32"))
"""


def test_bfloat16_predict_runs_no_batchnorm_of_its_own(tmp_path):
    """Why the live fold exists, in a new process: in bfloat16 TensorFlow leaves a BatchNorm
    after a convolution to a oneDNN primitive of its own; a keras_seg model's predict has
    none for U-Net ResNet-18 (every BatchNorm follows a Conv2D) and its convolutions carry
    the ReLU. Checked where oneDNN runs bfloat16 convolutions (native bfloat16 CPUs)."""
    (tmp_path / "predict.py").write_text(_BF16_PREDICT)
    env = os.environ | {"ONEDNN_VERBOSE": "1", "TF_ENABLE_ONEDNN_OPTS": "1"}
    run = subprocess.run(
        [sys.executable, str(tmp_path / "predict.py")],
        env=env | {"TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    executed = [line for line in run.stdout.splitlines() if ",exec," in line]
    convolutions = [line for line in executed if ",convolution," in line]
    if not any("src:bf16" in line for line in convolutions):
        pytest.skip("oneDNN runs no bfloat16 convolutions on this CPU")
    assert [line for line in executed if ",batch_normalization," in line] == []
    assert sum("eltwise_relu" in line for line in convolutions) >= 10
