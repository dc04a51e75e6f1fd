"""Metadata that travels with exports, and int8 calibration input handling (no conversion)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_seg.export import ExportMetadata
from keras_seg.export.metadata import default_palette
from keras_seg.export.tflite_export import calibration_samples


def test_default_palette_is_the_voc_colour_map():
    np.testing.assert_array_equal(
        default_palette(6),
        [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]],
    )


def test_metadata_fills_generic_names_and_round_trips(tmp_path):
    meta = ExportMetadata.create(3, palette=np.zeros((256, 3), np.uint8), model_name="unet")
    assert meta.class_names == ["class_0", "class_1", "class_2"]
    assert meta.palette == [[0, 0, 0]] * 3  # a longer palette is cut to the classes
    labels, json_file = meta.write(tmp_path)
    assert labels.read_text() == "class_0\nclass_1\nclass_2\n"
    assert ExportMetadata.read(json_file) == meta


@pytest.mark.parametrize(
    ("names", "palette", "match"),
    [
        (["a"], None, r"1 class names \['a'\] for a model with 2 classes"),
        (None, [[1, 2, 3]], r"palette must be \[num_classes=2, 3\] RGB, got shape \(1, 3\)"),
        (None, [[1, 2], [3, 4]], r"got shape \(2, 2\)"),
    ],
)
def test_metadata_rejects_mismatches(names, palette, match):
    with pytest.raises(ValueError, match=match):
        ExportMetadata.create(2, names, palette)


def test_calibration_accepts_arrays_lists_datasets_and_callables():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 20, 30, 3)).astype(np.uint8)
    samples = calibration_samples(batch, (10, 15), 3)
    assert len(samples) == 3 and all(s.shape == (1, 10, 15, 3) for s in samples)
    assert all(s.dtype == np.float32 and s.min() >= 0 and s.max() <= 255 for s in samples)
    mixed = [batch[0], batch[1, :12, :9]]  # different sizes, each resized
    assert [s.shape for s in calibration_samples(mixed, (8, 8), 3)] == [(1, 8, 8, 3)] * 2
    pairs = tf.data.Dataset.from_tensor_slices((batch, np.zeros((3, 20, 30)))).batch(2)
    assert len(calibration_samples(pairs, (20, 30), 3)) == 3
    assert len(calibration_samples(lambda: iter(batch), (20, 30), 3, limit=2)) == 2
    np.testing.assert_array_equal(calibration_samples(batch[0], (20, 30), 3)[0][0], batch[0])
    with pytest.raises(ValueError, match="gave no images"):
        calibration_samples([], (8, 8), 3)
