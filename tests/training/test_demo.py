"""`keras-seg demo` smoke test: a few steps instead of the full demo."""

import json
import subprocess

import cv2
import keras
import pytest

from keras_seg.cli import main
from tests.training.common import CLI
from tests.training.common import cli_env


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

    # What the README tells a user to do next, from a new shell: predict and evaluate.
    for args in (
        ["predict", "--model", str(out / "model.keras"), "--input", str(out / "overlays"),
         "--output", str(tmp_path / "pred")],
        ["evaluate", "--checkpoint", str(out / "run")],
    ):  # fmt: skip
        done = subprocess.run(
            [*CLI, *args], env=cli_env(), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stderr == "", done.stderr[-3000:]
    assert len(list((tmp_path / "pred").glob("*_overlay.png"))) == 8
    evaluated = json.loads((out / "run" / "eval_val.json").read_text())
    assert evaluated["miou"] == pytest.approx(metrics["heldout_miou"], rel=1e-4)
