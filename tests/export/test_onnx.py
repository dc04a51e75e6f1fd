"""ONNX export (optional extra): onnxruntime agrees with Keras at any input size."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import keras_seg.export
from keras_seg.data import synthetic
from tests.helpers import small_model


def test_onnx_matches_keras_at_two_sizes(trained, tmp_path):
    pytest.importorskip("tf2onnx", reason="extra 'onnx' not installed")
    pytest.importorskip("onnxruntime", reason="extra 'onnx' not installed")
    path = keras_seg.export.onnx(
        trained.model, tmp_path / "unet.onnx", class_names=synthetic.CLASS_NAMES
    )
    for images, labels in [
        (trained.x_val[:8], trained.y_val[:8]),
        (trained.x_val[8:12, :45, :59], trained.y_val[8:12, :45, :59]),
    ]:
        report = keras_seg.export.verify(trained.model, path, images, labels)
        assert report.format == "onnx"
        assert report.image_size == images.shape[1:3]
        assert report.pixel_agreement >= 0.999, str(report)
        assert report.max_abs_diff < 1e-4, str(report)
    out = keras_seg.export.OnnxModel(path).predict(trained.x_val[:1])
    assert out["class_map"].dtype == np.int32 and out["class_map"].shape == (1, 64, 64)
    assert (tmp_path / "labels.txt").read_text().splitlines() == list(synthetic.CLASS_NAMES)


def test_missing_tf2onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # makes `import tf2onnx` fail
    with pytest.raises(ImportError, match=r"keras-seg\[onnx\]"):
        keras_seg.export.onnx(small_model("unet"), tmp_path / "m.onnx")
