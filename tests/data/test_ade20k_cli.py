"""`keras-seg train` on ADE20K files in the release layout, in a fresh interpreter, as users run it."""

import json
import subprocess

import pytest
import yaml

from tests.data import fixtures as fx
from tests.training.common import CLI
from tests.training.common import REPO
from tests.training.common import cli_env

CONFIG = {
    "name": "segformer_tiny_ade20k",
    "model": {
        "name": "segformer",
        "backbone": "mit_b0",
        "num_classes": 150,
        "options": {
            "backbone_kwargs": {"hidden_sizes": [8, 16, 20, 32], "depths": [1, 1, 1, 1]},
            "decoder_filters": 16,
        },
    },
    "data": {"name": "ade20k", "crop_size": [32, 32]},
    "train": {
        "batch_size": 2,
        "steps": 2,
        "steps_per_epoch": 2,
        "optimizer": "adamw",
        "learning_rate": 6e-5,
        "poly_power": 1.0,
        "warmup_steps": 1,
        "weight_decay": 0.01,
        "lr_multipliers": {"^(decoder_|logits/)": 10.0},
        "precision": "float32",
        "distribution": "one_device",
        "checkpoint_every": 2,
    },
}


def _train(tmp_path, data_dir, *extra):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    args = [*CLI, "train", "--config", str(config), "--data-dir", str(data_dir)]
    return subprocess.run(
        [*args, "--model-dir", str(tmp_path / "run"), *extra],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_trains_segformer_on_ade20k_files(tmp_path):
    fx.write_ade20k(tmp_path / "data", "training", 4)
    val = fx.write_ade20k(tmp_path / "data", "validation", 2, seed=1)
    run = _train(tmp_path, tmp_path / "data")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "run" / "final.keras").exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 1
    final = metrics["final_eval"]  # at full resolution, label 0 ("other") left out
    assert final["num_pixels"] == sum(int((m != 0).sum()) for m in val.values())
    assert len(final["per_class"]) == 150 and final["per_class"][0]["name"] == "wall"


def test_cli_names_the_missing_ade20k_folder(tmp_path):
    fx.write_ade20k(tmp_path / "data", "training", 1)
    run = _train(tmp_path, tmp_path / "data", "--no-final-eval")
    folder = tmp_path / "data" / "ADEChallengeData2016" / "images" / "validation"
    assert run.returncode == 2, run.stderr[-3000:]
    assert f"ade20k: folder {folder} does not exist (expected the val split's .jpg images)" in (
        run.stderr
    )
