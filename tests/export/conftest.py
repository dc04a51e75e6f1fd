"""A small U-Net trained on the synthetic data, shared by the export tests.

Training takes ~40 s, so the model is trained once per test session: with pytest-xdist the
workers share one copy through a file lock in the session's common temporary directory.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_seg
import keras_seg.export
import keras_seg.models  # noqa: F401  (registers the layers best.keras needs)
from keras_seg.data import synthetic

SIZE = 64
NUM_CLASSES = len(synthetic.CLASS_NAMES)
EPOCHS = 11


@dataclass
class Trained:
    """The trained model, its run directory (best.keras + config.yaml) and held-out data."""

    model: keras.Model
    run_dir: Path
    x_val: np.ndarray
    y_val: np.ndarray


def _train(run_dir: Path) -> None:
    keras.utils.set_random_seed(0)
    (x_train, y_train), _ = synthetic.splits(num_train=384, num_val=1, size=SIZE)
    model = keras_seg.build("unet", num_classes=NUM_CLASSES, base_filters=8, depth=3)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train.astype("float32"), y_train, batch_size=16, epochs=EPOCHS, verbose=0)
    partial = run_dir.with_name(run_dir.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save(partial / "best.keras")
    # The layout the training code writes: checkpoint + resolved config naming the data set.
    (partial / "config.yaml").write_text(
        "name: export_test_unet\nmodel: {name: unet}\n"
        f"data: {{name: synthetic, crop_size: [{SIZE}, {SIZE}]}}\n"
    )
    partial.rename(run_dir)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by all workers of this session
    run_dir = root / "export_trained_unet"
    with open(root / "export_trained_unet.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not run_dir.exists():
            _train(run_dir)
    model = keras.saving.load_model(run_dir / "best.keras")
    x_val, y_val = synthetic.make_dataset(48, size=SIZE, seed=1_000_003)
    return Trained(model, run_dir, x_val, y_val)


@pytest.fixture(scope="session")
def saved_model_dir(trained, tmp_path_factory) -> Path:
    """The trained model exported once as a SavedModel with the synthetic classes."""
    return keras_seg.export.saved_model(
        trained.model,
        tmp_path_factory.mktemp("saved_model") / "unet",
        class_names=synthetic.CLASS_NAMES,
        palette=synthetic.PALETTE,
    )


@pytest.fixture(scope="session")
def request_images() -> tuple[list[bytes], list[np.ndarray]]:
    """Three encoded images of different sizes (PNG 64x64, PNG 45x71, JPEG 70x50) and the
    uint8 pixels a server decodes from them."""
    import tensorflow as tf

    from keras_seg.serving import encode_image

    picture = synthetic.make_dataset(1, size=96, seed=7)[0][0]
    crops = [picture[:64, :64], picture[10:55, 5:76], picture[20:90, 30:80]]
    encoded = [encode_image(crops[0]), encode_image(crops[1]), encode_image(crops[2], "jpeg")]
    decoded = [crops[0], crops[1], tf.io.decode_jpeg(encoded[2]).numpy()]
    return encoded, decoded


@pytest.fixture(scope="session")
def expected_maps(trained, request_images) -> list[np.ndarray]:
    """The Keras model's class map of each request image, run alone at its own size."""
    from keras_seg.export.verify import keras_predict

    return [keras_predict(trained.model, im[None])["class_map"][0] for im in request_images[1]]
