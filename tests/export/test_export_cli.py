"""`keras-seg export` on a training run directory and on a bare .keras file, and the benchmark."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from keras_seg import cli
from keras_seg.benchmarks import export as bench_export
from keras_seg.data import synthetic


def _run(capsys, *argv: str) -> str:
    assert cli.main(["export", *argv]) == 0
    return capsys.readouterr().out


def test_int8_tflite_from_a_run_directory_is_described_and_checked(trained, tmp_path, capsys):
    out = tmp_path / "unet_int8.tflite"
    text = _run(
        capsys,
        *("--model", str(trained.run_dir), "--format", "tflite", "--quantize", "int8"),
        *("--output", str(out), "--num-images", "12"),
    )
    # The input size comes from the run's config (data.crop_size = 64).
    assert "input  images: uint8 [1x64x64x3] scale=1 zero_point=0" in text
    assert "output class_map: int32 [1x64x64]" in text
    assert "output probabilities: float32 [1x64x64x5]" in text
    assert "operators: " in text and "CONV_2D" in text
    assert "CUSTOM" not in text and "DELEGATE" not in text
    agreement = float(re.search(r"agree on ([\d.]+)% of pixels", text).group(1))
    assert agreement >= 95.0, text
    assert re.search(r"mIoU Keras [\d.]+ / export [\d.]+", text)
    # Class names come from the config's data set, not generic ones.
    assert "classes: background, disc, rectangle, triangle, ring" in text
    assert (tmp_path / "labels.txt").read_text().splitlines() == list(synthetic.CLASS_NAMES)


def test_tfserving_layout_from_a_run_directory(trained, tmp_path, capsys):
    run_dir = shutil.copytree(trained.run_dir, tmp_path / "run")
    text = _run(
        capsys,
        *("--model", str(run_dir), "--format", "tfserving", "--name", "shapes", "--version", "7"),
        *("--checkpoint", "final", "--num-images", "4"),  # no final.keras: falls back to best
    )
    version_dir = run_dir / "export" / "serving" / "shapes" / "7"
    assert (version_dir / "saved_model.pb").exists()
    assert f"--model_name=shapes --model_base_path={version_dir.parent.resolve()}" in text
    assert "signature serving_bytes: image_bytes -> class_map, probabilities, height, width" in text
    assert float(re.search(r"agree on ([\d.]+)% of pixels", text).group(1)) >= 99.9
    labels = (version_dir / "assets.extra" / "labels.txt").read_text().splitlines()
    assert labels == list(synthetic.CLASS_NAMES)


def test_bare_keras_file_gets_generic_class_names(trained, tmp_path, capsys):
    model_file = shutil.copy(trained.run_dir / "best.keras", tmp_path / "model.keras")
    text = _run(
        capsys, "--model", str(model_file), "--format", "tflite", "--input-size", "32", "48"
    )
    assert "input  images: uint8 [1x32x48x3]" in text
    assert "(not the model's data)" in text and "mIoU" not in text
    labels = (tmp_path / "model_export" / "labels.txt").read_text().splitlines()
    assert labels == [f"class_{i}" for i in range(5)]
    assert (tmp_path / "model_export" / "unet_fp32.tflite").exists()


def test_missing_model_and_bad_format(tmp_path, capsys):
    assert cli.main(["export", "--model", str(tmp_path), "--format", "saved_model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-seg export: error: ") and len(err.splitlines()) == 1
    assert "without best.keras or final.keras" in err
    assert cli.main(["export", "--model", str(tmp_path / "x.keras"), "--format", "tflite"]) == 2
    assert "no model at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["export", "--model", "m.keras", "--format", "coreml"])


def test_export_benchmark_smoke(tmp_path, capsys):
    output = tmp_path / "export.json"
    argv = ["--models", "unet", "--small", "--size", "32", "--quantize", "none", "int8"]
    argv += ["--threads", "1", "2", "--repeats", "1", "--warmup", "0", "--batch", "1"]
    argv += ["--calibration", "2", "--num-classes", "3", "--output", str(output)]
    assert bench_export.main(argv) == 0
    report = json.loads(output.read_text())
    assert report["benchmark"] == "export" and report["machine"]["cpu_count"]
    (result,) = report["results"]
    assert result["model"] == "unet" and result["keras"]["images_per_s"] > 0
    assert result["saved_model"]["size_mib"] > 0
    assert [e["quantize"] for e in result["tflite"]] == ["none", "int8"]
    for entry in result["tflite"]:
        assert "error" not in entry, entry
        assert set(entry["latency"]) == {"1", "2"} and entry["size_mib"] > 0
    assert "unet: keras" in capsys.readouterr().out


def test_help_states_the_agreement_gates_that_verify_enforces(capsys):
    from keras_seg.export.verify import THRESHOLDS

    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "%%" not in text
    for kind, share in THRESHOLDS.items():
        assert f"{share * 100:g}%" in text, (kind, share)
