"""`keras-seg benchmark isbi` end to end on tiny generated ISBI-layout data, and its check."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_seg.benchmarks import learning
from tests.helpers import onednn_in_training

REPO = Path(__file__).resolve().parents[2]


def isbi_layout(root: Path, count: int = 6, size: int = 64) -> Path:
    """`root/image/N.png` (grey) and `root/label/N.png` (0 membrane, 255 cell), no lists."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir()
    for i in range(count):
        label = np.where(rng.random((size, size)) < 0.3, 0, 255).astype(np.uint8)
        image = np.clip(0.6 * label + rng.normal(0, 20, label.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "image" / f"{i}.png"), image)
        cv2.imwrite(str(root / "label" / f"{i}.png"), label)
    return root


@pytest.mark.slow  # two fresh interpreters building ResNet-34 U-Nets: ~70 s on 2 quiet cores
def test_command_alternates_libraries_writes_the_report_and_fails_the_check(tmp_path):
    # Never import SMP here: torchvision crashes next to TensorFlow (the worker runs apart).
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        pytest.skip("segmentation_models_pytorch is not installed")
    data = isbi_layout(tmp_path / "isbi")
    out, md = tmp_path / "isbi.json", tmp_path / "isbi.md"
    # A tolerance of -1000 points demands the impossible: the check must fail, after the JSON.
    argv = ["--data-dir", str(data), "--seeds", "0", "--steps", "3", "--batch", "2"]
    argv += ["--crop", "32", "--eval-every", "2", "--val-count", "2", "--tolerance", "-1000"]
    argv += ["--output", str(out), "--markdown", str(md)]
    proc = subprocess.run(
        [sys.executable, "-m", "keras_seg", "benchmark", "isbi", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("benchmark isbi: keras_seg's mean val mIoU"), proc.stderr

    report = json.loads(out.read_text())
    assert report["benchmark"] == "isbi" and report["machine"]["cpu_count"] >= 1
    assert report["versions"]["tensorflow"]
    settings = report["settings"]
    assert settings["train_stems"] == ["0", "1", "2", "3"] and settings["val_stems"] == ["4", "5"]
    assert settings["keras_seg_config"]["data"]["cache"] is True
    results = report["results"]
    assert results["order"] == ["keras_seg0", "smp0"]
    assert results["check"] == last
    for run in results["runs"]:
        assert "error" not in run, run
        assert [c["step"] for c in run["curve"]] == [2, 3]
        assert 0 <= run["final"]["miou"] <= 100 and 0 <= run["final"]["pixel_accuracy"] <= 100
        assert run["total_s"] > run["train_s"] > 0
        assert run["params"] == results["runs"][0]["params"]  # the same architecture
    keras_run = results["runs"][0]  # scored by its validation after the last step
    assert keras_run["final"]["miou"] == pytest.approx(keras_run["curve"][-1]["miou"])
    training = onednn_in_training()  # keras_seg's run as `keras-seg train` would run it
    assert training is None or results["runs"][0]["onednn"] is training
    summary = results["summary"]
    assert summary["keras_seg"]["runs"] == summary["smp"]["runs"] == 1
    assert set(summary["keras_seg_minus_smp"]) == {"miou", "pixel_accuracy", "total_s", "train_s"}
    assert "| keras_seg | 0 |" in md.read_text() and "Check: benchmark isbi" in md.read_text()
    assert not (data / "train.txt").exists()  # the lists go to the work folder


def _summary(ks_miou, smp_miou, ks_s, smp_s):
    def lib(miou, wall):
        mean = sum(miou) / len(miou) if miou else None
        return {"runs": len(miou), "miou": {"mean": mean}, "total_s": {"mean": wall}}

    return {"keras_seg": lib(ks_miou, ks_s), "smp": lib(smp_miou, smp_s)}


@pytest.mark.parametrize(
    "numbers, message",
    [
        (([30.0, 29.0], [29.5, 30.5], 100.0, 120.0), None),
        (([28.0, 28.4], [29.5, 30.5], 100.0, 120.0), "1.80 points below SMP's 30.00"),
        (([30.0], [30.0], 121.0, 120.0), "wall time 121.0 s is above SMP's 120.0 s"),
        (([30.0], [], 1.0, 2.0), "no completed run of smp"),
    ],
)
def test_check_holds_keras_seg_to_smp(numbers, message):
    failure = learning.check(_summary(*numbers), tolerance=1.0, time_tolerance=0.0)
    if message is None:
        assert failure is None
    else:
        assert failure.startswith("benchmark isbi: ") and message in failure


def test_summary_means_and_differences():
    runs = [
        {"library": lib, "seed": s, "final": {"miou": m, "pixel_accuracy": 90.0}}
        | {"total_s": t, "train_s": t - 10}
        for lib, s, m, t in [("keras_seg", 0, 30, 100), ("smp", 0, 31, 110)]
        + [("keras_seg", 1, 32, 102), ("smp", 1, 33, 112)]
    ]
    runs.append({"library": "smp", "seed": 2, "total_s": 5.0, "error": "exit 1: boom"})
    summary = learning.summarise(runs)
    assert summary["keras_seg"]["miou"]["mean"] == pytest.approx(31.0)
    assert summary["smp"]["runs"] == 2
    assert summary["keras_seg_minus_smp"]["miou"] == pytest.approx(-1.0)
    assert summary["keras_seg_minus_smp"]["total_s"] == pytest.approx(-10.0)
