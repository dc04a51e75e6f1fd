"""`keras-seg train` on a model with deep supervision (PSPNet's auxiliary head): the aux loss
is weighted by `train.aux_loss_weight`, the run files hold the single-output model, and
`evaluate` and `export` take them as they take any run."""

import json
import subprocess

import pytest
import yaml

from tests.training.common import CLI
from tests.training.common import TINY
from tests.training.common import cli_env

PSP_AUX = {
    "name": "pspnet",
    "num_classes": 5,
    "backbone": "resnet18",
    "options": {
        "aux_head": True,
        "backbone_kwargs": {"width": 8},
        "pyramid_filters": 8,
        "head_filters": 16,
        "aux_filters": 8,
    },
}


def _run(args, **kwargs):
    return subprocess.run(
        [*CLI, *args], env=cli_env(), capture_output=True, text=True, timeout=600, **kwargs
    )


@pytest.mark.slow
def test_train_with_aux_head_then_evaluate_and_export(tmp_path):
    config = {**TINY, "name": "psp_aux", "model": PSP_AUX}
    config["train"] = {**TINY["train"], "aux_loss_weight": 0.4}
    path = tmp_path / "psp_aux.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    proc = _run(["train", "--config", str(path), "--model-dir", str(run)])
    assert proc.returncode == 0, proc.stderr[-3000:]

    history = json.loads((run / "metrics.json").read_text())["history"]
    # The main output's metrics keep their plain names; both losses are logged, and the
    # total is main + 0.4 x aux.
    assert len(history["val_mean_iou"]) == len(history["val_pixel_accuracy"]) == 2
    for epoch in range(2):
        total = history["logits_loss"][epoch] + 0.4 * history["aux_logits_loss"][epoch]
        assert history["loss"][epoch] == pytest.approx(total, rel=1e-4)
    assert json.loads((run / "best.keras.json").read_text())["monitor"] == "val_mean_iou"

    # The saved models are the inference model: one output, no aux layers. Loaded in a
    # fresh interpreter, as evaluate/export load them.
    check = (
        "import keras, keras_seg, numpy as np, sys\n"
        "for name in ('best.keras', 'final.keras'):\n"
        f"    m = keras.saving.load_model({str(run)!r} + '/' + name)\n"
        "    assert not isinstance(m.output, dict), m.output\n"
        "    assert not [l.name for l in m.layers if l.name.startswith('aux')], name\n"
        "    y = m(np.zeros((1, 40, 56, 3), 'float32'))\n"
        "    assert tuple(y.shape) == (1, 40, 56, 5), y.shape\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [CLI[0], "-c", check], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

    proc = _run(["evaluate", "--checkpoint", str(run)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mIoU" in proc.stdout
    out = tmp_path / "psp.tflite"
    proc = _run(["export", "--model", str(run), "--format", "tflite", "--output", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 0


def test_negative_aux_loss_weight_is_a_config_error(tmp_path):
    config = {**TINY, "train": {**TINY["train"], "aux_loss_weight": -1}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = _run(["train", "--config", str(path), "--model-dir", str(tmp_path / "run")])
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith("train.aux_loss_weight: value -1.0 is out of range")
    ), proc.stderr
