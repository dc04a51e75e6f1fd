"""A tiny training config (seconds on CPU) shared by the training tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import keras
import numpy as np
import yaml

from keras_seg.config import Config
from keras_seg.config import load_config

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "name": "tiny",
    "model": {"name": "unet", "num_classes": 5, "options": {"base_filters": 4, "depth": 2}},
    "data": {
        "name": "synthetic",
        "options": {"num_train": 16, "num_val": 4, "size": 48, "seed": 0},
        "crop_size": [48, 48],
        "augment": {"scale_range": [1.0, 1.0], "jitter": False},
    },
    "train": {
        "batch_size": 4,
        "steps": 4,
        "steps_per_epoch": 2,
        "optimizer": "adamw",
        "learning_rate": 0.003,
        "precision": "float32",
        "distribution": "one_device",
        "checkpoint_every": 2,
    },
}


def tiny_config(tmp_path: Path, overrides: list[str] = ()) -> tuple[Path, Config]:
    """Write the tiny config to `tmp_path/tiny.yaml`; return its path and the loaded Config."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path, load_config(path, overrides)


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a `python -m keras_seg` subprocess that imports this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    if "TF_CONFIG" not in extra:
        env.pop("TF_CONFIG", None)
    return env


CLI = [sys.executable, "-m", "keras_seg"]


def tiny_model() -> keras.Model:
    """Conv, LayerNorm, ReLU, 1x1 logits on 8x8x3: the optimizer tests' model."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="body_conv")(inputs)
    x = keras.layers.LayerNormalization(name="body_norm")(x)
    x = keras.layers.Conv2D(3, 1, name="logits")(keras.layers.ReLU()(x))
    return keras.Model(inputs, x)


def tiny_batch():
    """Two 8x8 images and labels of 3 classes, fixed."""
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (2, 8, 8, 3)).astype("float32"), rng.integers(0, 3, (2, 8, 8))
