"""`keras-seg demo` smoke test: a few steps instead of the full demo."""

import json

import cv2
import keras
import pytest

from keras_seg.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_with_few_steps(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        ["demo", "--output", str(out), "--steps", "4", "--steps-per-epoch", "2"]
        + ["--num-train", "16"]
    )
    assert code == 0
    assert "held-out mIoU" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["heldout_miou"] <= 1.0 and metrics["steps"] == 4
    assert len(metrics["per_class"]) == 5
    assert len(metrics["history"]["val_mean_iou"]) == 2
    for fmt in ["saved_model", "tflite"]:
        assert metrics["exports"][fmt]["pixel_agreement"] > 0.99, fmt
    assert (out / "saved_model" / "saved_model.pb").exists()
    assert (out / "model.tflite").stat().st_size > 0
    model = keras.saving.load_model(out / "model.keras")
    assert model.output_shape[-1] == 5
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 8
    assert cv2.imread(str(overlays[0])).shape == (96, 3 * 96, 3)  # image | truth | prediction
    assert (out / "run" / "config.yaml").exists() and (out / "run" / "best.keras").exists()
    assert (out / "config.yaml").read_text() == (out / "run" / "config.yaml").read_text()
