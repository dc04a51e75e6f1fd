"""Training on bad data ends the process cleanly, with the one-line data error.

Each case trains in a fresh interpreter, as `keras-seg train` does, and lets the error end
it. The data error used to surface from inside tf.data while the pipeline's threads went on
calling Python, and the process could abort at exit ("terminate called without an active
exception", SIGABRT, exit code 134) or hang.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.data import fixtures as fx

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    from keras_seg.config import config_from_dict
    from keras_seg.data import data_error_from
    from keras_seg.training.trainer import train

    cfg = config_from_dict({
        "name": "bad_data",
        "model": {"name": "unet", "num_classes": 3, "options": {"base_filters": 4, "depth": 2}},
        "data": {"name": "folder", "data_dir": sys.argv[1], "train_split": "all",
                 "val_split": "all", "options": {"num_classes": 3}, "crop_size": [32, 32]},
        "train": {"batch_size": 2, "steps": 2, "steps_per_epoch": 2, "precision": "float32",
                  "distribution": "one_device", "checkpoint_every": 2, "seed": 0},
    }, "test_exit")
    try:
        train(cfg, sys.argv[2], verbose=0, final_eval=False)
    except Exception as e:
        print("DATA ERROR:", data_error_from(e), flush=True)
        raise
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["truncated_jpeg", "mask_value"])
def test_bad_data_ends_training_cleanly(tmp_path, problem):
    rng = np.random.default_rng(0)
    masks = {f"img_{k:03d}": fx.blocks(rng, range(3), size=(40, 40)) for k in range(6)}
    images = fx.write_folder(tmp_path / "data", masks, suffix=".jpg")
    if problem == "truncated_jpeg":  # found by the file check in `load`
        bad = images["img_003"]
        fx.truncate(bad, 0.5)
        expected = f"folder: {bad}: truncated or corrupt JPEG"
    else:  # found by the pipeline, during `fit`
        bad = tmp_path / "data" / "masks" / "img_003.png"
        mask = masks["img_003"].copy()
        mask[:2, :2] = 9
        fx.write_png(bad, mask)
        expected = f"folder: {bad}: 4 pixels hold values that are not classes of folder (e.g. 9)"
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,  # a hang fails here
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert "terminate called" not in run.stderr, run.stderr[-2000:]
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])  # not 134, not a signal
    lines = [line for line in run.stdout.splitlines() if line.startswith("DATA ERROR:")]
    assert lines and lines[0].startswith(f"DATA ERROR: {expected}"), run.stdout[-2000:]
