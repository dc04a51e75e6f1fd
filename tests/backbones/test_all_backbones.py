"""Checks every registered backbone gets, through its registered `small_config`.

A new backbone is picked up without edits here: its pyramid holds the levels it declares at
strides 2**k (any input size, the deepest at each declared output stride), its channels
are fixed, it saves and loads as a `.keras` file, every trainable variable gets a gradient,
and it runs under mixed precision with finite features.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.backbones import list_backbones

# Two input sizes: a multiple of 32 and one that is not.
SIZES = ((64, 64), (70, 90))
# Backbones whose only configuration is paper-size (keras.applications ResNets): the
# gradient check, which needs a training step, runs for the others.
_FULL_SIZE = {name for name in list_backbones() if not get_backbone_spec(name).small_config}


def _small(name: str, **overrides) -> keras.Model:
    return build_backbone(name, **{**get_backbone_spec(name).small_config, **overrides})


def _images(height: int, width: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, height, width, 3)).astype("float32")


@pytest.mark.parametrize("name", list_backbones())
def test_pyramid_levels_strides_and_channels(name):
    spec = get_backbone_spec(name)
    model = _small(name)
    assert sorted(model.output) == sorted(spec.levels)
    channels = {level: model.output[level].shape[-1] for level in spec.levels}
    for height, width in SIZES:
        features = model(_images(height, width))
        for level in spec.levels:
            stride = 2 ** int(level[1])
            h, w = features[level].shape[1:3]
            # Padding conventions differ (floor or ceil) but never by more than one pixel.
            assert h in (height // stride, -(-height // stride)), (level, height, h)
            assert w in (width // stride, -(-width // stride)), (level, width, w)
            assert features[level].shape[-1] == channels[level]


@pytest.mark.parametrize(
    "name, output_stride",
    [(n, s) for n in list_backbones() for s in get_backbone_spec(n).output_strides if s != 32],
)
def test_atrous_output_stride_keeps_the_deepest_level_at_that_stride(name, output_stride):
    features = _small(name, output_stride=output_stride)(_images(64, 64))
    assert features["P5"].shape[1] == 64 // output_stride


@pytest.mark.parametrize("name", list_backbones())
def test_saves_and_loads_without_custom_objects(name, tmp_path):
    model = _small(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _images(*SIZES[1])
    for level, value in model(x).items():
        np.testing.assert_allclose(loaded(x)[level], value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(set(list_backbones()) - _FULL_SIZE))
def test_every_variable_gets_a_gradient(name):
    model = _small(name)
    # Batch 2: TF 2.21's oneDNN corrupts the heap in the gradient of the width-8 ResNet-18 at
    # batch 1 (malloc abort; fine with TF_ENABLE_ONEDNN_OPTS=0, at width 16, or at batch 2).
    x = _images(64, 64, batch=2)
    with tf.GradientTape() as tape:
        features = model(x, training=True)
        loss = sum(tf.reduce_mean(tf.square(f)) for f in features.values())
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads, strict=True) if g is None]
    assert not missing, missing
    zero = [v.path for v, g in zip(model.trainable_variables, grads, strict=True) if not np.any(g)]
    assert not zero, zero


@pytest.mark.parametrize("name", list_backbones())
def test_mixed_precision_features_are_finite(name):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _small(name)
    for level, value in model(_images(64, 64)).items():
        assert value.dtype == "bfloat16", (level, value.dtype)
        assert np.all(np.isfinite(np.asarray(tf.cast(value, "float32")))), level
