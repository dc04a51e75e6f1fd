"""Checks every registered model passes; a new model is picked up without test edits."""

import gc

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_seg
from tests.helpers import assert_every_variable_gets_a_gradient
from tests.helpers import random_images
from tests.helpers import small_model

MODELS = keras_seg.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_output_shape_dtype_and_any_input_size(name):
    model = small_model(name, num_classes=5)
    # 64 is a multiple of every stride; 45x71 is a multiple of none.
    for height, width in [(64, 64), (45, 71)]:
        out = model(random_images(2, height, width), training=False)
        assert tuple(out.shape) == (2, height, width, 5)
        assert out.dtype == tf.float32
        assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name", MODELS)
def test_get_config_round_trip(name):
    model = small_model(name)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = random_images(1, 48, 40)
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_keras_file_round_trip_without_custom_objects(name, tmp_path):
    model = small_model(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = random_images(2, 40, 56)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_every_trainable_variable_gets_a_gradient(name):
    model = small_model(name, num_classes=4)
    x = random_images(2, 64, 64)
    y = np.random.default_rng(1).integers(0, 4, (2, 64, 64))
    assert_every_variable_gets_a_gradient(model, x, y)
    # And one real optimizer step through fit() changes the weights.
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss_fn)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", MODELS)
def test_mixed_precision(name, policy):
    keras.mixed_precision.set_global_policy(policy)
    model = small_model(name)
    assert all(v.dtype == "float32" for v in model.weights), "variables must stay float32"
    compute = {layer.compute_dtype for layer in model.layers if layer.weights}
    assert policy.split("_")[1] in compute, f"no layer computes in {policy}: {compute}"
    out = model(random_images(1, 64, 64), training=False)
    assert out.dtype == tf.float32
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name", MODELS)
def test_class_scores_compute_in_the_policy_and_the_output_layer_in_float32(name):
    """Under a mixed policy the layers that make class scores compute in reduced precision
    (as `torch.autocast` runs SMP's head), and the layers that produce the model's outputs
    are float32 layers: softmax, loss and argmax see float32 logits."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    num_classes = 7  # a count no other layer of the small configs has
    model = small_model(name, num_classes=num_classes)
    heads = [
        layer
        for layer in model.layers
        if layer.weights
        and isinstance(layer.output, keras.KerasTensor)  # not a nested backbone's pyramid
        and layer.output.shape[-1] == num_classes
    ]
    assert heads, f"{name}: no layer with weights makes {num_classes} channels"
    assert {layer.compute_dtype for layer in heads} == {"float16"}
    outputs = {id(t) for t in keras.tree.flatten(model.outputs)}
    last = [layer for layer in model.layers if id(layer.output) in outputs]
    assert len(last) == len(outputs)
    assert {layer.compute_dtype for layer in last} == {"float32"}
    assert {t.dtype for t in model.outputs} == {"float32"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MODELS if keras_seg.get_spec(n).paper_params])
def test_parameter_count_matches_paper(name):
    spec = keras_seg.get_spec(name)
    config = dict(spec.paper_config)
    model = keras_seg.build(name, **config)
    count = model.count_params()
    assert abs(count - spec.paper_params) / spec.paper_params < 0.01, (
        f"{name}: {count:,} parameters, paper says {spec.paper_params:,}"
    )


@pytest.mark.parametrize("name", MODELS)
def test_build_leaves_no_variables_for_the_cyclic_collector(name):
    """Throw-away models of a build (the atrous surgery's original backbone) hold a full set of
    weights in reference cycles; `build` collects them before it returns."""
    gc.collect()
    model = small_model(name)
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage to look at
    try:
        gc.collect()
        left = [o.path for o in gc.garbage if isinstance(o, keras.Variable)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == [], f"{name}: {len(left)} variables of discarded models, e.g. {left[:3]}"
    assert model.weights


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown model 'unet3000'.*unet"):
        keras_seg.build("unet3000", num_classes=2)


def test_unknown_argument_names_value_and_allowed():
    with pytest.raises(TypeError, match=r"\['base_width'\].*base_filters"):
        keras_seg.build("unet", num_classes=2, base_width=8)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "21", True])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        keras_seg.build("unet", num_classes=bad)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"input_shape must be .*\(64, 64\)"):
        keras_seg.build("unet", num_classes=2, input_shape=(64, 64))
