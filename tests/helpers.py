"""Helpers shared by several test modules."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import keras_seg


def small_model(name: str, num_classes: int = 3, channels: int = 3, **overrides):
    """The registry's cheap configuration of `name`, with any-size input."""
    kwargs = {**keras_seg.get_spec(name).small_config, **overrides}
    return keras_seg.build(
        name, num_classes=num_classes, input_shape=(None, None, channels), **kwargs
    )


def random_images(
    batch: int, height: int, width: int, channels: int = 3, seed: int = 0
) -> np.ndarray:
    """Float32 pixels in 0..255, as the models take them."""
    return (
        np.random.default_rng(seed)
        .uniform(0, 255, (batch, height, width, channels))
        .astype("float32")
    )


def assert_every_variable_gets_a_gradient(model, x: np.ndarray, y: np.ndarray) -> None:
    """Cross-entropy on `(x, y)` gives every trainable variable a non-zero gradient."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    pairs = list(zip(model.trainable_variables, grads, strict=True))
    missing = [v.path for v, g in pairs if g is None]
    assert not missing, f"no gradient for {missing}"
    zero = [v.path for v, g in pairs if not np.any(g.numpy())]
    assert not zero, f"all-zero gradient for {zero}"


def int8_tflite_outputs(
    model: keras.Model, calibration: np.ndarray, images: np.ndarray
) -> list[np.ndarray]:
    """Full-integer (int8) TFLite of `model` (one input, named "images"), calibrated on
    `calibration` (`[N, ...]`), run on `images` (`[1, ...]`); float outputs in Keras order.

    The converter quantizes every tensor, as `keras_seg.export.tflite(..., "int8")` does, so
    layer-level checks see what a quantized model's layers see.
    """
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([c[None]] for c in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    runner = Interpreter(model_content=converter.convert()).get_signature_runner()
    out = runner(images=images)
    return [out[f"output_{i}"] for i in range(len(out))]


def onednn_in_training(model: str = "unet", backbone: str | None = "resnet18") -> bool | None:
    """Whether a training process that keras_seg starts for `model` with `backbone`
    (`keras-seg train`, the benchmarks' training workers, whose U-Nets have ResNet encoders)
    runs TensorFlow's oneDNN kernels on this machine: TensorFlow's own choice or
    `training_environment()`'s. None where this process's TensorFlow started with
    `TF_ENABLE_ONEDNN_OPTS` set (then the two processes' defaults cannot be told apart)."""
    import os

    from keras_seg.machine import onednn_enabled
    from keras_seg.machine import training_environment

    if "TF_ENABLE_ONEDNN_OPTS" in os.environ:
        return None
    return onednn_enabled() or bool(training_environment(model, backbone))
