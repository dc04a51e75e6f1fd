"""Poly schedule values, weight decay that skips BatchNorm and biases, precision/strategy set-up."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_seg.config import TrainConfig
from keras_seg.training import distribution
from keras_seg.training.distribution import build_strategy
from keras_seg.training.distribution import is_chief
from keras_seg.training.distribution import set_precision
from keras_seg.training.schedules import build_optimizer
from keras_seg.training.schedules import build_schedule


def test_poly_schedule_values_and_serialization():
    schedule = build_schedule(TrainConfig(learning_rate=0.01, steps=1000, poly_power=0.9))
    for step in [0, 250, 500, 999, 1000, 1200]:
        expected = 0.01 * (1 - min(step, 1000) / 1000) ** 0.9
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert float(clone(300)) == pytest.approx(float(schedule(300)))
    assert build_schedule(TrainConfig(schedule="constant", learning_rate=0.1)) == 0.1
    cosine = build_schedule(TrainConfig(schedule="cosine", learning_rate=1.0, steps=10))
    assert float(cosine(5)) == pytest.approx(0.5, abs=1e-6)


def test_linear_warmup_then_poly_over_the_remaining_steps():
    """mmsegmentation's SegFormer schedule: LinearLR to step 1500, then PolyLR(power 1) to 160k."""
    cfg = TrainConfig(learning_rate=6e-5, steps=160000, warmup_steps=1500, poly_power=1.0)
    schedule = build_schedule(cfg)
    for step, expected in [
        (0, 0.0),
        (750, 3e-5),
        (1500, 6e-5),
        (80750, 6e-5 * (1 - 79250 / 158500)),
        (160000, 0.0),
    ]:
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-12), step
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert float(clone(1000)) == pytest.approx(float(schedule(1000)))
    assert float(clone(9000)) == pytest.approx(float(schedule(9000)))
    constant = build_schedule(TrainConfig(schedule="constant", learning_rate=0.1, warmup_steps=10))
    assert [float(constant(s)) for s in (5, 10, 99)] == pytest.approx([0.05, 0.1, 0.1])
    optimizer = build_optimizer(cfg)
    assert float(optimizer.learning_rate) == 0.0  # step 0


@pytest.mark.parametrize("layerwise", [{}, {"conv2d": 1.0}], ids=["plain", "layerwise"])
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_skips_batchnorm_and_bias(name, layerwise):
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 1, use_bias=True)(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    for v in model.trainable_variables:
        v.assign(np.ones(v.shape, "float32"))
    cfg = TrainConfig(
        optimizer=name,
        learning_rate=0.1,
        weight_decay=0.5,
        schedule="constant",
        lr_multipliers=layerwise,
    )
    optimizer = build_optimizer(cfg)
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zeros, model.trainable_variables, strict=True))
    after = {v.path.split("/")[-1]: v.numpy() for v in model.trainable_variables}
    np.testing.assert_allclose(after["kernel"], 1 - 0.1 * 0.5)  # decayed
    for kept in ["bias", "gamma", "beta"]:
        np.testing.assert_allclose(after[kept], 1.0, err_msg=kept)


def test_optimizer_settings():
    sgd = build_optimizer(TrainConfig(momentum=0.9, nesterov=True, weight_decay=0.0))
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9 and sgd.nesterov
    assert sgd.weight_decay is None


@pytest.mark.parametrize("layerwise", [{}, {"lr_multipliers": {"kernel": 2.0}}])
def test_adamw_epsilon_is_pytorchs(layerwise):
    # torch.optim.AdamW's eps 1e-8 (Keras' default is 1e-7).
    adamw = build_optimizer(TrainConfig(optimizer="adamw", **layerwise))
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.epsilon == 1e-8


def test_precision_and_single_device_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    # No GPU here: auto is mixed_bfloat16 on CPUs with native bfloat16
    # (bench_results/precision*.json), else float32.
    monkeypatch.setattr(distribution, "cpu_has_native_bfloat16", lambda: False)
    assert set_precision("auto") == "float32"
    monkeypatch.setattr(distribution, "cpu_has_native_bfloat16", lambda: True)
    assert set_precision("auto") == "mixed_bfloat16"
    assert set_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    assert build_strategy("auto").num_replicas_in_sync == 1
    assert is_chief()
    with pytest.raises(ValueError, match="Unknown distribution 'tpu'"):
        build_strategy("tpu")
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        build_strategy("multi_worker")


@pytest.mark.parametrize(
    "flags, native",
    [
        ("fpu sse avx2 avx512f avx512_bf16 vaes", True),
        ("fpu sse avx2 amx_bf16 amx_tile amx_int8", True),
        ("fpu sse avx2 avx512f avx512_vnni", False),
    ],
)
def test_native_bfloat16_from_cpuinfo(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert distribution.cpu_has_native_bfloat16(str(cpuinfo)) is native
    assert distribution.cpu_has_native_bfloat16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize(
    "cluster, task, chief",
    [
        ({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 1}, False),
        ({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 0}, True),
        ({"chief": ["c:0"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
        ({"chief": ["c:0"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
    ],
)
def test_chief_from_tf_config(monkeypatch, cluster, task, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert is_chief() is chief


def test_mixed_float16_training_step_uses_loss_scaling(tmp_path):
    from keras_seg.losses import CrossEntropy
    from tests.helpers import small_model

    set_precision("mixed_float16")
    model = small_model("unet", num_classes=3)
    model.compile(optimizer=build_optimizer(TrainConfig(schedule="constant")), loss=CrossEntropy())
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, (2, 32, 32))
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
