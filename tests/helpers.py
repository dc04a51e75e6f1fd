"""Helpers shared by several test modules."""

from __future__ import annotations

import numpy as np

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
