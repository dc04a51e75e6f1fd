"""`keras-seg benchmark pipeline` in a new process on a tiny config: the pipeline and the
training step are both measured, the JSON and table say so, and its check sets the exit code."""

import json
import subprocess

import pytest
import yaml

from keras_seg.benchmarks import pipeline as bench
from tests.training.common import CLI
from tests.training.common import TINY
from tests.training.common import cli_env


def test_generated_files_have_the_data_sets_size_and_format(tmp_path):
    import cv2

    bench.write_files(tmp_path, "cityscapes", 2, 19)
    image = cv2.imread(str(tmp_path / "images" / "0.png"))
    mask = cv2.imread(str(tmp_path / "masks" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (1024, 2048, 3) and mask.shape == (1024, 2048)
    assert set(mask.ravel()) <= set(range(19)) | {255} and 255 in mask


@pytest.mark.slow
def test_pipeline_benchmark_on_a_tiny_config(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out, md = tmp_path / "p.json", tmp_path / "p.md"
    args = [*CLI, "benchmark", "pipeline", "--configs", str(config), "--images", "4"]
    args += ["--batches", "2", "--output", str(out), "--markdown", str(md)]
    proc = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["results"]
    assert row["config"] == "tiny" and row["crop_size"] == [48, 48] and row["batch_size"] == 4
    assert row["pipeline_images_per_s"] > row["train_images_per_s"] > 0
    assert row["pipeline_share"] == pytest.approx(
        row["train_images_per_s"] / row["pipeline_images_per_s"]
    )
    assert row["keeps_up"] is True
    assert "| tiny | unet | 48x48 | 4 |" in md.read_text()

    # A config whose model cannot be built: one line naming it, exit 1, JSON written.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump(
            {**TINY, "name": "broken", "model": {**TINY["model"], "options": {"depth": 0}}}
        )
    )
    args[args.index(str(config))] = str(broken)
    proc = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "for broken" in proc.stderr.strip().splitlines()[-1]
    assert "error" in json.loads(out.read_text())["results"][0]
